"""Initial schema: resident versions + current index, idempotency, outbox, audit chain, purge log.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23

Frozen copy of :mod:`jukics.store.schema` at this revision (a test compares the migrated database
with the metadata, so the two cannot drift apart silently).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.String(27)
GENESIS = bytes(32)

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER resident_versions_no_update BEFORE UPDATE ON resident_versions
       BEGIN SELECT RAISE(ABORT, 'E_IMMUTABLE: resident_versions rows are never updated'); END""",
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'E_IMMUTABLE: audit_log rows are never updated'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'E_IMMUTABLE: audit_log rows are never deleted'); END""",
)

_PG_TRIGGERS = (
    """CREATE FUNCTION jukics_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN RAISE EXCEPTION 'E_IMMUTABLE: % on % is refused', TG_OP, TG_TABLE_NAME; END $$""",
    """CREATE TRIGGER resident_versions_no_update BEFORE UPDATE ON resident_versions
       FOR EACH ROW EXECUTE FUNCTION jukics_refuse_change()""",
    """CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
       FOR EACH ROW EXECUTE FUNCTION jukics_refuse_change()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION jukics_refuse_change()""",
)


def upgrade() -> None:
    op.create_table(
        "resident_versions",
        sa.Column("id", RowId, nullable=False, autoincrement=False),
        sa.Column("code_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("prev_id", RowId, nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("update_seq", sa.BigInteger(), nullable=False),
        sa.Column("change_reason", sa.String(32), nullable=True),
        sa.Column("changed_on", sa.String(10), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("record_ct", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_resident_versions"),
        sa.CheckConstraint("kind IN ('create', 'change', 'delete')", name="ck_resident_versions_kind"),
        sa.CheckConstraint("status IN ('current', 'deleted')", name="ck_resident_versions_status"),
    )
    op.create_index("ix_resident_versions_recorded_at", "resident_versions", ["recorded_at"])

    op.create_table(
        "residents_current",
        sa.Column("code_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("version_id", RowId, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("update_seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("my_number_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("name_seion_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("birth_date_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("address_hash", sa.LargeBinary(16), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name="pk_residents_current"),
        sa.CheckConstraint("status IN ('current', 'deleted')", name="ck_residents_current_status"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_residents_current_my_number_hash", "residents_current", ["my_number_hash"])
    op.create_index("ix_residents_current_name_seion_hash", "residents_current", ["name_seion_hash"])
    op.create_index(
        "ix_residents_current_deleted_at",
        "residents_current",
        ["deleted_at"],
        sqlite_where=sa.text("deleted_at IS NOT NULL"),
        postgresql_where=sa.text("deleted_at IS NOT NULL"),
    )

    op.create_table(
        "applied_requests",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("update_seq", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(16), nullable=False),
        sa.Column("applied_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_applied_requests"),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "outbox",
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("version_id", RowId, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("link", "seq", name="pk_outbox"),
        sqlite_with_rowid=False,
    )
    outbox_head = op.create_table(
        "outbox_head",
        sa.Column("link", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("link", name="pk_outbox_head"),
    )

    op.create_table(
        "audit_log",
        sa.Column("seq", RowId, nullable=False, autoincrement=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("terminal", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("target_ids", sa.Text(), nullable=False),
        sa.Column("result_count", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("code", sa.String(48), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        sa.CheckConstraint("outcome IN ('ok', 'refused', 'error')", name="ck_audit_log_outcome"),
    )
    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("base_seq", sa.BigInteger(), nullable=False),
        sa.Column("base_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_checkpoints"),
    )
    op.create_table(
        "purge_log",
        sa.Column("id", RowId, nullable=False, autoincrement=True),
        sa.Column("ran_at", TS, nullable=False),
        sa.Column("cutoff", TS, nullable=False),
        sa.Column("years", sa.Integer(), nullable=False),
        sa.Column("dry_run", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("history_versions", sa.BigInteger(), nullable=False),
        sa.Column("deleted_residents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_purge_log"),
    )

    epoch = "1970-01-01T00:00:00.000000Z"
    op.bulk_insert(
        audit_head,
        [{"id": 1, "seq": 0, "hash": GENESIS, "base_seq": 0, "base_hash": GENESIS, "updated_at": epoch}],
    )
    op.bulk_insert(outbox_head, [{"link": link, "last_seq": 0, "acked_seq": 0} for link in ("prefecture", "fuhyo")])

    dialect = op.get_bind().dialect.name
    for statement in _SQLITE_TRIGGERS if dialect == "sqlite" else _PG_TRIGGERS if dialect == "postgresql" else ():
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in (
        "purge_log",
        "audit_checkpoints",
        "audit_head",
        "audit_log",
        "outbox_head",
        "outbox",
        "applied_requests",
        "residents_current",
        "resident_versions",
    ):
        op.drop_table(table)
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS jukics_refuse_change()")
