"""Exports to media: data set, row count, ciphertext sha256, media id, recipient, requester, witness, times.

Revision ID: 0008_exports
Revises: 0006_operators (the lead re-chains at merge)
Create Date: 2026-12-07

Frozen copy of the table of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_exports"
down_revision: str | None = "0007_terminal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.String(27)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("export_id", RowId, nullable=False, autoincrement=True),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_id", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(32), nullable=False),
        sa.Column("witness", sa.String(32), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("export_id", name="pk_exports"),
    )


def downgrade() -> None:
    op.drop_table("exports")
