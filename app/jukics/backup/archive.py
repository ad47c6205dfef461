"""Encrypted, verified backups of the store (SQLite or PostgreSQL), and restores that refuse anything doubtful.

An archive is an age file (age-encryption.org/v1) to two X25519 recipients: the appliance's own
identity (its secret is kept only sealed by the key store, i.e. the TPM) and the offline escrow
public key from ``[backup] escrow_recipient``. Inside, an uncompressed tar of:

- ``db.sqlite``: an online snapshot (SQLite backup API) with the 送付先情報 payloads erased
  (「送付先情報ファイルのバックアップは取得しない」, zeroed with ``secure_delete``), integrity-checked;
- ``manifest.json``: municipality_code, created_at, schema revision, per-table row counts and
  record digests, audit head hash, sha256 of ``db.sqlite``;
- ``manifest.mac``: HMAC-SHA256 of the manifest under a key derived from the key store's audit key,
  so a manifest rewritten by someone who only holds the (public) recipients is refused;
- ``keystore-escrow.age``: the key store's sealed secret (every data, search and audit key derives
  from it) age-encrypted to the escrow recipient ONLY, its sha256 in the manifest. The appliance
  identity cannot open it; the escrow identity recovers the keys on a host whose TPM is new
  (``restore_backup(..., escrow=True)``, which re-seals the secret into that host's key store).

A restore decrypts into a scratch directory next to the live database, checks everything, re-runs
the retention purge and the 送付先 deletion on the copy (no resurrection of purged records), and only
then replaces the live file. Any failure leaves the live database untouched.

PostgreSQL (``postgresql+psycopg://``): the same archive with ``db.pgdump`` (pg_dump custom format from
one exported snapshot) and one ``<table>.copy`` member per table of :data:`NEVER_BACKED_UP` instead of
``db.sqlite``; what differs (snapshot, digests, scratch copy, swap) is in :mod:`jukics.backup.postgres`.
The manifest names the database kind: an archive is only ever restored into the kind it came from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import sqlite3
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import pyrage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jukics.keystore import KeyStore

AGE_MAGIC: Final = b"age-encryption.org/v1\n"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
SEALED_MAGIC: Final = b"JUKICS-SEALED-AGE-IDENTITY v1\n"
LABEL_IDENTITY: Final = b"jukics backup-identity v1"
LABEL_MANIFEST: Final = b"jukics backup-manifest v1"
ESCROW_MEMBER: Final = "keystore-escrow.age"
ESCROW_MAGIC: Final = b"JUKICS-KEYSTORE-ESCROW v1\n"
#: v3: the manifest names ``database_kind`` (v1/v2 archives are SQLite ones)
FORMAT: Final = "jukics-backup v3"
KIND_SQLITE: Final = "sqlite"
KIND_POSTGRES: Final = "postgresql"
DB_MEMBERS: Final = {"db.sqlite": KIND_SQLITE, "db.pgdump": KIND_POSTGRES}
NAME_RE: Final = re.compile(r"^jukics-(\d{6})-(\d{8}T\d{6}Z)\.age$")
#: What never goes into a backup, for both database kinds: (table, column, rows): the column is erased
#: in those rows (「送付先情報ファイルのバックアップは取得しない」: the 送付先 payloads; the rows stay
#: as tombstones so a replay is still a duplicate). SQLite erases it in the snapshot copy; PostgreSQL
#: dumps these tables without data (--exclude-table-data) and carries their rows erased beside the dump.
NEVER_BACKED_UP: Final = (("card_messages", "payload_ct", "type = 'sofusaki'"),)
SOFUSAKI_SQL: Final = tuple(f"UPDATE {t} SET {c} = NULL WHERE {w}" for t, c, w in NEVER_BACKED_UP)  # noqa: S608

ERROR_CODES: Final[dict[str, str]] = {
    "E_BACKUP_CONFIG": "the [backup] configuration is missing or invalid",
    "E_BACKUP_NOT_FOUND": "no such backup in the backup directory",
    "E_BACKUP_CORRUPT": "the backup is truncated or corrupted (not a complete age archive of a jukics backup)",
    "E_BACKUP_WRONG_KEY": "the backup cannot be decrypted with the given identity",
    "E_BACKUP_MANIFEST": "the manifest is missing, tampered with, or does not match the database",
    "E_BACKUP_MUNICIPALITY": "the backup belongs to another municipality",
    "E_BACKUP_INTEGRITY": "the database in the backup fails the SQLite integrity check",
    "E_BACKUP_UNSUPPORTED": "backups of this database kind are not supported",
    "E_BACKUP_KIND": "the backup is of another database kind (SQLite / PostgreSQL) than the configured database",
    "E_BACKUP_TOOL": "a PostgreSQL tool (pg_dump, pg_restore) or the server refused or is missing",
    "E_BACKUP_IN_USE": "the live PostgreSQL database has other sessions: stop the service before a restore",
    "E_BACKUP_IDENTITY": "the sealed backup identity is missing or cannot be unsealed",
    "E_BACKUP_ESCROW": "the data-key escrow is missing, not for the given escrow key, or not the expected key store",
}


class BackupError(Exception):
    """A backup or restore refused. ``code`` is stable (E_BACKUP_*); the message names no personal data."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True)
