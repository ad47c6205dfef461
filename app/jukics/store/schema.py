"""The database schema (SQLAlchemy Core). Alembic migrations under ``migrations/`` create it.

Design: the write path decides intake throughput (limits-notes §1: on SQLite each random-key B-tree
dirties ~1 leaf page per inserted row, and that page traffic bounds ingest). Per accepted update:

============================  ==========================================  ===========================
table                         key                                          random B-tree writes
============================  ==========================================  ===========================
``resident_versions``         ``id``, assigned in order (rowid)            0 (appends at the right edge)
``ix_..._recorded_at``        time, monotonic                              0 (appends)
``residents_current``         ``code_hash`` (WITHOUT ROWID)                1
``ix_current_my_number``      HMAC of 個人番号 (only when it changes)        1 on create, else 0
``ix_current_name_birth``     HMACs of 清音化かな氏名, 生年月日 (on change)      1 on create, else 0
``applied_requests``          ``request_id`` (依頼管理番号)                   0 if monotonic, else 1
``outbox``                    ``(link, seq)``, 2 small rows                0 (two append points)
``audit_log``                 ``seq``                                      0 (appends)
============================  ==========================================  ===========================

So a new resident costs 3 random B-tree inserts (4 with random request ids) and a change of a
resident costs 1, against the 2-index table limits-notes measured at ~9.5k rows/s at 1M rows.

Immutability: ``resident_versions`` holds every version of every record, written once and never
updated (a trigger refuses UPDATE). ``residents_current`` is only the index of the newest version
(hashes, sequence, status, pointer); a change inserts a new version and moves the pointer, so the old
version becomes history without being copied or touched. History is reached by following
``prev_id`` (no per-resident index on the versions table, which would be one more random B-tree).
``prev_id`` is deliberately not a foreign key: the retention purge removes old versions and leaves
the pointer of the next version dangling, which ends the walk.

Outbox: one row per link (``prefecture`` for F2, ``fuhyo`` for 附票) and accepted change, written in
the intake transaction, holding the link's sequence number and a pointer to the immutable version
the message is made of. The message (exactly the link's items) is projected from that version when
it is read, so the outbox holds no copy of personal data and costs no extra encryption.

Personal data: the whole record of a version is one AES-256-GCM value (``record_ct``, record id =
``code_hash`` hex, field ``record``, version = 更新順番号); one encryption per record keeps the
crypto cost at ~3 µs per record and the nonce count low. In clear only: status, kind, 異動事由,
異動年月日, sequence numbers and timestamps. Search is by keyed hashes only (16-byte HMAC, see
:mod:`jukics.store.crypto`); no index holds plaintext.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

NAMING: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# INTEGER PRIMARY KEY on SQLite is the rowid (no separate index); BIGINT elsewhere.
RowId = BigInteger().with_variant(Integer(), "sqlite")
Hash16 = LargeBinary(16)
Hash32 = LargeBinary(32)
Timestamp = String(27)  # YYYY-MM-DDTHH:MM:SS.ffffffZ (jukics.store.clock.iso_utc)

LINKS: Final = ("prefecture", "fuhyo")

resident_versions = Table(
    "resident_versions",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=False),
    Column("code_hash", Hash16, nullable=False),
    Column("version", Integer, nullable=False),
    Column("prev_id", RowId, nullable=True),
    Column("kind", String(8), nullable=False),
    Column("status", String(8), nullable=False),
    Column("update_seq", BigInteger, nullable=False),
    Column("change_reason", String(32), nullable=True),
    Column("changed_on", String(10), nullable=True),
    Column("recorded_at", Timestamp, nullable=False),
    Column("record_ct", LargeBinary, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("kind IN ('create', 'change', 'delete')", name="kind"),
    CheckConstraint("status IN ('current', 'deleted')", name="status"),
    Index(None, "recorded_at"),
)

residents_current = Table(
    "residents_current",
    metadata,
    Column("code_hash", Hash16, nullable=False),
    Column("version_id", RowId, nullable=False),
    Column("version", Integer, nullable=False),
    Column("update_seq", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("my_number_hash", Hash16, nullable=True),
    Column("name_seion_hash", Hash16, nullable=True),
    Column("birth_date_hash", Hash16, nullable=True),
    Column("address_hash", Hash16, nullable=True),
    Column("updated_at", Timestamp, nullable=False),
    Column("deleted_at", Timestamp, nullable=True),
    PrimaryKeyConstraint("code_hash"),
    CheckConstraint("status IN ('current', 'deleted')", name="status"),
    Index(None, "my_number_hash"),
    # 氏名 + 生年月日 in one index (migration 0010); 氏名 + 住所 uses its name prefix.
    Index("ix_residents_current_name_birth", "name_seion_hash", "birth_date_hash"),
    # 生年月日 + 住所 without 氏名: searched only in the "2 of 4" mode of the terminal search rule
    Index("ix_residents_current_birth_address", "birth_date_hash", "address_hash"),
    # Partial: only 消除者 rows enter it, so living residents cost nothing here.
    Index(
        None,
        "deleted_at",
        sqlite_where=text("deleted_at IS NOT NULL"),
        postgresql_where=text("deleted_at IS NOT NULL"),
    ),
    sqlite_with_rowid=False,
)

applied_requests = Table(
    "applied_requests",
    metadata,
    Column("request_id", String(64), nullable=False),
    Column("code_hash", Hash16, nullable=False),
    Column("version", Integer, nullable=False),
    Column("update_seq", BigInteger, nullable=False),
    Column("digest", Hash16, nullable=False),
    Column("applied_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("request_id"),
    sqlite_with_rowid=False,
)

outbox = Table(
    "outbox",
    metadata,
    Column("link", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("version_id", RowId, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("link", "seq"),
    sqlite_with_rowid=False,
)

outbox_head = Table(
    "outbox_head",
    metadata,
    Column("link", String(16), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("acked_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("link"),
)

# Messages a peer refused for good (NACK), or that the legal-basis table does not allow: moved out of
# the outbox in the same transaction as the acknowledgement, so nothing is lost or sent twice. Like the
# outbox, a dead letter points at the immutable version (no copy of personal data); `requeue` puts it
# back at the end of its link's outbox under a new sequence number.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("link", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("version_id", RowId, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("dead_at", Timestamp, nullable=False),
    Column("code", String(48), nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("id"),
)

# What the delivery worker last saw per link (for `jukics links status`, metrics and alerts).
link_status = Table(
    "link_status",
    metadata,
    Column("link", String(16), nullable=False),
    Column("last_attempt_at", Timestamp, nullable=True),
    Column("last_success_at", Timestamp, nullable=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("last_error", String(200), nullable=True),
    Column("delivered_total", BigInteger, nullable=False),
    Column("duplicates_total", BigInteger, nullable=False),
    Column("nacked_total", BigInteger, nullable=False),
    Column("auth_failures_total", BigInteger, nullable=False),
    PrimaryKeyConstraint("link"),
)

# 整合性確認 (F4): one row per check against a peer. The peer's difference lists name residents
# (住民票コード), so they are stored encrypted (``detail_ct``: AES-256-GCM of the JSON lists under the
# data key, record id = ``consistency-<id>``); the counts are in clear for `jukics consistency report`.
consistency_reports = Table(
    "consistency_reports",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("link", String(16), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=True),
    Column("status", String(8), nullable=False),
    Column("checked", BigInteger, nullable=False),
    Column("missing_at_peer", BigInteger, nullable=False),
    Column("unknown_to_cs", BigInteger, nullable=False),
    Column("mismatched", BigInteger, nullable=False),
    Column("error", String(200), nullable=True),
    Column("detail_ct", LargeBinary, nullable=True),
    PrimaryKeyConstraint("id"),
    CheckConstraint("status IN ('running', 'ok', 'differs', 'failed')", name="status"),
)

# F9 送付先情報 and F10 card lifecycle events (既存住基 → CS → 個人番号カード管理システム), one row per
# item, keyed by the 既存住基's request id (a re-sent item is a duplicate, never a second message).
# The payload is kept exactly as received (canonical JSON, AES-256-GCM under the data key, record id
# ``card-<id>``) and sent unedited; ``digest`` (SHA-256 of that JSON) proves it. The outbox of the
# ``sofusaki`` and ``card`` links points at these rows. A 送付先 row's payload is erased on
# ``delete_on``, one business day after the card system acknowledged it; a card event's right at the
# acknowledgement. The row itself stays as a tombstone (request id, digest, times), so a replay
# after the deletion is still a duplicate and nothing is resurrected.
card_messages = Table(
    "card_messages",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("kind", String(16), nullable=True),
    Column("digest", LargeBinary(32), nullable=False),
    Column("received_at", Timestamp, nullable=False),
    Column("sent_at", Timestamp, nullable=True),
    Column("delete_on", String(10), nullable=True),
    Column("deleted_at", Timestamp, nullable=True),
    Column("payload_ct", LargeBinary, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("request_id"),
    CheckConstraint("type IN ('sofusaki', 'card_event')", name="type"),
    Index(None, "delete_on", sqlite_where=text("payload_ct IS NOT NULL AND delete_on IS NOT NULL"),
          postgresql_where=text("payload_ct IS NOT NULL AND delete_on IS NOT NULL")),
)

# What the CS hands to 既存住基 (it fetches them over its intake connection and acknowledges them):
# F10 突合結果 from the card system now, F6 転出証明書情報 later. Encrypted like every payload
# (record id ``notice-<id>``); deleted once 既存住基 acknowledged them.
kizon_notices = Table(
    "kizon_notices",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("kind", String(24), nullable=False),
    Column("ref", String(64), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("payload_ct", LargeBinary, nullable=False),
    PrimaryKeyConstraint("id"),
)


# F6 特例転入: 転出証明書情報 received from a 転出地 CS (through the prefecture), one row per certificate.
# The payload is encrypted (record id ``tenshutsu-<id>``); ``code_hash`` is the keyed hash of the
# 住民票コード (as in residents_current), so the 特例転入 of that resident finds it in the intake
# transaction, which then writes the 転入通知情報 (``notice_ct``) and its outbox row (link ``tokurei``).
# An unclaimed certificate's payload is erased on ``expires_on``.
tenshutsu_certs = Table(
    "tenshutsu_certs",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("cert_id", String(64), nullable=False),
    Column("sender", String(128), nullable=False),
    Column("from_municipality", String(6), nullable=False),
    Column("code_hash", Hash16, nullable=False),
    Column("received_at", Timestamp, nullable=False),
    Column("expires_on", String(10), nullable=False),
    Column("claimed_at", Timestamp, nullable=True),
    Column("deleted_at", Timestamp, nullable=True),
    Column("payload_ct", LargeBinary, nullable=True),
    Column("notice_ct", LargeBinary, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("cert_id"),
    Index(None, "code_hash", sqlite_where=text("claimed_at IS NULL AND deleted_at IS NULL"),
          postgresql_where=text("claimed_at IS NULL AND deleted_at IS NULL")),
)

# Messages peers delivered to this CS (the peer-facing listener), deduplicated on (sender, link, seq)
# like a peer does: a re-sent message is answered "duplicate" with its first outcome.
inbound_seen = Table(
    "inbound_seen",
    metadata,
    Column("sender", String(128), nullable=False),
    Column("link", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),
    Column("code", String(48), nullable=True),
    Column("seen_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("sender", "link", "seq"),
    sqlite_with_rowid=False,
)



# Operators (統合端末 staff, the 本人確認情報管理責任者, vendor accounts): one identity per person. The
# password is an Argon2id PHC string with its parameters (jukics.auth.credentials), the TOTP secret is
# encrypted (record id ``operator-<user_id>``); ``totp_last_step`` makes each code usable once.
# ``roles`` is a JSON list of role names from the duties table. Nothing here is resident data.
operators = Table(
    "operators",
    metadata,
    Column("user_id", String(32), nullable=False),
    Column("department", String(64), nullable=False),
    Column("roles", String(512), nullable=False),
    Column("password_hash", String(256), nullable=False),
    Column("password_changed_at", Timestamp, nullable=False),
    Column("totp_secret_ct", LargeBinary, nullable=False),
    Column("totp_last_step", BigInteger, nullable=True),
    Column("failed_logins", Integer, nullable=False),
    Column("locked_until", Timestamp, nullable=True),
    Column("account_expires_on", String(10), nullable=False),
    Column("disabled_at", Timestamp, nullable=True),
    Column("last_login_at", Timestamp, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("user_id"),
)

# Terminal API sessions: only the SHA-256 of the opaque token is kept, bound to the terminal
# certificate identity that logged in; idle and absolute expiry are checked on every request.
terminal_sessions = Table(
    "terminal_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("terminal", String(128), nullable=False),
    Column("roles", String(512), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("token_hash"),
)

# Dual control (二者確認) of 職権修正 / 職権消除 from a terminal: a request stays pending until another
# operator holding correction_approve decides. ``changes_ct`` is the before/after, encrypted like
# other personal data (record id ``correction-<id>``); the resident is named by the code's keyed hash.
correction_requests = Table(
    "correction_requests",
    metadata,
    Column("id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # correction | deletion
    Column("code_hash", LargeBinary(32), nullable=False),
    Column("changes_ct", LargeBinary, nullable=False),
    Column("reason", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # pending | applying | applied | rejected | failed
    Column("requested_by", String(32), nullable=False),
    Column("requested_at", Timestamp, nullable=False),
    Column("decided_by", String(32), nullable=True),
    Column("decided_at", Timestamp, nullable=True),
    Column("result_code", String(64), nullable=True),
    PrimaryKeyConstraint("id"),
)

# Exports to media (jukics.exports): what was written, its ciphertext hash, who asked, who witnessed.
exports = Table(
    "exports",
    metadata,
    Column("export_id", RowId, nullable=False, autoincrement=True),
    Column("dataset", String(32), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("media_id", String(64), nullable=False),
    Column("recipient", String(64), nullable=False),
    Column("requester", String(32), nullable=False),
    Column("witness", String(32), nullable=False),
    Column("path", String(1024), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("export_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", RowId, nullable=False, autoincrement=False),
    Column("ts", Timestamp, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("terminal", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("query", Text, nullable=False),
    Column("target_ids", Text, nullable=False),
    Column("result_count", Integer, nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("code", String(48), nullable=True),
    Column("prev_hash", Hash32, nullable=False),
    Column("hash", Hash32, nullable=False),
    PrimaryKeyConstraint("seq"),
    CheckConstraint("outcome IN ('ok', 'refused', 'error')", name="outcome"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, nullable=False, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Hash32, nullable=False),
    Column("base_seq", BigInteger, nullable=False),
    Column("base_hash", Hash32, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("id = 1", name="single_row"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("hash", Hash32, nullable=False),
    Column("ts", Timestamp, nullable=False),
    Column("digest", Hash32, nullable=False),
    Column("signature", LargeBinary, nullable=True),
    Column("key_id", String(64), nullable=True),
    PrimaryKeyConstraint("seq"),
)

purge_log = Table(
    "purge_log",
    metadata,
    Column("id", RowId, nullable=False, autoincrement=True),
    Column("ran_at", Timestamp, nullable=False),
    Column("cutoff", Timestamp, nullable=False),
    Column("years", Integer, nullable=False),
    Column("dry_run", Boolean(create_constraint=False), nullable=False),
    Column("history_versions", BigInteger, nullable=False),
    Column("deleted_residents", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
)

GENESIS_HASH: Final = bytes(32)
