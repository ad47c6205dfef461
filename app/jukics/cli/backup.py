"""`jukics backup provision|create|list|verify|restore|drill` (docs/backup.md)."""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from jukics.config import Config

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_NOTHING_TO_DO = 0, 1, 2, 3


def _settings(config: Config) -> Any:
    from jukics.backup.archive import BackupSettings

    return BackupSettings.from_config(config.raw)


def _identities(args: argparse.Namespace, settings: Any, keystore: Any) -> list[Any]:
    from jukics.backup.archive import BackupError, load_identity_file, unseal_identity

    escrow = getattr(args, "escrow_identity", None)
    if escrow and args.identity:
        raise BackupError("E_BACKUP_CONFIG", "give --identity or --escrow-identity, not both")
    if escrow:
        return load_identity_file(Path(escrow))
    if args.identity:
        return load_identity_file(Path(args.identity))
    return [unseal_identity(settings.identity_file, keystore)]


def _pick(settings: Any, name: str | None) -> Path:
    from jukics.backup.archive import BackupError, list_backups

    if name:
        path = Path(name) if "/" in name else settings.directory / name
        if not path.is_file():
            raise BackupError("E_BACKUP_NOT_FOUND", f"{name}: no such backup")
        return path
    backups = list_backups(settings)
    if not backups:
        raise BackupError("E_BACKUP_NOT_FOUND", f"no backups in {settings.directory}")
    return backups[-1]


def _audit(svc: Any, action: str, query: dict[str, Any], outcome_count: int = 1) -> None:
    from jukics.audit.chain import AuditEvent

    svc.audit.append(AuditEvent(actor="jukics-backup", terminal=socket.gethostname(), action=action,
                                purpose="operation", query=query, result_count=outcome_count))


_SERVICES: list[Any] = []


def _service(config: Config) -> Any:
    """A Service whose engine is disposed when the command ends: no pooled session stays connected (a
    PostgreSQL restore swaps databases by rename, which needs them idle)."""
    from jukics.service import Service

    svc = Service(config)
    _SERVICES.append(svc)
    return svc


def _run(func: Any) -> Any:
    def wrapped(config: Config, args: argparse.Namespace) -> int:
        from jukics.backup.archive import BackupError
        from jukics.keystore import KeyStoreError

        try:
            return int(func(config, args))
        except (BackupError, KeyStoreError) as exc:
            print(f"backup: {exc}", file=sys.stderr)
            return EXIT_USAGE if getattr(exc, "code", "") == "E_BACKUP_CONFIG" else EXIT_PROBLEM
        finally:
            while _SERVICES:
                svc = _SERVICES.pop()
                if "engine" in svc.__dict__:
                    svc.engine.dispose()
    return wrapped