class BackupSettings:
    directory: Path
    generations: int
    escrow_recipient: str
    identity_file: Path
    metrics_dir: Path | None
    #: pg_dump / pg_restore (PostgreSQL databases only); None: $JUKICS_PG_BIN or /usr/lib/postgresql/15/bin
    pg_bin_dir: Path | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> BackupSettings:
        """Read and validate ``[backup]`` of the parsed TOML. Unknown keys fail closed (litestream#790)."""
        sec = raw.get("backup")
        if not isinstance(sec, Mapping):
            raise BackupError("E_BACKUP_CONFIG", "no [backup] section in the configuration")
        known = {"dir", "generations", "escrow_recipient", "identity_file", "metrics_dir", "pg_bin_dir"}
        unknown = sorted(set(sec) - known)
        if unknown:
            raise BackupError("E_BACKUP_CONFIG", f"backup: unknown keys {unknown}")
        directory = sec.get("dir")
        if not isinstance(directory, str) or not directory.startswith("/"):
            raise BackupError("E_BACKUP_CONFIG", "backup.dir must be an absolute path")
        generations = sec.get("generations", 7)
        if not isinstance(generations, int) or isinstance(generations, bool) or not 1 <= generations <= 365:
            raise BackupError("E_BACKUP_CONFIG", "backup.generations must be an integer from 1 to 365")
        escrow = sec.get("escrow_recipient")
        try:
            pyrage.x25519.Recipient.from_str(str(escrow))
        except Exception:
            raise BackupError("E_BACKUP_CONFIG", "backup.escrow_recipient must be an age X25519 public key "
                              "(age1...)") from None
        identity = sec.get("identity_file", str(Path(directory) / "identity.sealed"))
        metrics = sec.get("metrics_dir")
        if not isinstance(identity, str) or not identity.startswith("/"):
            raise BackupError("E_BACKUP_CONFIG", "backup.identity_file must be an absolute path")
        if metrics is not None and (not isinstance(metrics, str) or not metrics.startswith("/")):
            raise BackupError("E_BACKUP_CONFIG", "backup.metrics_dir must be an absolute path")
        pg_bin = sec.get("pg_bin_dir")
        if pg_bin is not None:
            if not isinstance(pg_bin, str) or not pg_bin.startswith("/"):
                raise BackupError("E_BACKUP_CONFIG", "backup.pg_bin_dir must be an absolute path")
            missing = [t for t in ("pg_dump", "pg_restore") if not os.access(Path(pg_bin) / t, os.X_OK)]
            if missing:
                raise BackupError("E_BACKUP_CONFIG", f"backup.pg_bin_dir: no executable {', '.join(missing)} in "
                                  f"{pg_bin} (install postgresql-client-15)")
        return cls(Path(directory), generations, str(escrow), Path(identity), Path(metrics) if metrics else None,
                   Path(pg_bin) if pg_bin else None)


