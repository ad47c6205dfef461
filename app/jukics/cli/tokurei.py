"""`jukics tokurei ...`: F6 特例転入 at this CS (counts only, no personal data).

  tokurei status   転出証明書情報 waiting for their 特例転入, claimed with the 転入通知 not yet acked,
                   done, erased unclaimed
  tokurei purge    erase the 転出証明書情報 unclaimed for [tokurei] unclaimed_days
                   (`jukics purge` does this too, on its timer)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jukics.config import Config


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    print(json.dumps(Service(config).tokurei.status(), indent=2, sort_keys=True))
    return 0


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()  # the audit key comes from the key store: stop here when it cannot open
    deleted = svc.tokurei.purge_unclaimed(dry_run=args.dry_run)
    print(json.dumps({"tenshutsu_unclaimed_deleted": deleted, "dry_run": args.dry_run}))
    return 0


def register(sub: Any) -> None:
    what = "F6 特例転入: 転出証明書情報 received for this CS (counts only)"
    tokurei = sub.add_parser("tokurei", help=what, description=what)
    tokurei_sub = tokurei.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = tokurei_sub.add_parser("status", help="counts: waiting, claimed and unsent, done, erased unclaimed")
    p.set_defaults(func=cmd_status)
    p = tokurei_sub.add_parser("purge", help="erase 転出証明書情報 unclaimed for [tokurei] unclaimed_days (audited)")
    p.set_defaults(func=cmd_purge)
    p.add_argument("--dry-run", action="store_true", help="count what would be erased, change nothing")
