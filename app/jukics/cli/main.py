"""`jukics`: the operator's command line. Every command has --help; exit codes are stable:

  0  done (or nothing to do)
  1  the check ran and found a problem (unhealthy, chain broken, ...)
  2  the command could not run: bad configuration or arguments (message on stderr)
  3  nothing to do (commands that change state: `keystore provision`, `cert ...`)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jukics import __version__
from jukics.config import Config, ConfigError, check_files, load_config

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NOTHING_TO_DO = 0, 1, 2, 3
DEFAULT_CONFIG = "/etc/jukics/jukics.toml"


def _print_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def cmd_config_check(config: Config, args: argparse.Namespace) -> int:
    # --no-files: the values only. The deploy checks a config before the certificates it names exist
    # (with TPM keys they are issued from a CSR after the config is in place).
    problems = [] if args.no_files else check_files(config)
    if problems:
        for p in problems:
            print(f"config: {p}", file=sys.stderr)
        return EXIT_USAGE
    print(f"config: ok ({config.source}, environment={config.environment})"
          + (" (values only)" if args.no_files else ""))
    return EXIT_OK


def cmd_db_upgrade(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import upgrade_database

    print(upgrade_database(config))
    return EXIT_OK


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from jukics.keystore import KeyStoreError, open_keystore

    # Refuse to start, with the reason, when the key store cannot give the data key (no TPM, lockout,
    # a blob of another TPM, a dev key source in production): never start with other keys.
    try:
        open_keystore(config.keystore, production=config.is_production).data_key()
    except KeyStoreError as exc:
        print(f"jukics: refusing to start: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if args.listener == "peer" and config.peer_listener is None:
        print("jukics: refusing to start: no [peer_listener] listen in the configuration", file=sys.stderr)
        return EXIT_PROBLEM
    if args.listener == "terminal" and config.terminal_listener is None:
        print("jukics: refusing to start: no [terminal_listener] listen in the configuration", file=sys.stderr)
        return EXIT_PROBLEM
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = dict(os.environ, JUKICS_CONFIG=str(config.source), JUKICS_LISTENER=args.listener)
    app = {"peer": "jukics.api.wsgi:peer_app", "terminal": "jukics.api.wsgi:terminal_app"}.get(
        args.listener, "jukics.api.wsgi:app")
    argv = [str(gunicorn), "-c", "python:jukics.api.gunicorn_conf", app]
    os.execve(argv[0], argv, env)  # noqa: S606 - replaces this process with gunicorn (fixed argv)


def tls_probe(host: str, port: int, expected_cert: Path, timeout: float = 5.0) -> str | None:
    """Handshake with the listener; None when it presents `expected_cert`, else what went wrong."""
    ctx = ssl.create_default_context(cafile=None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare the exact certificate below instead of a chain
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
            served = tls.getpeercert(binary_form=True)
    except OSError as exc:
        return f"no TLS listener on {host}:{port} ({exc.__class__.__name__})"
    # The first certificate of the file is the leaf (the rest, if any, is the chain).
    want = x509.load_pem_x509_certificate(expected_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    if served != want:
        return f"{host}:{port} serves a certificate other than {expected_cert}"
    return None


def cmd_health(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import database_status

    problems = []
    db = database_status(config)
    if db != "ok":
        problems.append(f"database: {db}")
    listeners = [("intake", config.intake)]
    if config.peer_listener is not None:
        listeners.append(("peer_listener", config.peer_listener))  # type: ignore[arg-type]
    if config.terminal_listener is not None:
        listeners.append(("terminal_listener", config.terminal_listener))  # type: ignore[arg-type]
    for name, side in listeners:
        listen = side.listen
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host  # noqa: S104 - a wildcard bind
        tls = tls_probe(host, listen.port, side.cert_file)
        if tls:
            problems.append(f"{name}: {tls}")
    if problems:
        for p in problems:
            print(f"health: {p}", file=sys.stderr)
        return EXIT_PROBLEM
    print("health: ok (database, " + ", ".join(f"{n} TLS on {s.listen.address}" for n, s in listeners) + ")")
    return EXIT_OK


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    import time

    from jukics.backup.archive import previous_value, write_textfile
    from jukics.service import run_purge

    metrics_dir = args.metrics_dir and Path(args.metrics_dir)
    try:
        report = run_purge(config, dry_run=args.dry_run)
    except Exception:
        last_ok = previous_value(metrics_dir, "jukics_purge", "jukics_purge_last_success_timestamp_seconds")
        write_textfile(metrics_dir, "jukics_purge", _purge_gauges(last_ok, 0))
        raise
    if not args.dry_run:
        write_textfile(metrics_dir, "jukics_purge", _purge_gauges(time.time(), 1))
    _print_json(report)
    return EXIT_OK


def _purge_gauges(last_ok: float, result: int) -> dict[str, tuple[str, float]]:
    return {"jukics_purge_last_success_timestamp_seconds": ("Unix time of the last successful purge run", last_ok),
            "jukics_purge_last_result": ("1 when the last purge run succeeded, 0 when it failed", result)}


def cmd_audit_verify(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import verify_audit

    public = None
    if args.public_key:
        try:
            loaded = serialization.load_pem_public_key(Path(args.public_key).read_bytes())
        except (OSError, ValueError) as exc:
            print(f"audit: --public-key {args.public_key}: not a PEM public key ({exc.__class__.__name__})",
                  file=sys.stderr)
            return EXIT_USAGE
        public = loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ok, report = verify_audit(config, public_key=public)
    if args.json:
        _print_json(report)
    else:
        print(report.get("summary", report))
    return EXIT_OK if ok else EXIT_PROBLEM


def cmd_audit_checkpoint(config: Config, args: argparse.Namespace) -> int:
    from jukics.keystore import KeyStoreError
    from jukics.service import Service

    svc = Service(config)
    try:
        cp = svc.audit.checkpoint(svc.keystore)
    except KeyStoreError as exc:
        print(f"audit: checkpoint not signed: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if cp is None:
        print("audit: the log is empty, nothing to checkpoint")
        return EXIT_NOTHING_TO_DO
    print(f"audit: checkpoint at seq {cp.seq} ({'signed' if cp.signature else 'unsigned'})")
    return EXIT_OK


def cmd_keystore_provision(config: Config, args: argparse.Namespace) -> int:
    from jukics.keystore import KeyStoreError
    from jukics.service import Service, database_status_of

    svc = Service(config)
    try:
        provision = getattr(svc.keystore, "provision", None)
        if provision is None:
            print("keystore: the dev backend has nothing to provision")
            return EXIT_NOTHING_TO_DO
        # Provisioning is audited, so the audit log must exist first (`jukics db upgrade`).
        db_status = database_status_of(svc.engine)
        if db_status != "ok":
            print(f"keystore: database {db_status}; run `jukics db upgrade` before provisioning", file=sys.stderr)
            return EXIT_USAGE
        report = provision()
    except KeyStoreError as exc:
        print(f"keystore: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    if report.changed:
        from jukics.audit.chain import AuditEvent

        svc.audit.append(AuditEvent(
            actor=_os_actor(), terminal=socket.gethostname(), action="keystore.provision", purpose="operation",
            query={"created": report.created, "present": report.present}, result_count=len(report.created),
        ))
    if args.json:
        _print_json({"created": report.created, "present": report.present})
    elif report.changed:
        print(f"keystore: provisioned {', '.join(report.created)} (already there: {', '.join(report.present) or '-'})")
    else:
        print(f"keystore: already provisioned ({', '.join(report.present)})")
    return EXIT_OK if report.changed else EXIT_NOTHING_TO_DO


def _os_actor() -> str:
    """The operator as the OS knows them (sudo's caller first): ``os:<name>``."""
    import pwd

    name = os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    return f"os:{name}"


def cmd_keystore_status(config: Config, args: argparse.Namespace) -> int:
    from jukics.keystore import KeyStoreError
    from jukics.service import Service

    status: dict[str, Any]
    try:
        keystore = Service(config).keystore
    except KeyStoreError as exc:
        status = {"backend": config.keystore.get("backend"), "usable": False, "problems": [str(exc)]}
    else:
        status_of = getattr(keystore, "status", None)
        status = status_of() if status_of else {"backend": "dev", "usable": True, "problems": [],
                                                "production_safe": False}
    if args.json:
        _print_json(status)
    else:
        state = "usable" if status["usable"] else "NOT usable"
        print(f"keystore: {status['backend']} {state}" + "".join(f"\n  - {p}" for p in status["problems"]))
    return EXIT_OK if status["usable"] else EXIT_PROBLEM


def cmd_stats(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    svc = Service(config)
    # Aggregate counts only (「個人に着目した分析・統計は行わず」).
    out = {**svc.store.stats(), "outbox_pending": svc.store.outbox_counts()}
    _print_json(out)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jukics", description="jukics: the municipal CS appliance service")
    parser.add_argument("--config", "-c", default=os.environ.get("JUKICS_CONFIG", DEFAULT_CONFIG),
                        help=f"path of the TOML configuration (default: $JUKICS_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--version", action="version", version=f"jukics {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[Config, argparse.Namespace], int], help_: str,
            parent: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
        p = (parent or sub).add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    cfg = sub.add_parser("config", help="configuration commands", description="configuration commands")
    cfg_sub = cfg.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = add("check", cmd_config_check, "validate the configuration file and the files it names", cfg_sub)
    p.add_argument("--no-files", action="store_true",
                   help="check the values only, not that the certificate and key files exist")

    db = sub.add_parser("db", help="database commands", description="database commands")
    db_sub = db.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    add("upgrade", cmd_db_upgrade, "apply pending schema migrations (idempotent)", db_sub)

    p = add("serve", cmd_serve, "run the service under gunicorn in the foreground")
    p.add_argument("--listener", choices=("intake", "peer", "terminal"), default="intake",
                   help="intake: the 既存住基 side (default); peer: the peer-facing listener of [peer_listener]; "
                        "terminal: the counter terminals of [terminal_listener]")
    add("stats", cmd_stats, "aggregate counts: residents, 消除者, versions, outbox messages pending per link")
    add("health", cmd_health, "check the database and the TLS listeners (intake, peer-facing); exit 1 when unhealthy")
    p = add("purge", cmd_purge, "purge history and 消除者 records past the retention period (150 years)")
    p.add_argument("--dry-run", action="store_true", help="report what would be purged, change nothing")
    p.add_argument("--metrics-dir", metavar="DIR",
                   help="write jukics_purge.prom (node_exporter textfile) into DIR after the run")

    audit = sub.add_parser("audit", help="audit log commands", description="audit log commands")
    audit_sub = audit.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = add("verify", cmd_audit_verify, "verify the audit hash chain (edit, delete, reorder, truncation)", audit_sub)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--public-key", metavar="PEM",
                   help="verify checkpoint signatures with this public key (e.g. checkpoint.pub.pem shipped off "
                        "the box) instead of the key store's")
    add("checkpoint", cmd_audit_checkpoint,
        "record the chain head as a checkpoint signed by the key store's TPM key (exit 3: log empty)", audit_sub)

    from jukics.cli import cert

    cert.register(sub)

    from jukics.cli import links

    links.register(sub)

    from jukics.cli import queries

    queries.register(sub)

    from jukics.cli import card

    card.register(sub)

    from jukics.cli import tokurei

    tokurei.register(sub)

    from jukics.cli import operator

    operator.register(sub)

    from jukics.cli import report

    report.register(sub)

    from jukics.cli import export

    export.register(sub)

    from jukics.cli import metrics

    metrics.register(sub)

    from jukics.cli import backup

    backup.register(sub)

    from jukics.cli import status

    status.register(sub)

    ks = sub.add_parser("keystore", help="key store (TPM) commands", description="key store (TPM) commands")
    ks_sub = ks.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = add("provision", cmd_keystore_provision,
            "create the storage root key, the sealed data secret and the checkpoint signing key where missing "
            "(idempotent: exit 3 when everything exists; never replaces a key)", ks_sub)
    p.add_argument("--json", action="store_true", help="print what was created and what was there as JSON")
    p = add("status", cmd_keystore_status,
            "TPM reachable, not locked out, keys provisioned and usable (exit 1 when not)", ks_sub)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"jukics: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return int(args.func(config, args))


if __name__ == "__main__":
    sys.exit(main())
