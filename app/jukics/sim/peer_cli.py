"""`jukics-sim`: run a simulated 都道府県サーバ or 全国サーバ, and drive it (faults, inspection).

  jukics-sim run --config FILE [--check]     serve until SIGTERM (--check: validate the config, exit)
  jukics-sim state --admin HOST:PORT         counts per sender and link, duplicates, NACKs, gaps, queue
  jukics-sim received --admin ... --sender S --link L    received messages in arrival order (JSON lines)
  jukics-sim faults --admin ... [--down|--up] [--slow S] [--wrong-cert|--right-cert] [--nack-rate R]
                                [--drop-ack-rate R] [--forward-twice|--forward-once] [--clear]
  jukics-sim seed-mismatches --admin ... --alter N --drop M   (整合性確認 differences, national)
  jukics-sim card --admin ...                送付先情報 received by the card-management endpoint
  jukics-sim tenshutsu --admin ... --file F  (prefecture) relay 転出証明書情報 to the 転入地 CS (F6)

The admin API is plain HTTP on loopback only. Exit codes: 0 done, 1 the sim refused, 2 bad usage.
A simulator: never deploy it where real data flows.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode

from jukics.sim.peers import SimConfigError, load_sim_config, start_peer


def _admin(address: str, path: str, body: dict[str, Any] | None = None) -> Any:
    host, _, port = address.rpartition(":")
    url = f"http://{host or '127.0.0.1'}:{int(port)}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback admin URL built above
        return json.loads(resp.read())


def cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_sim_config(Path(args.config))
    except SimConfigError as exc:
        print(f"jukics-sim: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"config: ok ({args.config}, {config.role})")
        return 0
    running = start_peer(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.getLogger("jukics.sim").info("%s sim %s listening on %s (admin %s)", config.role, config.name,
                                         running.url, running.admin_url)
    stop.wait()
    running.stop()
    return 0


def cmd_state(args: argparse.Namespace) -> int:
    print(json.dumps(_admin(args.admin, "/state"), ensure_ascii=False, indent=2))
    return 0


def cmd_received(args: argparse.Namespace) -> int:
    for m in _admin(args.admin, "/received?" + urlencode({"sender": args.sender, "link": args.link})):
        print(json.dumps(m, ensure_ascii=False))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    for m in _admin(args.admin, "/card"):
        print(json.dumps(m, ensure_ascii=False))
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.clear:
        changes["clear"] = True
    if args.down is not None:
        changes["down"] = args.down
    if args.slow is not None:
        changes["slow_seconds"] = args.slow
    if args.wrong_cert is not None:
        changes["wrong_cert"] = args.wrong_cert
    if args.nack_rate is not None:
        changes["nack_rate"] = args.nack_rate
    if args.drop_ack_rate is not None:
        changes["drop_ack_rate"] = args.drop_ack_rate
    if args.forward_twice is not None:
        changes["forward_twice"] = args.forward_twice
    print(json.dumps(_admin(args.admin, "/faults", changes)))
    return 0


def cmd_tenshutsu(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    certs = [json.loads(line) for line in text.splitlines() if line.strip()]
    results = _admin(args.admin, "/tenshutsu", {"certs": certs})
    print(json.dumps(results, ensure_ascii=False))
    return 0 if all(r.get("status") in ("ack", "duplicate") for r in results) else 3


def cmd_seed(args: argparse.Namespace) -> int:
    print(json.dumps(_admin(args.admin, "/seed-mismatches", {"alter": args.alter, "drop": args.drop})))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jukics-sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help_: str, admin: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        if admin:
            p.add_argument("--admin", default="127.0.0.1:9480", help="the sim's admin address (default %(default)s)")
        return p

    p = add("run", cmd_run, "run a simulated peer until SIGTERM", admin=False)
    p.add_argument("--config", required=True, help="the sim's TOML configuration")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    add("state", cmd_state, "counts per sender and link, duplicates, NACKs, gaps, forward queue, faults")
    p = add("received", cmd_received, "the messages received from one sender on one link, in arrival order")
    p.add_argument("--sender", required=True)
    p.add_argument("--link", required=True)
    add("card", cmd_card, "送付先情報 received by the card-management endpoint (national)")
    p = add("faults", cmd_faults, "inject or clear faults")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--down", dest="down", action="store_const", const=True, help="stop accepting connections")
    g.add_argument("--up", dest="down", action="store_const", const=False, help="accept connections again")
    g2 = p.add_mutually_exclusive_group()
    g2.add_argument("--wrong-cert", dest="wrong_cert", action="store_const", const=True,
                    help="present the configured wrong certificate")
    g2.add_argument("--right-cert", dest="wrong_cert", action="store_const", const=False)
    g3 = p.add_mutually_exclusive_group()
    g3.add_argument("--forward-twice", dest="forward_twice", action="store_const", const=True,
                    help="(prefecture) forward every batch to national twice")
    g3.add_argument("--forward-once", dest="forward_twice", action="store_const", const=False)
    p.add_argument("--slow", type=float, metavar="SECONDS", help="delay every answer")
    p.add_argument("--nack-rate", type=float, metavar="R", help="NACK this fraction of messages (0-1)")
    p.add_argument("--drop-ack-rate", type=float, metavar="R",
                   help="store but drop the answer for this fraction of batches (0-1): the sender re-sends")
    p.add_argument("--clear", action="store_true", help="clear every fault first")
    p = add("tenshutsu", cmd_tenshutsu,
            "(prefecture) relay 転出証明書情報 (one JSON per line) to the 転入地 CS: F6; exit 3 when one was refused")
    p.add_argument("--file", required=True, help="the certificates, one JSON object per line (- for stdin)")
    p = add("seed-mismatches", cmd_seed, "spoil N stored records and drop M, for 整合性確認")
    p.add_argument("--alter", type=int, default=0)
    p.add_argument("--drop", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except urllib.error.HTTPError as exc:
        print(f"jukics-sim: the sim refused: {exc.read().decode(errors='replace')[:300]}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"jukics-sim: cannot reach the sim's admin API: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
