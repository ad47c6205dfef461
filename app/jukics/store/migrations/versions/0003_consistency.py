"""整合性確認 (F4) reports.

Revision ID: 0003_consistency
Revises: 0002_links
Create Date: 2026-12-06

Frozen copy of the table of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_consistency"
down_revision: str | None = "0002_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.String(27)


def upgrade() -> None:
    op.create_table(
        "consistency_reports",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("checked", sa.BigInteger(), nullable=False),
        sa.Column("missing_at_peer", sa.BigInteger(), nullable=False),
        sa.Column("unknown_to_cs", sa.BigInteger(), nullable=False),
        sa.Column("mismatched", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("detail_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consistency_reports"),
        sa.CheckConstraint("status IN ('running', 'ok', 'differs', 'failed')", name="ck_consistency_reports_status"),
    )


def downgrade() -> None:
    op.drop_table("consistency_reports")
