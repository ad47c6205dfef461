"""gunicorn configuration for the jukics service (`gunicorn -c python:jukics.api.gunicorn_conf`).

Everything comes from the jukics TOML named by $JUKICS_CONFIG, so there is one source of truth.
Metrics (prometheus-client multiprocess mode): with $JUKICS_METRICS_DIR set, every listener's
workers write their counters to ``$JUKICS_METRICS_DIR/<listener>`` (an explicit
$PROMETHEUS_MULTIPROC_DIR wins); the directory is emptied when gunicorn starts and a dead worker's
files are marked dead, and the metrics listener sums every subdirectory (jukics.api.metrics_app).

$JUKICS_LISTENER picks the listener: ``intake`` (default; 既存住基 and the 庁内 side), ``peer``
(the peer-facing listener of ``[peer_listener]``: 住基ネット side, its own port, certificate and
trust bundle, its own process tree and unit) or ``terminal`` (the counter terminals of
``[terminal_listener]``: their own port, server certificate with its key in the TPM, terminal CA).
"""

from __future__ import annotations

import gc
import os
import ssl
from typing import Any

LISTENER = os.environ.get("JUKICS_LISTENER", "intake")
# Before anything imports prometheus_client (it picks multiprocess mode at import, and loading the
# config imports modules that count): the workers inherit the environment.
if os.environ.get("JUKICS_METRICS_DIR") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(os.environ["JUKICS_METRICS_DIR"], LISTENER)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the arbiter's own (empty) files land here too
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], mode=0o750, exist_ok=True)

from jukics.api.tls import CachedContext, ServerTlsFiles  # noqa: E402
from jukics.config import load_config  # noqa: E402

_config = load_config(os.environ.get("JUKICS_CONFIG", "/etc/jukics/jukics.toml"))
if LISTENER == "peer":
    if _config.peer_listener is None:
        raise SystemExit("jukics: JUKICS_LISTENER=peer but the configuration has no [peer_listener] listen")
    _side: Any = _config.peer_listener
    workers = _config.peer_listener.workers
elif LISTENER == "terminal":
    if _config.terminal_listener is None:
        raise SystemExit("jukics: JUKICS_LISTENER=terminal but the configuration has no [terminal_listener] listen")
    _side = _config.terminal_listener
    workers = _config.terminal_listener.workers
else:
    _side = _config.intake
    workers = _config.workers

bind = [_side.listen.address]
worker_class = "sync"
# Our own hook builds the context; these are set so gunicorn knows the listener is TLS.
certfile = str(_side.cert_file)
keyfile = str(_side.key_file)
ca_certs = str(_side.client_ca_file)
cert_reqs = ssl.CERT_REQUIRED
do_handshake_on_connect = True
timeout = 60
graceful_timeout = 30
limit_request_line = 4096
limit_request_fields = 50
limit_request_field_size = 8190
accesslog = "-"
# The access log must not carry query strings (a search could hold personal data in one).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
proc_name = {"peer": "jukics-peer", "terminal": "jukics-terminal"}.get(LISTENER, "jukics")
control_socket_disable = True  # gunicorn 27 otherwise wants a control socket under $HOME
preload_app = False  # each worker opens its own DB connections and its own TPM sessions

_tls = CachedContext(ServerTlsFiles(_side.cert_file, _side.key_file, _side.client_ca_file))


def ssl_context(conf: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    return _tls.get()


# Garbage collection in the workers. An intake batch allocates some 100,000 short-lived objects
# (dicts, strings) and frees them by reference counting; with the default thresholds the cycle
# collector still runs hundreds of times per batch, and now and then walks every object of the
# loaded app (SQLAlchemy, Falcon, cryptography). After the app is loaded, freeze what exists (never
# scanned again) and collect the young generation every 50,000 allocations instead of 700. Measured
# (bench/README.md): about 3 % less server CPU per intake record, 385 -> 374 us.
GC_THRESHOLDS = (50_000, 20, 100)


_TPM_TCTI = _config.keystore.get("tcti") if _config.keystore.get("backend") == "tpm" else None


def post_fork(server: Any, worker: Any) -> None:
    # TLS keys in the TPM: every worker loads OpenSSL's tpm2 provider itself, after the fork, so no
    # TPM connection is shared between processes (reference/trixie-notes.md §2(c)). Loaded whatever
    # the current key is, so a swap to a TPM key applies without a restart. A provider that cannot
    # be used is fatal only when the key needs it: no fallback to software keys.
    if _TPM_TCTI is None:
        return
    from jukics.keystore import KeyStoreError
    from jukics.keystore.provider import ensure_tpm2_provider

    try:
        version = ensure_tpm2_provider(_TPM_TCTI)
    except KeyStoreError as exc:
        if _tls_key_is_tss2():
            raise
        server.log.warning("worker %s: %s (the TLS key is a software key and does not need it)", worker.pid, exc)
        return
    server.log.info("worker %s: tpm2 provider %s loaded", worker.pid, version)


def _tls_key_is_tss2() -> bool:
    try:
        from jukics.keystore.tpm import TSS2_PEM_BEGIN

        with open(_side.key_file, "rb") as fh:
            return TSS2_PEM_BEGIN in fh.read(4096)
    except OSError:
        return False


def post_worker_init(worker: Any) -> None:
    _count_failed_handshakes(worker)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _count_failed_handshakes(worker: Any) -> None:
    """Count and log a failed TLS handshake (no client certificate, an untrusted CA, our certificate
    refused by the client, plain HTTP on the TLS port): gunicorn's worker hands it to handle_error and
    logs it at debug level only, so it would be invisible to JukicsTlsAuthFailures and to the log."""
    from jukics import metrics

    handle_error = worker.handle_error

    def counting_handle_error(req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, ssl.SSLError):
            metrics.TLS_AUTH_FAILURES.labels(LISTENER, "unverified").inc()
            source = addr[0] if isinstance(addr, tuple) and addr else "?"
            worker.log.warning("TLS handshake from %s failed on the %s listener: %s", source, LISTENER,
                               exc.reason or exc)
            return  # the connection is closed by the worker; there is no HTTP response to send
        handle_error(req, client, addr, exc)

    worker.handle_error = counting_handle_error


def on_starting(server: Any) -> None:
    # Files of an earlier run of this listener would be summed for ever: start empty. Only this
    # listener's own directory: the other listeners and the link worker keep their counts.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    os.makedirs(path, mode=0o750, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
