"""Terminal API sessions (token hash bound to the terminal certificate) and dual-control correction requests.

Revision ID: 0007_terminal
Revises: 0006_operators
Create Date: 2026-12-07

Frozen copy of the table of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_terminal"
down_revision: str | None = "0006_operators"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.String(27)


def upgrade() -> None:
    op.create_table(
        "terminal_sessions",
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("terminal", sa.String(128), nullable=False),
        sa.Column("roles", sa.String(512), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "correction_requests",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("changes_ct", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(32), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("decided_by", sa.String(32), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("result_code", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("correction_requests")
    op.drop_table("terminal_sessions")
