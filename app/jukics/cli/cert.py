"""`jukics cert ...`: the certificate lifecycle of the CS's TLS identities (docs/certificates.md).

Exit codes: 0 done, 1 refused or failed (active material untouched), 2 usage or configuration,
3 nothing to do. Every step, refusals included, is one audit record.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import socket
import sys
from pathlib import Path
from typing import Any

from jukics.certs.lifecycle import CertError, CertStore, Identity
from jukics.config import Config
from jukics.keystore import KeyStoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


def _store(config: Config, name: str) -> tuple[CertStore, Any]:
    from jukics.service import Service

    if config.tls is None or name not in config.tls.identities:
        known = ", ".join(sorted(config.tls.identities)) if config.tls else "none: the config has no [tls]"
        raise CertError("E_CERT_UNKNOWN_IDENTITY", f"no TLS identity {name!r} in the configuration (known: {known})")
    ident = config.tls.identities[name]
    svc = Service(config)
    identity = Identity(ident.name, ident.role, ident.subject_names, ident.peer_names, ident.peer_endpoint)
    return CertStore(config.tls.dir, identity, svc.keystore), svc  # type: ignore[arg-type]


def _actor() -> str:
    return "os:" + (os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name)


def _audit(svc: Any, step: str, identity: str, outcome: str, detail: dict[str, Any], code: str | None = None) -> None:
    from jukics.audit.chain import AuditEvent

    try:
        svc.audit.append(AuditEvent(actor=_actor(), terminal=socket.gethostname(), action=f"cert.{step}",
                                    purpose="operation", query={"identity": identity, **detail},
                                    result_count=1 if outcome == "ok" else 0, outcome=outcome, code=code))
    except Exception as exc:  # the database may not be migrated yet on a first install
        print(f"cert: warning: audit record not written ({exc.__class__.__name__})", file=sys.stderr)


def write_metrics(config: Config) -> None:
    """node_exporter textfile: per identity, not_after / not_before and the last swap's result."""
    if config.tls is None or config.tls.metrics_file is None:
        return
    from prometheus_client import CollectorRegistry, write_to_textfile

    from jukics.certs.metrics import CertCollector

    stores = [(name, _store(config, name)[0]) for name in config.tls.identities]
    registry = CollectorRegistry()
    registry.register(CertCollector(lambda: stores))  # type: ignore[arg-type]
    config.tls.metrics_file.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(config.tls.metrics_file), registry)


