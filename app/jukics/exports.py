"""Exports of 本人確認情報 to media: always age-encrypted, always with a witness, always recorded.

:class:`ExportService` is called by the CLI (`jukics export create`) and, later, by a terminal API
resource: it takes an authenticated requester's id and the witness's own credentials, and does the
rest itself (no prompts, no printing). The order is the point:

1. the requester must be an active operator whose roles hold ``export`` (a vendor role never does);
2. the witness logs in through :meth:`OperatorStore.login` (so lockout and TOTP replay apply), must
   be another person, and must hold ``witness``;
3. the data set (a fixed list, :data:`DATASETS`) is encrypted with age (pyrage) to the configured
   recipient public key(s) of ``[exports] recipients``, written to a temporary file beside the
   target, fsynced and renamed into place (no partial file is ever left under the target name);
4. data set, row count, sha256 of the ciphertext, media id, requester, witness and times go into the
   ``exports`` table and the audit chain in one transaction.

Every refusal is an ``export.create`` audit record with outcome ``refused`` and its code, and is
counted in ``EXPORTS``. Audit records carry names, counts and the hash, never resident data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
from sqlalchemy import Engine, insert, select

from jukics.audit.chain import AuditEvent, AuditLog
from jukics.auth.operators import OperatorStore
from jukics.auth.rbac import Duties
from jukics.domain.fields import RECORD_ITEMS
from jukics.metrics import EXPORTS
from jukics.store.clock import Clock, iso_utc, utc_now
from jukics.store.db import write_transaction
from jukics.store.schema import audit_log, exports

E_EXPORT_FORBIDDEN = "E_EXPORT_FORBIDDEN"
E_EXPORT_NO_WITNESS = "E_EXPORT_NO_WITNESS"
E_EXPORT_WITNESS_SELF = "E_EXPORT_WITNESS_SELF"
E_EXPORT_WITNESS_FAILED = "E_EXPORT_WITNESS_FAILED"
E_EXPORT_WITNESS_FORBIDDEN = "E_EXPORT_WITNESS_FORBIDDEN"
E_EXPORT_DATASET = "E_EXPORT_DATASET"
E_EXPORT_RECIPIENT = "E_EXPORT_RECIPIENT"
E_EXPORT_MEDIA_ID = "E_EXPORT_MEDIA_ID"
E_EXPORT_TARGET = "E_EXPORT_TARGET"
E_EXPORT_FAILED = "E_EXPORT_FAILED"

#: residents: every current record of the municipality (本人確認情報 items); audit: the audit log;
#: search: the current records of a given list of 住民票コード
DATASETS = ("residents", "audit", "search")
MEDIA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ExportError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class WitnessCredentials:
    user_id: str
    password: str
    totp: str


@dataclass(frozen=True)
class ExportRecord:
    export_id: int
    dataset: str
    rows: int
    sha256: str
    media_id: str
    recipient: str
    requester: str
    witness: str
    path: str
    started_at: str
    finished_at: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_recipients(table: Any, problems: list[str]) -> dict[str, tuple[str, ...]]:
    """``[exports] recipients``: name = "age1..." or a list of them; every key must parse."""
    out: dict[str, tuple[str, ...]] = {}
    if table is None:
        return out
    if not isinstance(table, Mapping):
        problems.append("exports.recipients: must be a table of name = age public key(s)")
        return out
    for name, value in table.items():
        keys = [value] if isinstance(value, str) else value
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            problems.append(f"exports.recipients.{name}: an age public key (age1...) or a list of them")
            continue
        for k in keys:
            try:
                pyrage.x25519.Recipient.from_str(k)
            except Exception:  # pyrage raises its own types for a bad key
                problems.append(f"exports.recipients.{name}: {k[:12]}... is not an age X25519 public key")
        out[str(name)] = tuple(keys)
    return out


class ExportService:
    def __init__(self, engine: Engine, operators: OperatorStore, duties: Duties, audit: AuditLog, *,
                 recipients: Mapping[str, Sequence[str]],
                 residents: Callable[[Sequence[str] | None], Iterable[Mapping[str, Any]]],
                 clock: Clock = utc_now) -> None:
        """``residents(None)`` yields every current record, ``residents(codes)`` those of the codes."""
        self.engine = engine
        self.operators = operators
        self.duties = duties
        self.audit = audit
        self.recipients = {k: tuple(v) for k, v in recipients.items()}
        self.residents = residents
        self.clock = clock

    def create(self, requester: str, witness: WitnessCredentials | None, *, dataset: str, recipient: str,
               media_id: str, target: Path, codes: Sequence[str] | None = None,
               terminal: str = "cli") -> ExportRecord:
        started = iso_utc(self.clock())
        query: dict[str, Any] = {"kind": dataset[:32], "recipient": recipient[:64], "media_id": media_id[:64],
                                 "witness": (witness.user_id[:32] if witness else None)}
        try:
            self._check(requester, witness, dataset, recipient, media_id, target, codes, terminal)
            rows, digest = self._write(dataset, recipient, target, codes)
        except ExportError as exc:
            self._refused(requester, terminal, query, exc.code)
            raise
        except Exception:
            self._refused(requester, terminal, query, E_EXPORT_FAILED)
            raise
        finished = iso_utc(self.clock())
        assert witness is not None
        values = {"dataset": dataset, "rows": rows, "sha256": digest, "media_id": media_id, "recipient": recipient,
                  "requester": requester, "witness": witness.user_id, "path": str(target), "started_at": started,
                  "finished_at": finished}
        with write_transaction(self.engine) as conn:
            export_id = conn.execute(insert(exports).values(**values)).inserted_primary_key[0]
            self.audit.append(AuditEvent(actor=requester, terminal=terminal, action="export.create",
                                         purpose="export", query={**query, "sha256": digest, "export_id": export_id},
                                         result_count=rows), conn)
        EXPORTS.labels(result="ok").inc()
        return ExportRecord(export_id=int(export_id), **values)

    def _refused(self, requester: str, terminal: str, query: Mapping[str, Any], code: str) -> None:
        self.audit.append(AuditEvent(actor=requester[:32] or "unknown", terminal=terminal, action="export.create",
                                     purpose="export", query=query, outcome="refused", code=code))
        EXPORTS.labels(result=code).inc()

    def _active_roles(self, user_id: str) -> tuple[str, ...] | None:
        now = self.clock()
        for op in self.operators.list():
            if op["user_id"] == user_id:
                if op["disabled"] or dt.date.fromisoformat(str(op["account_expires_on"])) < now.date():
                    return None
                return tuple(op["roles"])  # type: ignore[arg-type]
        return None

    def _check(self, requester: str, witness: WitnessCredentials | None, dataset: str, recipient: str,
               media_id: str, target: Path, codes: Sequence[str] | None, terminal: str) -> None:
        roles = self._active_roles(requester)
        if roles is None or not self.duties.allows(roles, "export"):
            raise ExportError(E_EXPORT_FORBIDDEN, f"{requester} may not export (needs the export permission)")
        if witness is None or not witness.user_id:
            raise ExportError(E_EXPORT_NO_WITNESS, "an export needs a second person as witness")
        if witness.user_id == requester:
            raise ExportError(E_EXPORT_WITNESS_SELF, "the witness must be another person than the requester")
        if dataset not in DATASETS:
            raise ExportError(E_EXPORT_DATASET, f"data set must be one of {', '.join(DATASETS)}")
        if dataset == "search" and not codes:
            raise ExportError(E_EXPORT_DATASET, "the search data set needs a list of 住民票コード")
        if recipient not in self.recipients:
            raise ExportError(E_EXPORT_RECIPIENT, f"no recipient {recipient!r} in [exports] recipients")
        if not MEDIA_ID.match(media_id):
            raise ExportError(E_EXPORT_MEDIA_ID, "a media id is 1-64 of A-Z a-z 0-9 . _ -")
        if target.exists() or not target.parent.is_dir():
            raise ExportError(E_EXPORT_TARGET, f"{target} exists or its folder does not")
        # the witness authenticates last, so a refused request does not spend their TOTP code
        result = self.operators.login(witness.user_id, witness.password, witness.totp, terminal=f"{terminal}:witness")
        if not result.ok:
            raise ExportError(E_EXPORT_WITNESS_FAILED, f"the witness did not authenticate ({result.code})")
        if not self.duties.allows(result.roles, "witness"):
            raise ExportError(E_EXPORT_WITNESS_FORBIDDEN, f"{witness.user_id} may not witness an export")

    def _lines(self, dataset: str, codes: Sequence[str] | None) -> Iterator[dict[str, Any]]:
        if dataset == "audit":
            with self.engine.connect() as conn:
                for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)):
                    d = dict(row._mapping)
                    d["prev_hash"], d["hash"] = bytes(d["prev_hash"]).hex(), bytes(d["hash"]).hex()
                    yield d
            return
        for rec in self.residents(list(codes) if dataset == "search" and codes else None):
            yield {k: rec.get(k) for k in RECORD_ITEMS}  # the whole 本人確認情報 record

    def _write(self, dataset: str, recipient: str, target: Path, codes: Sequence[str] | None) -> tuple[int, str]:
        keys = [pyrage.x25519.Recipient.from_str(k) for k in self.recipients[recipient]]
        plain = io.BytesIO()
        rows = 0
        for line in self._lines(dataset, codes):
            plain.write(json.dumps(line, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8") + b"\n")
            rows += 1
        # pyrage encrypts whole buffers; the plaintext lives only in memory and is dropped at once
        ciphertext = pyrage.encrypt(plain.getvalue(), keys)
        plain.close()
        tmp = target.with_name(f".{target.name}.partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ciphertext)
                f.flush()
                os.fsync(f.fileno())
            if target.exists():  # checked before; media is never overwritten
                raise ExportError(E_EXPORT_TARGET, f"{target} exists")
            os.rename(tmp, target)  # not link(): removable media (vfat, exFAT) has no hard links
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return rows, hashlib.sha256(ciphertext).hexdigest()

    def list(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(exports).order_by(exports.c.export_id))]
