"""The index for the 生年月日 + 住所 search of the terminal's "2 of 4" search rule.

Revision ID: 0009_terminal_app
Revises: 0008_exports
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009_terminal_app"
down_revision: str | None = "0008_exports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_residents_current_birth_address", "residents_current", ["birth_date_hash", "address_hash"])


def downgrade() -> None:
    op.drop_index("ix_residents_current_birth_address", table_name="residents_current")
