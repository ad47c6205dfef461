"""The PostgreSQL side of backups: a consistent snapshot with pg_dump, a scratch database for checks,
record digests computed the same way on the live and the restored side, and the swap on restore.

Everything else (age encryption to the two recipients, the escrow member, the MACed manifest,
retention) is the kind-independent code of :mod:`jukics.backup.archive`.

- Snapshot: one psycopg connection opens a ``REPEATABLE READ READ ONLY`` transaction and exports its
  snapshot (``pg_export_snapshot()``); ``pg_dump --snapshot=<id>`` runs while that transaction stays
  open, and the row counts, record digests, audit head and the erased copy of the 送付先 table are
  read in the same transaction. Manifest and dump describe the same instant.
- The dump is pg_dump's custom format (``-Fc``): one file, so it is one streamed tar member like
  ``db.sqlite`` (the directory format would be many members for no gain here: the parallel dump it
  allows is not worth it on a 2-core appliance and its files would each need hashing and a manifest
  entry). Uncompressed (``-Z0``): the bulk is AES-GCM ciphertext and keyed hashes, which do not
  compress, and age encrypts it anyway.
- 送付先情報 is never in the archive: the tables of ``archive.NEVER_BACKED_UP`` are dumped without
  data (``--exclude-table-data``), and their rows go into a separate member as ``COPY`` text with
  the erased column NULL where the row is a 送付先 (the same rows and columns the SQLite path erases).
- Record digests: per table, SHA-256 over ``COPY (SELECT <columns in attnum order> FROM t ORDER BY
  <primary key, text columns COLLATE "C">) TO STDOUT`` in text format, under fixed session settings
  (hex bytea, ISO dates, UTC, UTF8). The bytes are PostgreSQL's own well-defined text encoding, so
  the live side and a restored copy agree exactly; the row count is the number of lines.
- Restore: ``pg_restore`` into a freshly created database, checked, purges re-applied there, then
  two ``ALTER DATABASE ... RENAME`` in ONE transaction put it in place of the live one, whose data is
  untouched until that commit (and dropped after it).

Connection parameters go to the tools as a libpq conninfo string without the password; a password
in the database URL goes into a 0600 PGPASSFILE in the 0700 work directory, never on a command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DEFAULT_PG_BIN: Final = "/usr/lib/postgresql/15/bin"
DIGEST_PG: Final = "pg-copy-text v1"
MAINTENANCE_DB: Final = "postgres"
#: fixed for every digest and every COPY of the erased tables, live and restored side alike
SESSION_SETTINGS: Final = (
    "SET LOCAL bytea_output = 'hex'", "SET LOCAL DateStyle = 'ISO, YMD'", "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL TimeZone = 'UTC'", "SET LOCAL extra_float_digits = 3", "SET LOCAL client_encoding = 'UTF8'",
)


def _error(code: str, message: str) -> Exception:
    from jukics.backup.archive import BackupError

    return BackupError(code, message)


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- connections and tools -------------------------------------------------------------------------

@dataclass(frozen=True)
class PgTarget:
    """One database of the configured server: libpq keywords (no password) and the password apart."""

    params: dict[str, str]
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> PgTarget:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        params: dict[str, str] = {}
        for key, value in u.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        if u.host:
            params["host"] = u.host
        if u.port:
            params["port"] = str(u.port)
        if u.username:
            params["user"] = u.username
        if not u.database:
            raise _error("E_BACKUP_CONFIG", "database.url names no PostgreSQL database")
        params["dbname"] = u.database
        return cls(params, u.password)

    @property
    def dbname(self) -> str:
        return self.params["dbname"]

    def with_db(self, dbname: str) -> PgTarget:
        return PgTarget({**self.params, "dbname": dbname}, self.password)

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(**self.params)

    def url(self, original: str) -> str:
        """``original`` (the configured SQLAlchemy URL) pointed at this target's database."""
        from sqlalchemy.engine import make_url

        return make_url(original).set(database=self.dbname).render_as_string(hide_password=False)

    def connect(self, *, autocommit: bool = True) -> Any:
        import psycopg

        kwargs = {"password": self.password} if self.password else {}
        try:
            return psycopg.connect(self.conninfo(), autocommit=autocommit, **kwargs)
        except psycopg.OperationalError as exc:
            raise _error("E_BACKUP_TOOL", f"cannot connect to PostgreSQL database {self.dbname} "
                         f"({str(exc).strip().splitlines()[-1][:200]})") from None


