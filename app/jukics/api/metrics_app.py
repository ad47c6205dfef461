"""The metrics listener (``jukics metrics serve``): GET /metrics, plain HTTP on ``[metrics] listen``.

What one scrape returns:

- the process counters (:mod:`jukics.metrics`) of every process, summed: each listener's gunicorn
  workers and the link worker write them to their own subdirectory of ``$JUKICS_METRICS_DIR``
  (prometheus-client multiprocess mode, ``<dir>/<process>/*.db``); this listener adds them all up;
- values computed now from the database and the files: the links (LinkCollector), the audit chain
  (verified incrementally, see AuditChainCollector), the certificates (CertCollector), the TPM
  (probed with a short timeout, cached), and ``jukics_up`` / ``jukics_build_info``.

No label carries personal data: the counters are labelled with codes, listeners and host names,
the collectors with link and identity names. The port is plain HTTP: the firewall admits it from
the monitoring host only (docs/monitoring.md).
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, select

from jukics.audit.chain import row_hash
from jukics.store.schema import audit_checkpoints, audit_head, audit_log

log = logging.getLogger("jukics.metrics")


class MultiProcessSum:
    """The counters of every process, from ``root/<process>/*.db`` (and ``root/*.db``), summed.

    One collector over all subdirectories rather than one MultiProcessCollector each: two collectors
    would emit the same metric family twice, which is not valid exposition.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def collect(self) -> Iterable[Metric]:
        files = sorted(glob.glob(str(self.root / "*.db")) + glob.glob(str(self.root / "*" / "*.db")))
        return MultiProcessCollector.merge(files, accumulate=True)


def _parse_ts(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


class AuditChainCollector:
    """The audit chain, verified incrementally: a full re-walk per scrape would be too slow.

    The first scrape starts at the latest checkpoint (its record must still carry the checkpoint's
    hash) or at the chain's base; every scrape then checks the records added since the last one
    (prev_hash links, content hashes, consecutive seqs, at most ``max_rows`` per scrape), that the
    checkpoint's record and the last verified record are unchanged, and that the head matches. A
    break is sticky until the listener restarts. Rows verified earlier than the starting checkpoint
    are not re-walked here: that is ``jukics audit verify`` (full, with signatures).
    """

    def __init__(self, engine: Engine, *, max_rows: int = 20_000, now: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.now = now
        self.lock = threading.Lock()
        self.verified_seq: int | None = None
        self.verified_hash: bytes = b""
        self.anchor: tuple[int, bytes] | None = None  # (seq, hash) of the starting checkpoint
        self.ok = True
        self.problem = ""
        self.verified_at: float | None = None

    def _fail(self, problem: str) -> None:
        if self.ok:
            log.error("audit chain: %s", problem)
        self.ok = False
        self.problem = problem

    def _row_hash_at(self, conn: Any, seq: int) -> bytes | None:
        row = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == seq)).first()
        return bytes(row.hash) if row is not None else None

    def step(self) -> dict[str, Any]:
        """Verify what was added since the last call; returns the state the metrics show."""
        with self.lock, self.engine.connect() as conn:
            head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).first()
            cp = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq.desc()).limit(1)).first()
            if head is None:
                self._fail("audit_head row is missing")
                return self._state(None, cp)
            if self.ok and self.verified_seq is None:
                if cp is not None and int(cp.seq) > int(head.base_seq):
                    self.anchor = (int(cp.seq), bytes(cp.hash))
                    self.verified_seq, self.verified_hash = self.anchor
                else:
                    self.verified_seq, self.verified_hash = int(head.base_seq), bytes(head.base_hash)
            if self.ok and self.anchor is not None and self._row_hash_at(conn, self.anchor[0]) != self.anchor[1]:
                self._fail(f"seq {self.anchor[0]}: the checkpointed record changed or is gone")
            assert self.verified_seq is not None or not self.ok
            if self.ok and self.verified_seq is not None and self.verified_seq > int(head.base_seq) \
                    and self._row_hash_at(conn, self.verified_seq) != self.verified_hash:
                self._fail(f"seq {self.verified_seq}: a verified record changed or is gone")
            if self.ok and self.verified_seq is not None:
                rows = conn.execute(select(audit_log).where(audit_log.c.seq > self.verified_seq)
                                    .order_by(audit_log.c.seq).limit(self.max_rows)).mappings().all()
                for row in rows:
                    seq = int(row["seq"])
                    if seq != self.verified_seq + 1:
                        self._fail(f"seq {self.verified_seq + 1} expected, found {seq}")
                        break
                    if bytes(row["prev_hash"]) != self.verified_hash:
                        self._fail(f"seq {seq}: prev_hash does not match the previous record")
                        break
                    if row_hash(bytes(row["prev_hash"]), row) != bytes(row["hash"]):
                        self._fail(f"seq {seq}: content does not match its hash")
                        break
                    self.verified_seq, self.verified_hash = seq, bytes(row["hash"])
                caught_up = len(rows) < self.max_rows
                if self.ok and caught_up:
                    if int(head.seq) != self.verified_seq:
                        self._fail(f"head at seq {int(head.seq)}, the log ends at {self.verified_seq}")
                    elif self.verified_seq > int(head.base_seq) and bytes(head.hash) != self.verified_hash:
                        self._fail(f"seq {self.verified_seq}: head hash does not match the last record")
                if self.ok:
                    self.verified_at = self.now()
            return self._state(head, cp)

    def _state(self, head: Any, cp: Any) -> dict[str, Any]:
        return {"ok": self.ok, "head_seq": int(head.seq) if head is not None else None,
                "verified_seq": self.verified_seq, "verified_at": self.verified_at,
                "checkpoint_seq": int(cp.seq) if cp is not None else None,
                "checkpoint_at": _parse_ts(cp.ts) if cp is not None else None,
                "checkpoint_signed": cp is not None and cp.signature is not None}

    def collect(self) -> Iterator[Metric]:
        try:
            s = self.step()
        except Exception as exc:  # the database is unreachable: say so, not "broken"
            log.warning("audit chain: not read (%s)", type(exc).__name__)
            yield GaugeMetricFamily("jukics_audit_chain_readable", "1 when the audit log could be read", value=0)
            return
        yield GaugeMetricFamily("jukics_audit_chain_readable", "1 when the audit log could be read", value=1)
        yield GaugeMetricFamily("jukics_audit_chain_ok",
                                "1 while every record checked so far links and hashes correctly, 0 once a break "
                                "was found (sticky until restart)", value=1 if s["ok"] else 0)
        if s["head_seq"] is not None:
            yield GaugeMetricFamily("jukics_audit_chain_head_seq", "Sequence number of the chain head",
                                    value=s["head_seq"])
        if s["verified_seq"] is not None:
            yield GaugeMetricFamily("jukics_audit_chain_verified_seq", "Last sequence number verified",
                                    value=s["verified_seq"])
        if s["verified_at"] is not None:
            yield GaugeMetricFamily("jukics_audit_chain_verified_timestamp_seconds",
                                    "When the chain was last verified up to the head (or max_rows further)",
                                    value=s["verified_at"])
        if s["checkpoint_seq"] is not None:
            yield GaugeMetricFamily("jukics_audit_checkpoint_seq", "Sequence number of the latest checkpoint",
                                    value=s["checkpoint_seq"])
            yield GaugeMetricFamily("jukics_audit_checkpoint_timestamp_seconds", "When the latest checkpoint was "
                                    "taken (jukics-audit-checkpoint.timer)", value=s["checkpoint_at"])
            yield GaugeMetricFamily("jukics_audit_checkpoint_signed", "1 when the latest checkpoint is signed",
                                    value=1 if s["checkpoint_signed"] else 0)


class TpmCollector:
    """``jukics_tpm_up``: the key store's TPM answers and the keys are usable.

    The probe (``keystore.status()``) runs in a thread with a timeout and its result is cached for
    ``ttl`` seconds, so a hung TPM slows no scrape by more than ``timeout`` and a busy TPM is not
    asked on every scrape. Only exported with the tpm backend (the dev backend has no TPM).
    """

    def __init__(self, probe: Callable[[], dict[str, Any]], *, timeout: float = 3.0, ttl: float = 60.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.timeout = timeout
        self.ttl = ttl
        self.now = now
        self.lock = threading.Lock()
        self.cached: tuple[float, bool, bool] | None = None  # (when, up, in lockout)
        self.running: threading.Thread | None = None
        self.result: dict[str, Any] | None = None

    def _run(self) -> None:
        try:
            self.result = self.probe()
        except Exception as exc:  # any failure means "not usable"
            self.result = {"usable": False, "problems": [type(exc).__name__]}

    def value(self) -> tuple[bool, bool]:
        with self.lock:
            if self.cached is not None and self.now() - self.cached[0] < self.ttl:
                return self.cached[1], self.cached[2]
            if self.running is None or not self.running.is_alive():  # never two probes at once
                self.result = None
                self.running = threading.Thread(target=self._run, name="tpm-probe", daemon=True)
                self.running.start()
            self.running.join(self.timeout)
            result = self.result if not self.running.is_alive() else None
            up = bool(result and result.get("usable"))
            lockout = bool(result and result.get("in_lockout"))
            self.cached = (self.now(), up, lockout)
            return up, lockout

    def collect(self) -> Iterator[Metric]:
        up, lockout = self.value()
        yield GaugeMetricFamily("jukics_tpm_up", "1 when the TPM answered within the timeout and the keys are usable",
                                value=1 if up else 0)
        yield GaugeMetricFamily("jukics_tpm_in_lockout", "1 when the TPM reports dictionary-attack lockout",
                                value=1 if lockout else 0)


class BuildCollector:
    def __init__(self, version: str, environment: str, backend: str) -> None:
        self.labels = {"version": version, "environment": environment, "keystore": backend}

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("jukics_up", "1: the metrics listener answered", value=1)
        info = InfoMetricFamily("jukics_build", "The jukics version and configuration kind")
        info.add_metric([], self.labels)
        yield info


class MetricsApp:
    """A plain WSGI app: GET (or HEAD) /metrics only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO", "") != "/metrics":
            return self._plain(start_response, "404 Not Found", b"GET /metrics\n")
        if method not in ("GET", "HEAD"):
            return self._plain(start_response, "405 Method Not Allowed", b"GET /metrics\n", [("Allow", "GET, HEAD")])
        try:
            body = generate_latest(self.registry)
        except Exception:  # a collector failed: no half scrape (Prometheus marks the target down)
            log.exception("metrics: scrape failed")
            return self._plain(start_response, "500 Internal Server Error", b"scrape failed\n")
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [] if method == "HEAD" else [body]

    @staticmethod
    def _plain(start_response: Any, status: str, body: bytes,
               extra: list[tuple[str, str]] | None = None) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                *(extra or [])])
        return [body]


def metrics_dir() -> Path | None:
    value = os.environ.get("JUKICS_METRICS_DIR")
    return Path(value) if value else None


def build_registry(config: Any, *, service: Any = None, root: Path | None = None) -> CollectorRegistry:
    from jukics import __version__
    from jukics.certs.metrics import CertCollector, config_stores
    from jukics.links.metrics import LinkCollector
    from jukics.service import Service
    from jukics.store.link_state import LinkState

    svc = service or Service(config)
    registry = CollectorRegistry()
    if root is not None:
        registry.register(MultiProcessSum(root))  # type: ignore[arg-type]
    # The listener reads counts, never personal data: it needs no key (so a TPM that is down makes
    # jukics_tpm_up 0 instead of failing the whole scrape). LinkState.status reads the database only.
    links = LinkState(svc.engine, None, svc.clock)  # type: ignore[arg-type]
    registry.register(LinkCollector(links.status))  # type: ignore[arg-type]
    registry.register(AuditChainCollector(svc.engine))  # type: ignore[arg-type]
    stores = config_stores(config)
    registry.register(CertCollector(lambda: stores))  # type: ignore[arg-type]
    backend = str(config.keystore.get("backend"))
    if backend == "tpm":
        registry.register(TpmCollector(lambda: svc.keystore.status()))  # type: ignore[arg-type]
    registry.register(BuildCollector(__version__, config.environment, backend))  # type: ignore[arg-type]
    return registry


def build_metrics_app(config: Any, *, service: Any = None, root: Path | None = None) -> MetricsApp:
    return MetricsApp(build_registry(config, service=service, root=root if root is not None else metrics_dir()))


def __getattr__(name: str) -> Any:
    # gunicorn's entry point ``jukics.api.metrics_app:app``, built from $JUKICS_CONFIG on first use
    if name != "app":
        raise AttributeError(name)
    from jukics.config import load_config

    value = build_metrics_app(load_config(os.environ.get("JUKICS_CONFIG", "/etc/jukics/jukics.toml")))
    globals()[name] = value
    return value