def cmd_provision(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import provision_identity
    settings, svc = _settings(config), _service(config)
    if not provision_identity(settings.identity_file, svc.keystore):
        print(f"backup: identity already provisioned ({settings.identity_file})")
        return EXIT_NOTHING_TO_DO
    _audit(svc, "backup.identity_provision", {"created": True})
    print(f"backup: sealed identity created ({settings.identity_file})")
    return EXIT_OK


def cmd_create(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import BackupError, create_backup, list_backups, previous_value, write_textfile
    settings, svc = _settings(config), _service(config)
    last_ok = previous_value(settings.metrics_dir, "jukics_backup", "jukics_backup_last_success_timestamp_seconds")
    try:
        result = create_backup(config.database_url, config.municipality_code, settings, svc.keystore)
    except BackupError:
        write_textfile(settings.metrics_dir, "jukics_backup", _backup_gauges(last_ok, 0, 0, settings))
        raise
    _audit(svc, "backup.create", {"backup": result.path.name, "removed": len(result.removed)})
    write_textfile(settings.metrics_dir, "jukics_backup",
                   _backup_gauges(time.time(), 1, result.size_bytes, settings, len(list_backups(settings))))
    print(json.dumps({"backup": str(result.path), "size_bytes": result.size_bytes,
                      "keystore_fingerprint": result.manifest.get("keystore_fingerprint"),
                      "row_counts": result.manifest["row_counts"], "removed": list(result.removed)}, indent=2))
    return EXIT_OK


def _backup_gauges(last_ok: float, result: int, size: int, settings: Any, generations: int | None = None) -> Any:
    from jukics.backup.archive import list_backups

    gens = generations if generations is not None else len(list_backups(settings))
    return {
        "jukics_backup_last_success_timestamp_seconds": ("Unix time of the last successful backup", last_ok),
        "jukics_backup_last_result": ("1 when the last backup run succeeded, 0 when it failed", result),
        "jukics_backup_size_bytes": ("size of the newest backup archive", size),
        "jukics_backup_generations": ("backup archives kept in the backup directory", gens),
    }


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import list_backups

    settings = _settings(config)
    out = [{"name": p.name, "size_bytes": p.stat().st_size} for p in list_backups(settings)]
    print(json.dumps(out, indent=2))
    return EXIT_OK


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import drill
    settings, svc = _settings(config), _service(config)
    path = _pick(settings, args.name)
    report = drill(path, _identities(args, settings, svc.keystore), config.municipality_code, svc.keystore,
                   settings.directory, escrow=bool(args.escrow_identity), database_url=config.database_url,
                   pg_bin_dir=settings.pg_bin_dir)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return EXIT_OK


def cmd_drill(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import BackupError, drill, previous_value, write_textfile
    settings, svc = _settings(config), _service(config)
    name = "jukics_backup_drill"
    last_ok = previous_value(settings.metrics_dir, name, "jukics_backup_drill_last_success_timestamp_seconds")
    started = time.monotonic()
    ok = 0
    try:
        path = _pick(settings, None)
        report = drill(path, _identities(args, settings, svc.keystore), config.municipality_code, svc.keystore,
                       settings.directory, database_url=config.database_url, pg_bin_dir=settings.pg_bin_dir)
        ok, last_ok = 1, time.time()
    except BackupError as exc:
        report = {"error": {"code": exc.code, "message": exc.message}}
    finally:
        write_textfile(settings.metrics_dir, name, {
            "jukics_backup_drill_last_success_timestamp_seconds": ("Unix time of the last successful restore drill",
                                                                   last_ok),
            "jukics_backup_drill_last_result": ("1 when the last restore drill succeeded, 0 when it failed", ok),
            "jukics_backup_drill_duration_seconds": ("how long the last restore drill took",
                                                     time.monotonic() - started),
        })
    _audit(svc, "backup.drill", {"ok": bool(ok)}, ok)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return EXIT_OK if ok else EXIT_PROBLEM


def cmd_restore(config: Config, args: argparse.Namespace) -> int:
    from jukics.backup.archive import restore_backup
    settings, svc = _settings(config), _service(config)
    path = _pick(settings, args.name)
    identities = _identities(args, settings, svc.keystore)
    svc.engine.dispose()
    escrow = bool(args.escrow_identity)
    report = restore_backup(path, identities, config, svc.keystore, escrow=escrow,
                            expect_fingerprint=args.expect_fingerprint)
    if escrow:
        report["backup_identity"] = _reprovision_identity(settings, _service(config))
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return EXIT_OK


def _reprovision_identity(settings: Any, svc: Any) -> str:
    """After an escrow restore the old sealed identity (under this host's former secret) no longer opens:
    keep it aside and seal a new one, so the next backups go to this host and the escrow key again."""
    from jukics.backup.archive import BackupError, provision_identity, unseal_identity

    path = settings.identity_file
    if path.exists():
        try:
            unseal_identity(path, svc.keystore)
            return "unchanged"
        except BackupError:
            path.rename(path.with_name(f"{path.name}.replaced-{int(time.time())}"))
    provision_identity(path, svc.keystore)
    _audit(svc, "backup.identity_provision", {"created": True, "escrow": True})
    return "provisioned"


def register(sub: Any) -> None:
    what = "encrypted backups of the store, restores and restore drills (docs/backup.md)"
    bk = sub.add_parser("backup", help=what, description=what)
    bk_sub = bk.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = bk_sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=_run(func))
        return p

    add("provision", cmd_provision, "create the appliance's age identity, sealed by the key store (exit 3: exists)")
    add("create", cmd_create, "snapshot, check, encrypt to the appliance and escrow recipients; apply retention")
    add("list", cmd_list, "list the backups, oldest first")
    for name, func, help_ in (
        ("verify", cmd_verify, "decrypt a backup into a scratch dir and check MAC, hashes, counts, digests, audit"),
        ("restore", cmd_restore, "restore a backup over the live database (stop the service first); re-applies "
                                 "purges and 送付先 deletions"),
        ("drill", cmd_drill, "verify the latest backup and write the drill metrics textfile"),
    ):
        p = add(name, func, help_)
        if name != "drill":
            p.add_argument("name", nargs="?", help="backup file name (default: the latest)")
        p.add_argument("--identity", metavar="FILE", help="an age identity file (the escrow key) instead of the "
                                                          "appliance's sealed identity")
        if name != "drill":
            p.add_argument("--escrow-identity", metavar="FILE",
                           help="the escrow age identity: take the keys from the backup's data-key escrow (a host "
                                "whose TPM is new); restore then re-seals them into this host's key store")
        else:
            p.set_defaults(escrow_identity=None)
        if name == "restore":
            p.add_argument("--expect-fingerprint", metavar="HEX",
                           help="refuse unless the backup was made under this key store (`backup create` prints it)")