class PgTools:
    """pg_dump / pg_restore from ``[backup] pg_bin_dir``, else $JUKICS_PG_BIN, else the PostgreSQL 15 default."""

    def __init__(self, bin_dir: Path | str | None = None) -> None:
        self.bin_dir = Path(bin_dir or os.environ.get("JUKICS_PG_BIN") or DEFAULT_PG_BIN)

    def path(self, tool: str) -> str:
        exe = self.bin_dir / tool
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise _error("E_BACKUP_TOOL", f"{exe}: not found or not executable (install postgresql-client-15 "
                         "or set [backup] pg_bin_dir)")
        return str(exe)

    def env(self, target: PgTarget, work: Path) -> dict[str, str]:
        env = dict(os.environ)
        if target.password:
            passfile = work / ".pgpass"
            esc = target.password.replace("\\", "\\\\").replace(":", "\\:")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, f"*:*:*:*:{esc}\n".encode())
            finally:
                os.close(fd)
            env["PGPASSFILE"] = str(passfile)
        env.pop("PGPASSWORD", None)
        return env

    def run(self, tool: str, args: Sequence[str], target: PgTarget, work: Path) -> None:
        log = work / f"{tool}.log"
        with log.open("wb") as err:
            done = subprocess.run([self.path(tool), *args], env=self.env(target, work),  # noqa: S603 - argv list
                                  stdout=subprocess.DEVNULL, stderr=err, check=False)
        if done.returncode != 0:
            raise _error("E_BACKUP_TOOL", f"{tool} failed ({done.returncode}): {_last_line(log)}")


def _last_line(log: Path) -> str:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no message"


# --- digests: the same on the live side and on a restored copy ------------------------------------------

def _tables(cur: Any) -> list[str]:
    cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY c.relname COLLATE \"C\"")
    return [r[0] for r in cur.fetchall()]


def _columns(cur: Any, table: str) -> list[tuple[str, bool]]:
    """(name, collatable) in attnum order."""
    cur.execute("SELECT attname, attcollation <> 0 FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (_ident(table),))
    return [(r[0], bool(r[1])) for r in cur.fetchall()]


def _primary_key(cur: Any, table: str) -> list[str]:
    cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey::int2[]) WHERE i.indrelid = %s::regclass AND i.indisprimary "
                "ORDER BY array_position(i.indkey::int2[], a.attnum)", (_ident(table),))
    return [r[0] for r in cur.fetchall()]


