"""Links: dead-letter store and per-link delivery status.

Revision ID: 0002_links
Revises: 0001_initial
Create Date: 2026-12-06

Frozen copy of the two tables of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_links"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.String(27)


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("version_id", RowId, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("dead_at", TS, nullable=False),
        sa.Column("code", sa.String(48), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    status = op.create_table(
        "link_status",
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("last_success_at", TS, nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("delivered_total", sa.BigInteger(), nullable=False),
        sa.Column("duplicates_total", sa.BigInteger(), nullable=False),
        sa.Column("nacked_total", sa.BigInteger(), nullable=False),
        sa.Column("auth_failures_total", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("link", name="pk_link_status"),
    )
    zero = {"consecutive_failures": 0, "delivered_total": 0, "duplicates_total": 0, "nacked_total": 0,
            "auth_failures_total": 0}
    op.bulk_insert(status, [{"link": link, **zero} for link in ("prefecture", "fuhyo")])


def downgrade() -> None:
    op.drop_table("link_status")
    op.drop_table("dead_letters")