def _subkey(base: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(base)


# --- the appliance identity, sealed by the key store ---------------------------------------------

def provision_identity(path: Path, keystore: KeyStore) -> bool:
    """Create the sealed age identity if missing (never replaced). True when one was created."""
    if path.exists():
        unseal_identity(path, keystore)  # an unusable existing file is an error, not a reason to replace
        return False
    identity = pyrage.x25519.Identity.generate()
    nonce = os.urandom(12)
    ct = AESGCM(_subkey(keystore.data_key(), LABEL_IDENTITY)).encrypt(nonce, str(identity).encode(), SEALED_MAGIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, SEALED_MAGIC + nonce + ct)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def unseal_identity(path: Path, keystore: KeyStore) -> pyrage.x25519.Identity:
    try:
        blob = path.read_bytes()
    except OSError:
        raise BackupError("E_BACKUP_IDENTITY", f"{path}: no sealed identity (run `jukics backup provision`)") from None
    if not blob.startswith(SEALED_MAGIC):
        raise BackupError("E_BACKUP_IDENTITY", f"{path}: not a sealed jukics backup identity")
    body = blob[len(SEALED_MAGIC):]
    try:
        secret = AESGCM(_subkey(keystore.data_key(), LABEL_IDENTITY)).decrypt(body[:12], body[12:], SEALED_MAGIC)
        return pyrage.x25519.Identity.from_str(secret.decode())
    except Exception:
        raise BackupError("E_BACKUP_IDENTITY", f"{path}: cannot be unsealed by this key store") from None


def load_identity_file(path: Path) -> list[pyrage.x25519.Identity]:
    """An age identity file (as `age-keygen` writes it): AGE-SECRET-KEY-1... lines."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BackupError("E_BACKUP_WRONG_KEY", f"{path}: cannot read ({exc.__class__.__name__})") from None
    ids = []
    for line in lines:
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                ids.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise BackupError("E_BACKUP_WRONG_KEY", f"{path}: not an age identity file") from None
    if not ids:
        raise BackupError("E_BACKUP_WRONG_KEY", f"{path}: no AGE-SECRET-KEY line")
    return ids


# --- manifest ------------------------------------------------------------------------------------

def _sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise BackupError("E_BACKUP_KIND", "not a SQLite database URL (PostgreSQL has its own path)")
    return Path(url.removeprefix("sqlite:///"))


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def table_digests(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, str]]:
    """Row count and a SHA-256 over every row (in primary-key order, values as repr) per table.

    Independent of the page layout (two files with the same rows agree), but it pulls every row
    into Python: about 40 s per scan at 1M residents. Backups use :func:`page_digests` instead; this
    one remains for format v1 archives and for comparing a live database with a restored one.
    """
    counts, digests = {}, {}
    for name in _tables(conn):
        h = hashlib.sha256()
        n = 0
        info = list(conn.execute(f'PRAGMA table_info("{name}")'))
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] or [r[1] for r in info]
        order = ", ".join(f'"{c}"' for c in pk)
        cur = conn.execute(f'SELECT * FROM "{name}" ORDER BY {order}')  # noqa: S608 - names from sqlite_master
        while rows := cur.fetchmany(10000):
            h.update(repr(rows).encode())  # one update per batch of rows (fewer calls)
            n += len(rows)
        counts[name], digests[name] = n, h.hexdigest()
    return counts, digests


DIGEST_PAGES: Final = "sqlite-pages v1"
DIGEST_ROWS: Final = "rows-repr v1"


def page_digests(path: Path) -> tuple[dict[str, int], dict[str, str], str, str]:
    """(row counts, per-table digests, sha256 of the whole file, digest method) in ONE pass over the file.

    A table's digest is SHA-256 over its b-tree pages and those of its indexes (their overflow pages
    too), each as 4-byte page number + page bytes, in page order; ``dbstat`` (C, in SQLite) says which
    b-tree owns each page. Equal files give equal digests, and a changed record changes the digest of
    its table (and the file hash). Without ``dbstat`` (a SQLite built without it) the row digests of
    :func:`table_digests` are used and the method says so.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = _tables(conn)
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # noqa: S608
        owner_of = {name: tbl for name, tbl in conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")}
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        try:
            owners = conn.execute("SELECT name, pageno FROM dbstat ORDER BY pageno").fetchall()
        except sqlite3.OperationalError:
            owners = None
        if owners is None:
            rows_counts, rows_digests = table_digests(conn)
    finally:
        conn.close()
    if owners is None:
        return rows_counts, rows_digests, _file_sha256(path), DIGEST_ROWS
    whole = hashlib.sha256()
    hashers = {t: hashlib.sha256() for t in tables}
    by_page: dict[int, Any] = {}
    for name, pageno in owners:
        table = owner_of.get(name, name)
        if table in hashers:  # sqlite_schema and internal b-trees: covered by the file hash only
            by_page[pageno] = hashers[table]
    chunk_pages = max(1, (1 << 22) // page_size)
    pageno = 1
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(chunk_pages * page_size):
            whole.update(chunk)
            view = memoryview(chunk)
            for off in range(0, len(chunk), page_size):
                h = by_page.get(pageno)
                if h is not None:
                    h.update(pageno.to_bytes(4, "big"))
                    h.update(view[off:off + page_size])
                pageno += 1
    return counts, {t: h.hexdigest() for t, h in hashers.items()}, whole.hexdigest(), DIGEST_PAGES


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _escrow_blob(keystore: KeyStore, escrow_recipient: str) -> bytes:
    secret = getattr(keystore, "escrow_secret", None)
    if secret is None:
        raise BackupError("E_BACKUP_ESCROW", "this key store cannot escrow its secret")
    return pyrage.encrypt(ESCROW_MAGIC + secret(), [pyrage.x25519.Recipient.from_str(escrow_recipient)])


def open_escrow(blob: bytes, identities: list[Any]) -> KeyStore:
    """The escrowed secret as an in-memory key store; E_BACKUP_ESCROW unless an identity opens it."""
    from jukics.keystore.base import SECRET_BYTES, SecretKeyStore

    try:
        plain = pyrage.decrypt(blob, identities)
    except Exception:
        raise BackupError("E_BACKUP_ESCROW", "the data-key escrow does not open with the given escrow "
                          "identity") from None
    if not plain.startswith(ESCROW_MAGIC) or len(plain) != len(ESCROW_MAGIC) + SECRET_BYTES:
        raise BackupError("E_BACKUP_ESCROW", "the data-key escrow is not a jukics key-store secret")
    return SecretKeyStore(plain[len(ESCROW_MAGIC):])


def fingerprint(keystore: KeyStore) -> str | None:
    fp = getattr(keystore, "fingerprint", None)
    return fp() if fp is not None else None


def manifest_mac(manifest_bytes: bytes, keystore: KeyStore) -> str:
    return hmac.new(_subkey(keystore.audit_hmac_key(), LABEL_MANIFEST), manifest_bytes, hashlib.sha256).hexdigest()


# --- create / list / retention -------------------------------------------------------------------

@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    manifest: dict[str, Any]
    removed: tuple[str, ...]


def list_backups(settings: BackupSettings) -> list[Path]:
    """Backups in the directory, oldest first (names carry the UTC time)."""
    if not settings.directory.is_dir():
        return []
    return sorted(p for p in settings.directory.iterdir() if NAME_RE.match(p.name))


@dataclass(frozen=True)
class Snapshot:
    """What a database kind hands to the kind-independent archive code."""

    kind: str
    #: (member name, file): the database member first, then any other large member
    members: list[tuple[str, Path]]
    revision: str
    audit_head: tuple[int, bytes | None] | None
    counts: dict[str, int]
    digests: dict[str, str]
    method: str
    payload_sha256: str
    #: extra manifest keys of this kind
    extra: dict[str, Any]


def database_kind(url: str | None) -> str:
    """``sqlite`` or ``postgresql`` for a configured database URL (None: SQLite, as before v3)."""
    from jukics.backup.postgres import is_postgres

    if url is None or url.startswith("sqlite:///"):
        return KIND_SQLITE
    if is_postgres(url):
        return KIND_POSTGRES
    raise BackupError("E_BACKUP_UNSUPPORTED", "only SQLite and PostgreSQL databases are backed up")


def _snapshot_sqlite(database_url: str, work: Path) -> Snapshot:
    src_path = _sqlite_path(database_url)
    snap = work / "db.sqlite"
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dst = sqlite3.connect(snap)
    try:
        src.backup(dst)  # online and consistent even while the service writes
    finally:
        src.close()
    try:
        dst.execute("PRAGMA journal_mode = DELETE")
        dst.execute("PRAGMA secure_delete = ON")  # the erased 送付先 bytes are zeroed, not left in free pages
        for erase in SOFUSAKI_SQL:
            dst.execute(erase)
        dst.commit()
        revision = dst.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        head = dst.execute("SELECT seq, hash FROM audit_head").fetchone() if "audit_head" in _tables(dst) else None
    finally:
        dst.close()
    # quick_check (every page and b-tree, not every index entry against its row: the full
    # integrity_check is the drill's and the restore's) beside the page hashing: both release the GIL.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        checked = pool.submit(_integrity_result, snap, "quick_check")
        counts, digests, payload_sha, method = page_digests(snap)
        check = checked.result()
    if check != ["ok"]:
        raise BackupError("E_BACKUP_INTEGRITY", f"quick_check of the snapshot: {len(check)} problem(s)")
    return Snapshot(KIND_SQLITE, [("db.sqlite", snap)], revision,
                    (head[0], bytes(head[1]) if head[1] is not None else None) if head else None,
                    counts, digests, method, payload_sha, {})


def _snapshot_postgres(database_url: str, work: Path, settings: BackupSettings) -> Snapshot:
    from jukics.backup import postgres as pg

    snap = pg.snapshot(database_url, work, pg.PgTools(settings.pg_bin_dir), NEVER_BACKED_UP)
    erased = {pg.erased_member(t): p for t, p in snap.erased_members.items()}
    return Snapshot(KIND_POSTGRES, [("db.pgdump", snap.dump), *erased.items()], snap.revision, snap.audit_head,
                    snap.counts, snap.digests, pg.DIGEST_PG, _file_sha256(snap.dump),
                    {"erased_members": {name: _file_sha256(p) for name, p in erased.items()}})


def create_backup(database_url: str, municipality_code: str, settings: BackupSettings, keystore: KeyStore,
                  *, now: dt.datetime | None = None) -> BackupResult:
    kind = database_kind(database_url)
    now = now or dt.datetime.now(dt.UTC)
    own = unseal_identity(settings.identity_file, keystore).to_public()
    recipients = [own, pyrage.x25519.Recipient.from_str(settings.escrow_recipient)]
    settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    final = settings.directory / f"jukics-{municipality_code}-{stamp}.age"
    with tempfile.TemporaryDirectory(dir=settings.directory, prefix=".work-") as work:
        snap = (_snapshot_sqlite(database_url, Path(work)) if kind == KIND_SQLITE
                else _snapshot_postgres(database_url, Path(work), settings))
        head = snap.audit_head
        escrow_blob = _escrow_blob(keystore, settings.escrow_recipient)
        manifest = {
            "format": FORMAT, "database_kind": snap.kind, "municipality_code": municipality_code,
            "created_at": now.isoformat(), "schema_revision": snap.revision,
            "row_counts": snap.counts, "record_digests": snap.digests, "digest_method": snap.method,
            "audit_head": {"seq": head[0], "hash": head[1].hex() if head[1] is not None else None}
            if head else None,
            "payload_sha256": snap.payload_sha256, "sofusaki_included": False,
            "keystore_escrow": {"member": ESCROW_MEMBER, "sha256": hashlib.sha256(escrow_blob).hexdigest(),
                                "recipient": settings.escrow_recipient},
            "keystore_fingerprint": fingerprint(keystore),
            **snap.extra,
        }
        mbytes = json.dumps(manifest, sort_keys=True, ensure_ascii=False).encode()
        tmp_out = Path(work) / "out.age"
        members: list[tuple[str, bytes | Path]] = [
            ("manifest.json", mbytes), ("manifest.mac", manifest_mac(mbytes, keystore).encode()),
            (ESCROW_MEMBER, escrow_blob), *snap.members]
        # The tar is made on the fly as age reads it: no plaintext tar file, one pass less over the data.
        with _TarSource(members, int(now.timestamp())) as src, tmp_out.open("wb") as out:
            pyrage.encrypt_io(src, out, recipients)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_out, 0o600)
        os.replace(tmp_out, final)
    removed = apply_retention(settings)
    return BackupResult(final, final.stat().st_size, manifest, removed)


def apply_retention(settings: BackupSettings) -> tuple[str, ...]:
    """Keep the newest ``generations`` backups; delete the rest."""
    backups = list_backups(settings)
    old = backups[: max(0, len(backups) - settings.generations)]
    for p in old:
        p.unlink()
    return tuple(p.name for p in old)


# --- the tar inside the age file, made and taken apart as a stream ----------------------------------

_BLOCK: Final = 512
_SMALL_MAX: Final = 1 << 20


class _TarSource(io.RawIOBase):
    """A readable ustar stream of ``members`` ((name, bytes) or (name, Path), the Path read as it goes)."""

    def __init__(self, members: list[tuple[str, bytes | Path]], mtime: int) -> None:
        super().__init__()
        self._parts: list[bytes | Path] = []
        for name, data in members:
            size = data.stat().st_size if isinstance(data, Path) else len(data)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, mtime, 0o600
            self._parts += [info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"), data, b"\0" * (-size % _BLOCK)]
        self._parts.append(b"\0" * (2 * _BLOCK))
        self._file: Any = None
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while True:
            if self._pending:
                n = min(len(b), len(self._pending))
                b[:n] = self._pending[:n]
                self._pending = self._pending[n:]
                return n
            if self._file is not None:
                n = self._file.readinto(b)
                if n:
                    return n
                self._file.close()
                self._file = None
            if not self._parts:
                return 0
            part = self._parts.pop(0)
            if isinstance(part, Path):
                self._file = part.open("rb", buffering=0)
            else:
                self._pending = memoryview(part)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


class _TarDamaged(Exception):
    pass


class _TarSink(io.RawIOBase):
    """A writable that takes a tar stream apart: each member of ``large`` goes to its file, other
    members (at most 1 MiB each) into ``small``. Anything else (links, devices, a second copy of a
    member, a bad header checksum) raises _TarDamaged."""

    def __init__(self, large: Mapping[str, Path]) -> None:
        super().__init__()
        #: members streamed to a file (the database member, and PostgreSQL's erased-table rows)
        self.large = dict(large)
        self.small: dict[str, bytes] = {}
        self.seen: set[str] = set()
        self._buf = bytearray()
        self._need = _BLOCK       # bytes wanted for the current state
        self._state = "header"    # header | pax | small | db | pad | end
        self._name = ""
        self._pad = 0
        self._pax: dict[str, str] = {}
        self._out: Any = None
        self._remaining = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = memoryview(b).cast("B")
        total = len(data)
        while data:
            if self._state == "end":
                break
            if self._state == "db":
                n = min(self._remaining, len(data))
                self._out.write(data[:n])
                self._remaining -= n
                data = data[n:]
                if self._remaining == 0:
                    self._after_data()
                continue
            n = min(self._need - len(self._buf), len(data))
            self._buf += data[:n]
            data = data[n:]
            if len(self._buf) == self._need:
                chunk, self._buf = bytes(self._buf), bytearray()
                self._step(chunk)
        return total

    def _step(self, chunk: bytes) -> None:
        if self._state == "header":
            if chunk == b"\0" * _BLOCK:
                self._state = "end"
                return
            try:
                info = tarfile.TarInfo.frombuf(chunk, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                raise _TarDamaged from None
            size = int(self._pax.pop("size", info.size))
            name = self._pax.pop("path", info.name)
            self._pax.clear()
            self._pad = -size % _BLOCK
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                if size > _SMALL_MAX:
                    raise _TarDamaged
                self._state, self._need = "pax", size + self._pad
                self._pax_size = size
            elif info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                raise _TarDamaged
            elif name in self.large:
                if name in self.seen:
                    raise _TarDamaged
                self.seen.add(name)
                self._out = self.large[name].open("wb")
                self._state, self._remaining = "db", size
                if size == 0:
                    self._after_data()
            else:
                if name in self.small or size > _SMALL_MAX:
                    raise _TarDamaged
                self._name, self._state, self._need = name, "small", size + self._pad
                if self._need == 0:
                    self.small[name] = b""
                    self._state, self._need = "header", _BLOCK
        elif self._state == "pax":
            self._pax = _parse_pax(chunk[: self._pax_size])
            self._state, self._need = "header", _BLOCK
        elif self._state == "small":
            self.small[self._name] = chunk[: len(chunk) - self._pad]
            self._state, self._need = "header", _BLOCK
        elif self._state == "pad":
            self._state, self._need = "header", _BLOCK

    def _after_data(self) -> None:
        self._out.close()
        if self._pad:
            self._state, self._need = "pad", self._pad
        else:
            self._state, self._need = "header", _BLOCK

    @property
    def db_seen(self) -> bool:
        return any(name in self.seen for name in DB_MEMBERS)

    def finish(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()
        if self._state != "end":
            raise _TarDamaged  # the stream stopped inside the tar


def _parse_pax(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(data):
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            key, _, value = data[space + 1: pos + length - 1].partition(b"=")
            out[key.decode()] = value.decode("utf-8", "surrogateescape")
            pos += length
    except (ValueError, UnicodeDecodeError):
        raise _TarDamaged from None
    return out


# --- open / verify / restore ---------------------------------------------------------------------

@dataclass(frozen=True)
class Opened:
    #: the decrypted database member (SQLite: the copy itself; PostgreSQL: the dump, loaded into ``database_url``)
    db_path: Path
    manifest: dict[str, Any]
    #: the key store whose keys the backup was made under (the escrowed one for an escrow open)
    keystore: KeyStore
    #: (ok, summary) of the audit chain of the copy, when open_backup was asked to verify it
    audit: tuple[bool, str] | None = None
    #: the checked copy as a database URL (SQLite: the file; PostgreSQL: the scratch database)
    database_url: str = ""


_PGDUMP_MAGIC: Final = re.compile(rb"PGDMP\x01[\x0c-\x20]\x00[\x04\x08][\x04\x08][\x01\x03]")


def looks_encrypted(path: Path, probes: tuple[bytes, ...] = ()) -> bool:
    """The file starts with the age header and holds no SQLite or pg_dump header and none of ``probes``."""
    data = path.read_bytes()
    return (data.startswith(AGE_MAGIC) and SQLITE_MAGIC not in data and _PGDUMP_MAGIC.search(data) is None
            and not any(p in data for p in probes))


def open_backup(path: Path, identities: list[Any], workdir: Path, *, municipality_code: str,
                keystore: KeyStore | None, escrow: bool = False, audit: bool = False,
                database_url: str | None = None, scratch_url: str | None = None,
                pg_bin_dir: Path | None = None) -> Opened:
    """Decrypt into ``workdir`` and check everything; raise BackupError on the first problem.

    ``escrow=True``: ``identities`` are the escrow identity; the keys come from the backup's escrow
    member (``keystore`` is not used), so a host with a new TPM can check and restore it.
    ``audit=True``: the audit chain of the copy is verified too (``Opened.audit``).
    ``database_url``: the configured (live) database; its kind must be the archive's (E_BACKUP_KIND).
    For PostgreSQL the copy is loaded into ``scratch_url``, an empty database the caller made and drops.

    The checks of a decrypted SQLite file run side by side (SQLite's integrity check and the page hashing
    release the GIL, the audit walk is Python): their results are judged in a fixed order once all ended.
    """
    want_kind = database_kind(database_url)
    try:
        head = path.open("rb").read(len(AGE_MAGIC))
    except OSError:
        raise BackupError("E_BACKUP_NOT_FOUND", f"{path.name}: cannot be read") from None
    if head != AGE_MAGIC:
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: not an age archive")
    from jukics.backup.postgres import erased_member

    large = {name: workdir / name for name in DB_MEMBERS}
    large.update({erased_member(t): workdir / erased_member(t) for t, _, _ in NEVER_BACKED_UP})
    sink = _TarSink(large)
    try:
        with path.open("rb") as src:
            pyrage.decrypt_io(src, sink, identities)  # the tar is taken apart as it is decrypted
        sink.finish()
    except BackupError:
        raise
    except Exception as exc:  # pyrage raises DecryptError or a bare OSError (truncated stream)
        if isinstance(exc, _TarDamaged) or isinstance(exc.__cause__ or exc.__context__, _TarDamaged):
            raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: the archive inside is damaged") from None
        text = str(exc).lower()
        if "no matching keys" in text or "no identity matched" in text:
            hint = "" if escrow else " (made by another appliance? restore it with --escrow-identity)"
            raise BackupError("E_BACKUP_WRONG_KEY", f"{path.name}: none of the given identities can decrypt it"
                              + hint) from None
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: decryption failed (truncated or corrupted)") from None
    small = sink.small
    db_members = [m for m in DB_MEMBERS if m in sink.seen]
    if set(small) - {ESCROW_MEMBER} != {"manifest.json", "manifest.mac"} or len(db_members) != 1:
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: unexpected archive contents")
    kind = DB_MEMBERS[db_members[0]]
    if kind != want_kind:
        raise BackupError("E_BACKUP_KIND", f"{path.name}: a backup of a {kind} database, the configured database "
                          f"is {want_kind}: it can only be restored into a {kind} database")
    erased = sorted(sink.seen - set(DB_MEMBERS))
    if (kind == KIND_SQLITE and erased) or (kind == KIND_POSTGRES and erased != sorted(
            erased_member(t) for t in {t for t, _, _ in NEVER_BACKED_UP})):
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: unexpected archive contents")
    mbytes = small["manifest.json"]
    try:
        mac = small["manifest.mac"].decode()
    except UnicodeDecodeError:
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: the archive inside is damaged") from None
    escrow_blob = small.get(ESCROW_MEMBER)
    if escrow:
        if escrow_blob is None:
            raise BackupError("E_BACKUP_ESCROW", f"{path.name}: carries no data-key escrow (a format v1 backup)")
        keystore = open_escrow(escrow_blob, identities)
    assert keystore is not None
    if not hmac.compare_digest(mac, manifest_mac(mbytes, keystore)):
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the manifest MAC does not verify (tampered, or "
                          f"made by another key store{_other_store_hint(mbytes, keystore, escrow)})")
    manifest = json.loads(mbytes)
    if manifest.get("database_kind", KIND_SQLITE) != kind:
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the manifest names another database kind than the "
                          "archive holds")
    want = manifest.get("keystore_escrow")
    if want is not None and (escrow_blob is None
                             or hashlib.sha256(escrow_blob).hexdigest() != want.get("sha256")):
        raise BackupError("E_BACKUP_ESCROW", f"{path.name}: the data-key escrow does not match the manifest")
    if manifest.get("municipality_code") != municipality_code:
        raise BackupError("E_BACKUP_MUNICIPALITY", f"{path.name}: made for municipality "
                          f"{manifest.get('municipality_code')}, this CS serves {municipality_code}")
    if kind == KIND_POSTGRES:
        if scratch_url is None:
            raise BackupError("E_BACKUP_CONFIG", "a PostgreSQL backup is checked in a scratch database")
        return _check_postgres(path, workdir, manifest, keystore, scratch_url, audit, pg_bin_dir)
    return _check_sqlite(path, workdir / "db.sqlite", manifest, keystore, audit)


def _check_sqlite(path: Path, db_path: Path, manifest: dict[str, Any], keystore: KeyStore,
                  audit: bool) -> Opened:
    method = manifest.get("digest_method", DIGEST_ROWS)  # format v1 archives have row digests
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        integrity = pool.submit(_integrity_result, db_path)
        audited = pool.submit(_audit_result, f"sqlite:///{db_path}") if audit else None
        if method == DIGEST_PAGES:
            counts, digests, payload_sha, method_now = page_digests(db_path)
        else:
            payload_sha, method_now = _file_sha256(db_path), method
        integrity_result = integrity.result()
        audit_result = audited.result() if audited is not None else None
    if method_now != method:
        raise BackupError("E_BACKUP_UNSUPPORTED", f"{path.name}: page digests need SQLite's dbstat table")
    if payload_sha != manifest.get("payload_sha256"):
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the database does not match the manifest hash")
    if integrity_result != ["ok"]:
        raise BackupError("E_BACKUP_INTEGRITY", f"integrity_check: {len(integrity_result)} problem(s)")
    conn = sqlite3.connect(db_path)
    try:
        if method != DIGEST_PAGES:
            counts, digests = table_digests(conn)
        sofusaki = sum(conn.execute(f"SELECT count(*) FROM {t} WHERE ({w}) AND {c} IS NOT NULL").fetchone()[0]  # noqa: S608
                       for t, c, w in NEVER_BACKED_UP)
    finally:
        conn.close()
    _judge(path, manifest, counts, digests, sofusaki, audit_result)
    return Opened(db_path, manifest, keystore, audit_result, f"sqlite:///{db_path}")


def _judge(path: Path, manifest: dict[str, Any], counts: dict[str, int], digests: dict[str, str], sofusaki: int,
           audit_result: tuple[bool, str] | None) -> None:
    if counts != manifest.get("row_counts") or digests != manifest.get("record_digests"):
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: row counts or record digests differ from the manifest")
    if sofusaki:
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: holds 送付先情報 payloads (never backed up)")
    if audit_result is not None and not audit_result[0]:
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the audit chain in the backup is broken "
                          f"({audit_result[1]})")


def _check_postgres(path: Path, workdir: Path, manifest: dict[str, Any], keystore: KeyStore, scratch_url: str,
                    audit: bool, pg_bin_dir: Path | None) -> Opened:
    from jukics.backup import postgres as pg

    dump = workdir / "db.pgdump"
    if manifest.get("digest_method") != pg.DIGEST_PG:
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: unknown digest method for a PostgreSQL backup")
    if _file_sha256(dump) != manifest.get("payload_sha256"):
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the dump does not match the manifest hash")
    erased = {t: workdir / pg.erased_member(t) for t in sorted({t for t, _, _ in NEVER_BACKED_UP})}
    want = manifest.get("erased_members") or {}
    if {pg.erased_member(t): _file_sha256(p) for t, p in erased.items()} != want:
        raise BackupError("E_BACKUP_MANIFEST", f"{path.name}: the erased-table rows do not match the manifest")
    try:
        pg.load(dump, erased, scratch_url, workdir, pg.PgTools(pg_bin_dir))
    except BackupError as exc:
        if exc.code == "E_BACKUP_TOOL" and "pg_restore failed" in exc.message:
            raise BackupError("E_BACKUP_INTEGRITY", f"{path.name}: the dump does not restore "
                              f"({exc.message})") from None
        raise
    counts, digests, sofusaki = pg.check(scratch_url, NEVER_BACKED_UP)
    audit_result = _audit_result(scratch_url) if audit else None
    _judge(path, manifest, counts, digests, sofusaki, audit_result)
    return Opened(dump, manifest, keystore, audit_result, scratch_url)


def _integrity_result(db_path: Path, pragma: str = "integrity_check") -> list[str]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    try:
        return [r[0] for r in conn.execute(f"PRAGMA {pragma}")]
    except sqlite3.DatabaseError as exc:
        return [f"{exc.__class__.__name__}"]
    finally:
        conn.close()


def _audit_result(url: str) -> tuple[bool, str]:
    try:
        return verify_audit_url(url)
    except Exception as exc:  # a damaged copy: reported as a broken chain, never raised from the thread
        return False, f"cannot be read ({exc.__class__.__name__})"


def _other_store_hint(mbytes: bytes, keystore: KeyStore, escrow: bool) -> str:
    """For the message only (the MAC decides): name a backup made under another key store as such."""
    try:
        theirs = json.loads(mbytes).get("keystore_fingerprint")
    except (ValueError, AttributeError):
        return ""
    ours = fingerprint(keystore)
    if escrow or not theirs or theirs == ours:
        return ""
    return f": key store {theirs}, this host's {ours}; on a new TPM restore with --escrow-identity"


def verify_audit_copy(db_path: Path) -> tuple[bool, str]:
    return verify_audit_url(f"sqlite:///{db_path}")


def verify_audit_url(url: str) -> tuple[bool, str]:
    from sqlalchemy import create_engine

    from jukics.audit.chain import verify
    from jukics.store.db import make_engine

    engine = make_engine(url) if database_kind(url) == KIND_POSTGRES else create_engine(url)
    try:
        report = verify(engine)
    finally:
        engine.dispose()
    return report.ok, report.summary


def restore_backup(path: Path, identities: list[Any], config: Any, keystore: KeyStore, *,
                   actor: str = "jukics-restore", clock: Any = None, escrow: bool = False,
                   expect_fingerprint: str | None = None) -> dict[str, Any]:
    """Restore ``path`` over the live database of ``config`` (the service must be stopped).

    ``escrow=True`` (a host whose TPM is new, ``identities`` = the escrow identity): the backup is
    checked under its escrowed keys, and only when everything passed is that secret re-sealed into
    ``keystore`` (``adopt_secret``: the host's old blob is kept aside, never deleted) and the database
    put in place. ``expect_fingerprint`` (from the escrow record) refuses an archive of another key store.
    """
    if database_kind(config.database_url) == KIND_POSTGRES:
        return _restore_postgres(path, identities, config, keystore, actor=actor, clock=clock, escrow=escrow,
                                 expect_fingerprint=expect_fingerprint)
    live = _sqlite_path(config.database_url)
    live.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=live.parent, prefix=".restore-") as work:
        opened = open_backup(path, identities, Path(work), municipality_code=config.municipality_code,
                             keystore=keystore, escrow=escrow, audit=True, database_url=config.database_url)
        got = _expect(path, opened, expect_fingerprint)
        purged = _reapply_deletions(path, opened, config, actor, clock, escrow)
        conn = sqlite3.connect(opened.db_path)
        try:  # fold the WAL into the file: the copy is moved alone
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
        adopted = _adopt(keystore, opened, got) if escrow else {}
        for suffix in ("-wal", "-shm"):
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        os.replace(opened.db_path, live)
    return {"restored": path.name, "created_at": opened.manifest["created_at"],
            "row_counts": opened.manifest["row_counts"], "purged_after_restore": purged, **adopted}


def _restore_postgres(path: Path, identities: list[Any], config: Any, keystore: KeyStore, *, actor: str,
                      clock: Any, escrow: bool, expect_fingerprint: str | None) -> dict[str, Any]:
    """pg_restore into a new database, check it, re-apply deletions there, then swap it in by rename (one
    transaction). Until that commit the live database is not written; any failure drops the new one."""
    from jukics.backup import postgres as pg

    settings = BackupSettings.from_config(config.raw)
    settings.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pg.ensure_idle(config.database_url)  # before anything else: a busy database cannot be swapped
    with tempfile.TemporaryDirectory(dir=settings.directory, prefix=".restore-") as work, \
            pg.scratch_database(config.database_url, "jukics_restore_") as scratch_url:
        opened = open_backup(path, identities, Path(work), municipality_code=config.municipality_code,
                             keystore=keystore, escrow=escrow, audit=True, database_url=config.database_url,
                             scratch_url=scratch_url, pg_bin_dir=settings.pg_bin_dir)
        got = _expect(path, opened, expect_fingerprint)
        purged = _reapply_deletions(path, opened, config, actor, clock, escrow)
        pg.ensure_idle(config.database_url)
        adopted = _adopt(keystore, opened, got) if escrow else {}
        aside = pg.swap(config.database_url, scratch_url, dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    return {"restored": path.name, "created_at": opened.manifest["created_at"],
            "row_counts": opened.manifest["row_counts"], "purged_after_restore": purged,
            "database_kind": KIND_POSTGRES, "replaced_database": aside, **adopted}


def _expect(path: Path, opened: Opened, expect_fingerprint: str | None) -> str | None:
    got = fingerprint(opened.keystore)
    if expect_fingerprint and got != expect_fingerprint.strip().lower():
        raise BackupError("E_BACKUP_ESCROW", f"{path.name}: made under key store {got}, expected "
                          f"{expect_fingerprint}")
    return got


def _reapply_deletions(path: Path, opened: Opened, config: Any, actor: str, clock: Any,
                       escrow: bool) -> dict[str, Any]:
    """No resurrection: purges and 送付先 deletions due since the backup are re-applied to the checked copy
    before it becomes live (every deletion kind the CS has is due by date, so re-running is exact)."""
    from jukics.audit.chain import AuditEvent
    from jukics.service import Service
    from jukics.store.retention import purge

    scratch = replace(config, database_url=opened.database_url)
    svc = Service(scratch, clock=clock) if clock else Service(scratch)
    svc.__dict__["keystore"] = opened.keystore  # the backup's keys (the escrowed ones on a new host)
    try:
        purged = purge(svc.engine, svc.clock, audit=svc.audit, actor=actor).as_dict()
        purged["sofusaki_deleted"] = svc.card.purge_sent(actor=actor)
        purged["tenshutsu_unclaimed_deleted"] = svc.tokurei.purge_unclaimed()
        svc.audit.append(AuditEvent(actor=actor, terminal="cs", action="backup.restore", purpose="operation",
                                    query={"backup": path.name, "created_at": opened.manifest["created_at"],
                                           "escrow": escrow},
                                    result_count=1))
    finally:
        svc.engine.dispose()
    return purged


def _adopt(keystore: KeyStore, opened: Opened, got: str | None) -> dict[str, Any]:
    adopt = getattr(keystore, "adopt_secret", None)
    if adopt is None:
        raise BackupError("E_BACKUP_ESCROW", "this host's key store cannot adopt an escrowed secret")
    # last step before the swap: the copy passed everything, so the keys it needs become this host's
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    outcome, aside = adopt(opened.keystore.escrow_secret(), stamp)  # type: ignore[attr-defined]
    return {"keystore": outcome, "replaced_blob_kept_as": str(aside) if aside else None,
            "keystore_fingerprint": got}


def drill(path: Path, identities: list[Any], municipality_code: str, keystore: KeyStore,
          scratch_parent: Path, *, escrow: bool = False, database_url: str | None = None,
          pg_bin_dir: Path | None = None) -> dict[str, Any]:
    """Restore into a scratch directory (PostgreSQL: a scratch database ``jukics_drill_<random>``), check it
    all, delete the copy (even on failure). Raises BackupError on failure."""
    if not looks_encrypted(path):
        raise BackupError("E_BACKUP_CORRUPT", f"{path.name}: is not age ciphertext (or holds a database header)")
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".drill-"))
        scratch_url = None
        if database_kind(database_url) == KIND_POSTGRES:
            from jukics.backup import postgres as pg

            assert database_url is not None
            scratch_url = stack.enter_context(pg.scratch_database(database_url, "jukics_drill_"))
        opened = open_backup(path, identities, Path(work), municipality_code=municipality_code, keystore=keystore,
                             escrow=escrow, audit=True, database_url=database_url, scratch_url=scratch_url,
                             pg_bin_dir=pg_bin_dir)
        assert opened.audit is not None
        summary = opened.audit[1]
    return {"backup": path.name, "database_kind": opened.manifest.get("database_kind", KIND_SQLITE),
            "row_counts": opened.manifest["row_counts"], "audit": summary,
            "keystore_fingerprint": opened.manifest.get("keystore_fingerprint"),
            "escrow": opened.manifest.get("keystore_escrow") is not None}


# --- node_exporter textfiles ---------------------------------------------------------------------

def write_textfile(metrics_dir: Path | None, name: str, gauges: Mapping[str, tuple[str, float]]) -> None:
    """Write ``name``.prom atomically, mode 0644 whatever the unit's UMask (node_exporter must read it).

    A temp file in the same directory, fchmod'ed and fsynced, renamed over the old one: the collector
    never sees a half-written or unreadable file.
    """
    if metrics_dir is None:
        return
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    for metric, (doc, value) in gauges.items():
        Gauge(metric, doc, registry=registry).set(value)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    final = metrics_dir / f"{name}.prom"
    tmp = metrics_dir / f".{name}.prom.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.fchmod(fd, 0o644)  # the umask (UMask=0077 in the units) would leave it 0600
        os.write(fd, generate_latest(registry))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)


def previous_value(metrics_dir: Path | None, name: str, metric: str) -> float:
    """A gauge from the last textfile (to keep the last success time across a failed run)."""
    if metrics_dir is None:
        return 0.0
    try:
        for line in (metrics_dir / f"{name}.prom").read_text().splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0.0
