"""`jukics card ...`: F9 送付先情報 and F10 card events (counts only, no personal data).

  card status      waiting / sent and kept until their deletion day / erased; events; notices for 既存住基
  card purge       erase the 送付先情報 whose deletion day (one business day after sending) has come
                   (`jukics purge` does this too, on its timer)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from jukics.config import Config


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    print(json.dumps(Service(config).card.status(), indent=2, sort_keys=True))
    return 0


def cmd_purge(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    svc = Service(config)
    svc.keystore.data_key()  # the audit key comes from the key store: stop here when it cannot open
    print(json.dumps({"sofusaki_deleted": svc.card.purge_sent(dry_run=args.dry_run), "dry_run": args.dry_run}))
    return 0


def register(sub: Any) -> None:
    card = sub.add_parser("card", help="F9 送付先情報 and F10 card events (counts only)",
                          description="F9 送付先情報 and F10 card events (counts only)")
    card_sub = card.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = card_sub.add_parser("status", help="counts: waiting, sent and kept, erased; events; notices for 既存住基")
    p.set_defaults(func=cmd_status)
    p = card_sub.add_parser("purge", help="erase 送付先情報 one business day after it was sent (audited)")
    p.set_defaults(func=cmd_purge)
    p.add_argument("--dry-run", action="store_true", help="count what would be erased, change nothing")
