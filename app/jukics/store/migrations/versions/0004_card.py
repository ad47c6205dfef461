"""F9 送付先情報 and F10 card events (card_messages), what 既存住基 fetches (kizon_notices), and the
outbox heads and link status of the ``sofusaki`` and ``card`` links.

Revision ID: 0004_card
Revises: 0003_consistency
Create Date: 2026-12-06

Frozen copy of the tables of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_card"
down_revision: str | None = "0003_consistency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.String(27)
LINKS = ("sofusaki", "card")


def upgrade() -> None:
    op.create_table(
        "card_messages",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("delete_on", sa.String(10), nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_card_messages"),
        sa.UniqueConstraint("request_id", name="uq_card_messages_request_id"),
        sa.CheckConstraint("type IN ('sofusaki', 'card_event')", name="ck_card_messages_type"),
    )
    op.create_index("ix_card_messages_delete_on", "card_messages", ["delete_on"],
                    sqlite_where=sa.text("payload_ct IS NOT NULL AND delete_on IS NOT NULL"),
                    postgresql_where=sa.text("payload_ct IS NOT NULL AND delete_on IS NOT NULL"))
    op.create_table(
        "kizon_notices",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("ref", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_kizon_notices"),
    )
    heads = sa.table("outbox_head", sa.column("link"), sa.column("last_seq"), sa.column("acked_seq"))
    op.bulk_insert(heads, [{"link": link, "last_seq": 0, "acked_seq": 0} for link in LINKS])
    status = sa.table("link_status", sa.column("link"), sa.column("consecutive_failures"),
                      sa.column("delivered_total"), sa.column("duplicates_total"), sa.column("nacked_total"),
                      sa.column("auth_failures_total"))
    zero = {"consecutive_failures": 0, "delivered_total": 0, "duplicates_total": 0, "nacked_total": 0,
            "auth_failures_total": 0}
    op.bulk_insert(status, [{"link": link, **zero} for link in LINKS])


def downgrade() -> None:
    op.execute("DELETE FROM link_status WHERE link IN ('sofusaki', 'card')")
    op.execute("DELETE FROM outbox WHERE link IN ('sofusaki', 'card')")
    op.execute("DELETE FROM dead_letters WHERE link IN ('sofusaki', 'card')")
    op.execute("DELETE FROM outbox_head WHERE link IN ('sofusaki', 'card')")
    op.drop_table("kizon_notices")
    op.drop_index("ix_card_messages_delete_on", table_name="card_messages")
    op.drop_table("card_messages")
