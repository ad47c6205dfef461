"""`jukics links ...`: the delivery worker and what operators do with the links.

  links run            deliver the outbox to every configured peer until SIGTERM (its own systemd unit)
  links status         per link: pending, oldest pending, acknowledged sequence, dead letters, counters
  links dead-letters   the messages peers refused for good (or that had no legal basis), with the code
  links requeue ID...  put dead letters back at the end of their link's outbox (audited)
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from jukics.config import Config

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def _print_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from jukics.links.metrics import write_textfile
    from jukics.links.worker import run_links
    from jukics.service import Service

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not config.links.peers:
        print("links: no peers configured ([links.peers]); nothing to deliver", file=sys.stderr)
        return EXIT_USAGE
    if config.keystore.get("backend") == "tpm":
        # Our client keys are TSS2 keys: the tpm2 provider must be in this process before any context.
        from jukics.keystore.provider import ensure_tpm2_provider

        ensure_tpm2_provider(str(config.keystore.get("tcti")))
    svc = Service(config)
    svc.keystore.data_key()  # stops here, with the reason, when the key store cannot open
    workers = svc.link_workers()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics_file = config.links.metrics_file

    def tick() -> None:
        if metrics_file is not None:
            write_textfile(metrics_file, svc.link_state.status)

    logging.getLogger("jukics.links").info(
        "delivering to %s", ", ".join(f"{w.link} ({w.transport.name})" for w in workers))
    links = config.links
    run_links(workers, stop, poll_interval=links.poll_interval_seconds, backoff_initial=links.backoff_initial_seconds,
              backoff_max=links.backoff_max_seconds, on_tick=tick, tick_seconds=args.tick)
    return EXIT_OK


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    rows = Service(config).link_state.status()
    for r in rows:
        r["peer"] = config.links.peers[r["link"]].url if r["link"] in config.links.peers else None
    _print_json(rows)
    # exit 1 when a configured link is failing or has dead letters: usable from a check script
    bad = any(r["peer"] and (r.get("consecutive_failures") or r["dead_letters"]) for r in rows)
    return EXIT_PROBLEM if bad else EXIT_OK


def cmd_dead_letters(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    _print_json(Service(config).link_state.dead_letter_list(args.link, args.limit))
    return EXIT_OK


def cmd_requeue(config: Config, args: argparse.Namespace) -> int:
    from jukics.service import Service

    try:
        moved = Service(config).link_state.requeue(args.ids, actor=args.operator, reason=args.reason)
    except LookupError as exc:
        print(f"links: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_json(moved)
    return EXIT_OK


def register(sub: Any) -> None:
    links = sub.add_parser("links", help="peer links: delivery worker, status, dead letters",
                           description="peer links: delivery worker, status, dead letters")
    links_sub = links.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

    def add(name: str, func: Any, help_: str) -> argparse.ArgumentParser:
        p = links_sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "deliver the outbox to every configured peer until SIGTERM (in order, with retries)")
    p.add_argument("--tick", type=float, default=5.0, help="seconds between metrics textfile writes (default 5)")
    add("status", cmd_status, "per link: pending, oldest, acknowledged sequence, dead letters, counters "
                              "(exit 1 when a configured link fails or has dead letters)")
    p = add("dead-letters", cmd_dead_letters, "list messages refused for good (NACK, no legal basis)")
    p.add_argument("--link", help="only this link")
    p.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    p = add("requeue", cmd_requeue, "put dead letters back at the end of their link's outbox (audited)")
    p.add_argument("ids", nargs="+", type=int, metavar="ID", help="dead-letter ids (from `links dead-letters`)")
    p.add_argument("--operator", required=True, help="who requeues (recorded in the audit log)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit log)")
