"""F6 特例転入: 転出証明書情報 received (tenshutsu_certs), inbound dedupe (inbound_seen), the outbox
head and link status of the ``tokurei`` link (転入通知情報 back to the 転出地).

Revision ID: 0005_tokurei
Revises: 0004_card
Create Date: 2026-12-06

Frozen copy of the tables of :mod:`jukics.store.schema` at this revision.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_tokurei"
down_revision: str | None = "0004_card"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.String(27)
WHERE = "claimed_at IS NULL AND deleted_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "tenshutsu_certs",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("cert_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("from_municipality", sa.String(6), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("expires_on", sa.String(10), nullable=False),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("payload_ct", sa.LargeBinary(), nullable=True),
        sa.Column("notice_ct", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tenshutsu_certs"),
        sa.UniqueConstraint("cert_id", name="uq_tenshutsu_certs_cert_id"),
    )
    op.create_index("ix_tenshutsu_certs_code_hash", "tenshutsu_certs", ["code_hash"],
                    sqlite_where=sa.text(WHERE), postgresql_where=sa.text(WHERE))
    op.create_table(
        "inbound_seen",
        sa.Column("sender", sa.String(128), nullable=False),
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("code", sa.String(48), nullable=True),
        sa.Column("seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("sender", "link", "seq", name="pk_inbound_seen"),
        sqlite_with_rowid=False,
    )
    heads = sa.table("outbox_head", sa.column("link"), sa.column("last_seq"), sa.column("acked_seq"))
    op.bulk_insert(heads, [{"link": "tokurei", "last_seq": 0, "acked_seq": 0}])
    status = sa.table("link_status", sa.column("link"), sa.column("consecutive_failures"),
                      sa.column("delivered_total"), sa.column("duplicates_total"), sa.column("nacked_total"),
                      sa.column("auth_failures_total"))
    op.bulk_insert(status, [{"link": "tokurei", "consecutive_failures": 0, "delivered_total": 0,
                             "duplicates_total": 0, "nacked_total": 0, "auth_failures_total": 0}])


def downgrade() -> None:
    for table in ("link_status", "outbox", "dead_letters", "outbox_head"):
        op.execute(f"DELETE FROM {table} WHERE link = 'tokurei'")  # noqa: S608 - constant names
    op.drop_table("inbound_seen")
    op.drop_index("ix_tenshutsu_certs_code_hash", table_name="tenshutsu_certs")
    op.drop_table("tenshutsu_certs")