def copy_query(cur: Any, table: str, erase: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """The COPY of ``table`` in primary-key order (all columns when it has none); ``erase``: column ->
    condition under which it is NULL (the 送付先 rule). Returns (statement, column names)."""
    cols = _columns(cur, table)
    collatable = dict(cols)
    order = _primary_key(cur, table) or [c for c, _ in cols]
    select = []
    for name, _ in cols:
        if erase and name in erase:
            select.append(f"CASE WHEN {erase[name]} THEN NULL ELSE {_ident(name)} END AS {_ident(name)}")
        else:
            select.append(_ident(name))
    by = ", ".join(_ident(c) + (' COLLATE "C"' if collatable.get(c) else "") for c in order)
    sql = f"COPY (SELECT {', '.join(select)} FROM {_ident(table)} ORDER BY {by}) TO STDOUT"  # noqa: S608
    return sql, [c for c, _ in cols]


def _erased(never: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for table, column, where in never:
        out.setdefault(table, {})[column] = where
    return out


def table_digests(conn: Any, never: Sequence[tuple[str, str, str]], *,
                  sinks: dict[str, Any] | None = None) -> tuple[dict[str, int], dict[str, str]]:
    """Row count and digest of every table of the current schema, inside the caller's transaction.

    The tables of ``never`` are read with their erased column NULL where the rule says so (on a restored
    copy that changes nothing: it is NULL already). ``sinks``: table -> writable that also receives the
    COPY bytes (the erased tables' member of the archive, written in the same pass as its digest).
    """
    erase = _erased(never)
    counts: dict[str, int] = {}
    digests: dict[str, str] = {}
    with conn.cursor() as cur:
        for stmt in SESSION_SETTINGS:
            cur.execute(stmt)
        for table in _tables(cur):
            sql, _ = copy_query(cur, table, erase.get(table))
            h, n = hashlib.sha256(), 0
            sink = (sinks or {}).get(table)
            with cur.copy(sql) as copy:
                for chunk in copy:
                    data = bytes(chunk)
                    h.update(data)
                    n += data.count(b"\n")  # COPY text: one line per row, newlines in values are escaped
                    if sink is not None:
                        sink.write(data)
            counts[table], digests[table] = n, h.hexdigest()
    return counts, digests


# --- snapshot ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PgSnapshot:
    dump: Path
    erased_members: dict[str, Path]
    revision: str
    audit_head: tuple[int, bytes | None] | None
    counts: dict[str, int]
    digests: dict[str, str]


def erased_member(table: str) -> str:
    return f"{table}.copy"


def snapshot(url: str, work: Path, tools: PgTools, never: Sequence[tuple[str, str, str]]) -> PgSnapshot:
    """pg_dump of the live database and its counts/digests, from ONE exported snapshot."""
    target = PgTarget.from_url(url)
    pg_dump = tools.path("pg_dump")  # fail before opening anything
    dump = work / "db.pgdump"
    conn = target.connect(autocommit=True)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snap_id = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = sorted({t for t, _, _ in never})
        args = ["--format=custom", "--compress=0", f"--snapshot={snap_id}", "--no-password",
                *[f"--exclude-table-data={_ident(t)}" for t in tables], f"--file={dump}",
                f"--dbname={target.conninfo()}"]
        log = work / "pg_dump.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([pg_dump, *args], env=tools.env(target, work),  # noqa: S603 - argv list
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                members = {t: work / erased_member(t) for t in tables}
                with contextlib.ExitStack() as stack:
                    sinks = {t: stack.enter_context(p.open("wb")) for t, p in members.items()}
                    counts, digests = table_digests(conn, never, sinks=sinks)
                revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
                head = conn.execute("SELECT seq, hash FROM audit_head").fetchone() if "audit_head" in counts else None
            finally:
                rc = proc.wait()  # the snapshot must stay exported until pg_dump has finished
        conn.execute("COMMIT")
    finally:
        conn.close()
    if rc != 0:
        raise _error("E_BACKUP_TOOL", f"pg_dump failed ({rc}): {_last_line(log)}")
    return PgSnapshot(dump, members, revision, (head[0], bytes(head[1]) if head[1] is not None else None)
                      if head else None, counts, digests)


# --- scratch databases, load, check, swap --------------------------------------------------------------

@contextlib.contextmanager
def scratch_database(url: str, prefix: str) -> Iterator[str]:
    """A new empty database ``<prefix><random>`` (same encoding and locale as the live one), dropped at
    the end even on failure (a no-op when a restore renamed it into place). Yields its URL."""
    target = PgTarget.from_url(url)
    name = f"{prefix}{secrets.token_hex(6)}"
    admin = target.with_db(MAINTENANCE_DB).connect(autocommit=True)
    try:
        row = admin.execute("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                            "WHERE datname = %s", (target.dbname,)).fetchone()
        opts = ""
        if row:
            enc, coll, ctype = (str(v).replace("'", "''") for v in row)
            opts = f" ENCODING '{enc}' LC_COLLATE '{coll}' LC_CTYPE '{ctype}'"
        try:
            admin.execute(f"CREATE DATABASE {_ident(name)} TEMPLATE template0{opts}")
        except Exception as exc:
            raise _error("E_BACKUP_TOOL", f"cannot create the scratch database {name} (the role needs CREATEDB): "
                         f"{str(exc).strip().splitlines()[0][:200]}") from None
        try:
            yield target.with_db(name).url(url)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    finally:
        admin.close()


def load(dump: Path, erased: dict[str, Path], scratch_url: str, work: Path, tools: PgTools) -> None:
    """pg_restore the dump into the (empty) scratch database, then COPY the erased tables' rows in."""
    target = PgTarget.from_url(scratch_url)
    tools.run("pg_restore", ["--exit-on-error", "--single-transaction", "--no-owner", "--no-acl", "--no-password",
                             f"--dbname={target.conninfo()}", str(dump)], target, work)
    conn = target.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            for stmt in SESSION_SETTINGS:
                cur.execute(stmt)
            for table, path in erased.items():
                cols = [c for c, _ in _columns(cur, table)]
                with cur.copy(f"COPY {_ident(table)} ({', '.join(_ident(c) for c in cols)}) FROM STDIN") as copy, \
                        path.open("rb") as src:
                    while chunk := src.read(1 << 20):
                        copy.write(chunk)
        conn.commit()
    except Exception as exc:
        from jukics.backup.archive import BackupError

        if isinstance(exc, BackupError):
            raise
        raise _error("E_BACKUP_CORRUPT", f"the erased-table rows do not load ({exc.__class__.__name__})") from None
    finally:
        conn.close()


def check(scratch_url: str, never: Sequence[tuple[str, str, str]]) -> tuple[dict[str, int], dict[str, str], int]:
    """(counts, digests, rows of ``never`` that still hold the erased column) of a loaded copy."""
    conn = PgTarget.from_url(scratch_url).connect(autocommit=False)
    try:
        counts, digests = table_digests(conn, never)
        left = 0
        for table, column, where in never:
            if table in counts:
                left += conn.execute(f"SELECT count(*) FROM {_ident(table)} "  # noqa: S608 - names from code
                                     f"WHERE ({where}) AND {_ident(column)} IS NOT NULL").fetchone()[0]
        conn.rollback()
    finally:
        conn.close()
    return counts, digests, left


def ensure_idle(url: str) -> None:
    """Refuse (E_BACKUP_IN_USE) while any other session is connected to the live database."""
    target = PgTarget.from_url(url)
    admin = target.with_db(MAINTENANCE_DB).connect(autocommit=True)
    try:
        n = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                          (target.dbname,)).fetchone()[0]
    finally:
        admin.close()
    if n:
        raise _error("E_BACKUP_IN_USE", f"{n} session(s) are connected to database {target.dbname}: stop the "
                     "service (jukics, jukics-links, jukics-peer) before a restore")


def swap(live_url: str, scratch_url: str, stamp: str) -> str:
    """Put the scratch database in place of the live one: both renames in ONE transaction (the live data
    is untouched unless it commits), then drop the replaced one. Returns the name it had while aside."""
    import psycopg

    live, scratch = PgTarget.from_url(live_url), PgTarget.from_url(scratch_url)
    aside = f"{live.dbname[:40]}_replaced_{stamp.lower()}"
    admin = live.with_db(MAINTENANCE_DB).connect(autocommit=False)
    try:
        busy = live.dbname
        try:
            admin.execute(f"ALTER DATABASE {_ident(live.dbname)} RENAME TO {_ident(aside)}")
            busy = scratch.dbname
            admin.execute(f"ALTER DATABASE {_ident(scratch.dbname)} RENAME TO {_ident(live.dbname)}")
            admin.commit()
        except psycopg.errors.ObjectInUse:
            admin.rollback()
            raise _error("E_BACKUP_IN_USE", f"database {busy} is in use: stop the service before a "
                         "restore (the live data is unchanged)") from None
        except psycopg.Error as exc:
            admin.rollback()
            raise _error("E_BACKUP_TOOL", f"the swap failed, the live data is unchanged "
                         f"({str(exc).strip().splitlines()[0][:200]})") from None
        admin.autocommit = True
        try:
            admin.execute(f"DROP DATABASE {_ident(aside)}")
        except psycopg.Error:
            return f"{aside} (kept: it could not be dropped; drop it by hand)"  # the restore itself succeeded
    finally:
        admin.close()
    return aside