def _run(config: Config, args: argparse.Namespace) -> int:
    step = args.cert_step
    if step == "status":
        names = [args.identity] if args.identity else sorted(config.tls.identities) if config.tls else []
        out = [_store(config, n)[0].status() for n in names]
        if args.json:
            print(json.dumps({"identities": out}, indent=2, ensure_ascii=False))
        else:
            for s in out:
                cur = s["current"]
                line = (f"serial {cur['serial']}, not_after {cur['not_after']}, {cur['days_left']} days left, "
                        f"sha256 {cur['sha256'][:16]}…" if cur else "no current certificate")
                print(f"{s['identity']} ({s['role']}): {line}"
                      + (", staged" if s["staged"] else "") + (", CSR pending" if s["pending_csr"] else ""))
        return EXIT_OK
    store, svc = _store(config, args.identity)
    detail: dict[str, Any] = {}
    try:
        if step == "csr":
            path = store.csr(force=args.force)
            if args.out:
                Path(args.out).write_bytes(path.read_bytes())
            detail = {"csr": str(path)}
            print(f"cert: {args.identity}: new key in the key store, CSR at {path}")
            rc = EXIT_OK
        elif step == "stage":
            release = store.stage(Path(args.cert), Path(args.chain) if args.chain else None, args.reuse_key)
            if release is None:
                print(f"cert: {args.identity}: this certificate is already staged or current")
                rc = EXIT_NOTHING
            else:
                detail = {"staged": release.name}
                print(f"cert: {args.identity}: staged {release.name}")
                rc = EXIT_OK
        elif step == "verify":
            which = "staged" if args.staged else "current"
            rel = store.release_of(which)
            if rel is None:
                print(f"cert: {args.identity}: no {which} certificate", file=sys.stderr)
                return EXIT_FAILED
            from jukics.certs.lifecycle import load_pem_certs

            cert = load_pem_certs((rel / "cert.pem").read_bytes(), which)[0]
            chain_bytes = (rel / "chain.pem").read_bytes()
            chain = load_pem_certs(chain_bytes, "chain") if chain_bytes.strip() else []
            problems = store.check(cert, chain, rel / "key.pem")
            if args.crl:
                problems += _crl_problems(Path(args.crl), cert)
            errors = [p for p in problems if not p.startswith("warning:")]
            if not errors and args.live:
                store.live_check(which)
            for p in problems:
                print(f"cert: {args.identity} ({which}): {p}", file=sys.stderr)
            if errors:
                raise CertError("E_CERT_REFUSED", "; ".join(errors))
            print(f"cert: {args.identity}: {which} certificate verifies"
                  + (" (live handshake ok)" if args.live else ""))
            return EXIT_OK
        elif step in ("activate", "rollback"):
            release = store.activate() if step == "activate" else store.rollback()
            if release is None:
                print(f"cert: {args.identity}: nothing to {step}")
                rc = EXIT_NOTHING
            else:
                detail = {"current": release.name}
                print(f"cert: {args.identity}: {release.name} is current; new connections use it")
                rc = EXIT_OK
            write_metrics(config)
        elif step == "ca":
            if args.ca_step == "list":
                for c in store.status()["trusted_cas"]:
                    print(f"{c['sha256']}  {c['subject']}")
                return EXIT_OK
            step = f"ca.{args.ca_step}"
            detail = {"file": args.file} if args.ca_step == "add" else {"sha256": args.sha256}
            changed = store.ca_add(Path(args.file)) if args.ca_step == "add" else store.ca_remove(args.sha256)
            print(f"cert: {args.identity}: trust bundle " + ("updated" if changed else "unchanged"))
            rc = EXIT_OK if changed else EXIT_NOTHING
        else:  # pragma: no cover - argparse limits the choices
            return EXIT_USAGE
    except (CertError, KeyStoreError) as exc:
        _audit(svc, step, args.identity, "refused", detail, exc.code)
        if step in ("activate", "rollback"):
            write_metrics(config)
        print(f"cert: {args.identity}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if rc == EXIT_OK:
        _audit(svc, step, args.identity, "ok", detail)
    return rc


def _crl_problems(crl_file: Path, cert: Any) -> list[str]:
    from cryptography import x509

    try:
        crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    except (OSError, ValueError):
        return [f"{crl_file}: not a PEM CRL"]
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        return ["the certificate is revoked (CRL)"]
    return []


def cmd_cert(config: Config, args: argparse.Namespace) -> int:
    try:
        return _run(config, args)
    except CertError as exc:
        print(f"cert: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.code == "E_CERT_UNKNOWN_IDENTITY" else EXIT_FAILED
    except OSError as exc:
        print(f"cert: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED


def register(sub: Any) -> None:
    cert = sub.add_parser("cert", help="certificate lifecycle of the TLS identities",
                          description="certificate lifecycle: csr, stage, verify, activate, rollback, status, ca "
                                      "(exit 0 done, 1 refused, 2 usage, 3 nothing to do)")
    steps = cert.add_subparsers(dest="cert_step", required=True, metavar="STEP")

    def step(name: str, help_: str) -> argparse.ArgumentParser:
        p = steps.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=cmd_cert)
        return p

    p = step("csr", "make a new key in the key store (the TPM) and a CSR for the identity's names")
    p.add_argument("identity")
    p.add_argument("--out", help="also write the CSR here")
    p.add_argument("--force", action="store_true", help="replace a pending key and CSR")
    p = step("stage", "check a certificate (key, names, dates, EKU, chain) and stage it in a new release")
    p.add_argument("identity")
    p.add_argument("--cert", required=True, help="the certificate (PEM; more certificates after it form the chain)")
    p.add_argument("--chain", help="intermediates and the issuing CA (PEM)")
    p.add_argument("--reuse-key", action="store_true", help="the certificate is for the current key")
    p = step("verify", "verify the staged or current certificate; --live makes a real TLS handshake")
    p.add_argument("identity")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--staged", action="store_true")
    which.add_argument("--current", action="store_true")
    p.add_argument("--live", action="store_true", help="handshake with the key (client: with the peer)")
    p.add_argument("--crl", help="a CRL (PEM) to check revocation against")
    p = step("activate", "make the staged certificate current (atomic; new connections use it)")
    p.add_argument("identity")
    p = step("rollback", "make the previous certificate current again")
    p.add_argument("identity")
    p = step("status", "serial, dates, fingerprint and names of each identity's certificates")
    p.add_argument("identity", nargs="?")
    p.add_argument("--json", action="store_true")
    p = step("ca", "the identity's trust bundle: add a CA, remove one, list them")
    ca = p.add_subparsers(dest="ca_step", required=True, metavar="ACTION")
    a = ca.add_parser("add", help="add the CA(s) of a PEM file", description="add the CA(s) of a PEM file")
    a.add_argument("identity")
    a.add_argument("file")
    r = ca.add_parser("remove", help="remove a CA by its SHA-256 fingerprint", description="remove a CA")
    r.add_argument("identity")
    r.add_argument("sha256")
    ls = ca.add_parser("list", help="list the trusted CAs", description="list the trusted CAs")
    ls.add_argument("identity")
