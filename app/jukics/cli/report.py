"""`jukics report ...`: reports for the section head and the auditors (no resident data).

  report access-review [--json] [--idle-days N]   accounts by department, roles, last use, expiry, flags
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jukics.config import Config


def cmd_access_review(config: Config, args: argparse.Namespace) -> int:
    from jukics.auth.rbac import load_duties
    from jukics.auth.reports import access_review, render_text
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()
    report = access_review(svc.operators.list(), config.duties or load_duties(None), now=svc.clock(),
                           idle_days=args.idle_days)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(render_text(report), end="")
    return 0


def register(sub: Any) -> None:
    what = "reports for the section head and the auditors (no resident data)"
    rep = sub.add_parser("report", help=what, description=what)
    rep_sub = rep.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = rep_sub.add_parser("access-review", help="accounts by department: roles, last use, expiry, what to decide")
    p.set_defaults(func=cmd_access_review)
    p.add_argument("--json", action="store_true")
    p.add_argument("--idle-days", type=int, default=90)
