"""`jukics export ...`: encrypted exports to media, with a witness (jukics.exports).

  export create --dataset residents|audit|search --recipient NAME --media-id ID --out PATH
                --requester ID --witness ID [--codes-file FILE]
         both people authenticate: four lines on stdin (requester password, requester TOTP, witness
         password, witness TOTP) or, on a terminal, prompts (the secrets are never echoed)
  export list                                  JSON: the export register (no resident data)

Exit codes: 0 done, 2 refused (with the error code), 1 failure.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from jukics.config import Config


def _secrets() -> list[str]:
    if not sys.stdin.isatty():
        return [sys.stdin.readline().rstrip("\n") for _ in range(4)]
    return [getpass.getpass("requester password: "), getpass.getpass("requester TOTP code: "),
            getpass.getpass("witness password: "), getpass.getpass("witness TOTP code: ")]


def cmd_create(config: Config, args: argparse.Namespace) -> int:
    from jukics.exports import ExportError, WitnessCredentials
    from jukics.metrics import EXPORTS
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()
    codes = None
    if args.codes_file:
        codes = [c.strip() for c in Path(args.codes_file).read_text(encoding="utf-8").splitlines() if c.strip()]
    req_pw, req_code, wit_pw, wit_code = _secrets()
    login = svc.operators.login(args.requester, req_pw, req_code, terminal="cli:export")
    if not login.ok:
        EXPORTS.labels(result=login.code or "E_LOGIN_FAILED").inc()
        print(f"export: {login.code}: the requester did not authenticate", file=sys.stderr)
        return 2
    try:
        record = svc.exports.create(args.requester, WitnessCredentials(args.witness, wit_pw, wit_code),
                                    dataset=args.dataset, recipient=args.recipient, media_id=args.media_id,
                                    target=Path(args.out), codes=codes)
    except ExportError as exc:
        print(f"export: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps(record.as_dict(), ensure_ascii=False))
    return 0


def cmd_list(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    print(json.dumps(Service(config).exports.list(), ensure_ascii=False, indent=2))
    return 0


def register(sub: Any) -> None:
    what = "encrypted exports to media, with a witness (every attempt audited)"
    p = sub.add_parser("export", help=what, description=what)
    ex_sub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    c = ex_sub.add_parser("create", help="write an age-encrypted data set to media; secrets on stdin or prompted")
    c.set_defaults(func=cmd_create)
    c.add_argument("--dataset", required=True, choices=("residents", "audit", "search"))
    c.add_argument("--recipient", required=True, help="a name of [exports] recipients")
    c.add_argument("--media-id", required=True, help="the label of the medium (recorded)")
    c.add_argument("--out", required=True, help="the file to write on the medium (must not exist)")
    c.add_argument("--requester", required=True, help="your operator id (needs the export permission)")
    c.add_argument("--witness", required=True, help="the witness's operator id (another person)")
    c.add_argument("--codes-file", help="for --dataset search: one 住民票コード per line")
    ls = ex_sub.add_parser("list", help="the export register (JSON)")
    ls.set_defaults(func=cmd_list)
