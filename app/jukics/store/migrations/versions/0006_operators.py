"""Operators: one identity per person, scrypt password hash, encrypted TOTP secret, lockout and expiry.

Revision ID: 0006_operators
Revises: 0005_tokurei
Create Date: 2026-12-07

Frozen copy of the table of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_operators"
down_revision: str | None = "0005_tokurei"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.String(27)


def upgrade() -> None:
    op.create_table(
        "operators",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("department", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(512), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("password_changed_at", TS, nullable=False),
        sa.Column("totp_secret_ct", sa.LargeBinary(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("account_expires_on", sa.String(10), nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
        sa.Column("last_login_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_operators"),
    )


def downgrade() -> None:
    op.drop_table("operators")
