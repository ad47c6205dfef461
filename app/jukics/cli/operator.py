"""`jukics operator ...`: operator accounts, every change audited.

  operator add ID --department D --role R [--role R...] --expires YYYY-MM-DD --actor ADMIN
               the password from stdin (first line) or asked for; prints the TOTP enrollment URI and QR code
               once ([--qr-png PATH]: also as PNG, mode 0600)
  operator disable ID --actor ADMIN
  operator reset-totp ID --actor ADMIN      a new TOTP secret (lost device); prints the URI once
  operator grant|revoke ID --role R [--role R...] --actor ADMIN
  operator list                             JSON: ids, departments, roles, expiry, locks, last login

Exit codes: 0 done, 3 nothing to do, 2 refused (with the error code), 1 failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from typing import Any

from jukics.config import Config


def _store(config: Config) -> Any:
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()  # stop here when the key store cannot open
    return svc.operators


def _refused(exc: Exception) -> int:
    print(f"operator: {getattr(exc, 'code', 'E_OPERATOR')}: {getattr(exc, 'message', exc)}", file=sys.stderr)
    return 2


def qr_code(uri: str) -> Any:
    import segno

    return segno.make(uri, error="m", micro=False)


def write_qr_png(uri: str, path: str) -> None:
    """The QR code as PNG, mode 0600 from creation (it carries the TOTP secret), never over a file."""
    import io

    buf = io.BytesIO()
    qr_code(uri).save(buf, kind="png", scale=8, border=4)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())


def _enrolled(enrollment: Any, args: argparse.Namespace) -> None:
    print(json.dumps({"user_id": enrollment.user_id, "provisioning_uri": enrollment.provisioning_uri}))
    # the QR code on stderr: on the terminal with the URI, but out of a piped stdout (JSON)
    qr_code(enrollment.provisioning_uri).terminal(out=sys.stderr, compact=True)
    if getattr(args, "qr_png", None):
        try:
            write_qr_png(enrollment.provisioning_uri, args.qr_png)
        except OSError as exc:
            print(f"operator: the QR PNG was not written ({exc.strerror}); use the URI above", file=sys.stderr)
    print("operator: scan the QR code (or the URI) into the authenticator now; it is not shown again",
          file=sys.stderr)


def cmd_add(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.credentials import CredentialError
    from jukics.auth.operators import OperatorError

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    try:
        expires = dt.date.fromisoformat(args.expires)
        enrollment = _store(config).add(args.user_id, password, department=args.department, roles=args.role,
                                        account_expires_on=expires, actor=args.actor)
    except (OperatorError, CredentialError) as exc:
        return _refused(exc)
    except ValueError:
        print("operator: E_USAGE: --expires is a date YYYY-MM-DD", file=sys.stderr)
        return 2
    _enrolled(enrollment, args)
    return 0


def cmd_disable(config: Config, args: argparse.Namespace) -> int:
    done = _store(config).disable(args.user_id, actor=args.actor)
    print(json.dumps({"user_id": args.user_id, "disabled": True, "changed": done}))
    return 0 if done else 3


def cmd_reset_totp(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.operators import OperatorError

    try:
        _enrolled(_store(config).reset_totp(args.user_id, actor=args.actor), args)
    except OperatorError as exc:
        return _refused(exc)
    return 0


def cmd_roles(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.operators import OperatorError

    store = _store(config)
    before = next((o["roles"] for o in store.list() if o["user_id"] == args.user_id), None)
    try:
        after = store.set_roles(args.user_id, actor=args.actor,
                                **{"grant" if args.command_name == "grant" else "revoke": args.role})
    except OperatorError as exc:
        return _refused(exc)
    print(json.dumps({"user_id": args.user_id, "roles": after}))
    return 0 if after != before else 3


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    print(json.dumps(_store(config).list(), ensure_ascii=False, indent=2))
    return 0


def register(sub: Any) -> None:
    what = "operator accounts (one per person; every change audited)"
    op = sub.add_parser("operator", help=what, description=what)
    op_sub = op.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    def add(name: str, func: Any, help_: str, *, user: bool = True, actor: bool = True) -> argparse.ArgumentParser:
        p = op_sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func, command_name=name)
        if user:
            p.add_argument("user_id")
        if actor:
            p.add_argument("--actor", required=True, help="the administrator's own operator id (audited)")
        return p

    p = add("add", cmd_add, "add an operator; the password on stdin; prints the TOTP enrollment URI once")
    p.add_argument("--department", required=True)
    p.add_argument("--role", action="append", default=[], help="a role of the duties table (repeatable)")
    p.add_argument("--expires", required=True, help="the account lapses after this day (YYYY-MM-DD)")
    p.add_argument("--qr-png", metavar="PATH", help="also write the enrollment QR code as PNG (mode 0600)")
    add("disable", cmd_disable, "disable an operator (kept for the audit trail, never deleted)")
    p = add("reset-totp", cmd_reset_totp, "a new TOTP secret for an operator (old codes stop working)")
    p.add_argument("--qr-png", metavar="PATH", help="also write the enrollment QR code as PNG (mode 0600)")
    for name in ("grant", "revoke"):
        p = add(name, cmd_roles, f"{name} roles")
        p.add_argument("--role", action="append", required=True)
    add("list", cmd_list, "operators: ids, departments, roles, expiry, locks, last login (JSON)", user=False,
        actor=False)
