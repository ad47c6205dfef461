"""`jukics metrics ...`: the service's own /metrics (docs/monitoring.md).

  metrics serve   the metrics listener on [metrics] listen under gunicorn (jukics-metrics.service)
  metrics show    one scrape printed to stdout (what the listener would answer now)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jukics.config import Config

EXIT_OK = 0


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    env = dict(os.environ, JUKICS_CONFIG=str(config.source))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process only reads the other processes' files
    argv = [str(gunicorn), "-c", "python:jukics.api.metrics_gunicorn_conf", "jukics.api.metrics_app:app"]
    os.execve(argv[0], argv, env)  # noqa: S606 - replaces this process with gunicorn (fixed argv)


def cmd_show(config: Config, args: argparse.Namespace) -> int:
    from prometheus_client import generate_latest

    from jukics.api.metrics_app import build_registry, metrics_dir

    sys.stdout.write(generate_latest(build_registry(config, root=metrics_dir())).decode())
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("metrics", help="the service's /metrics", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    msub = m.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    p = msub.add_parser("serve", help="run the metrics listener on [metrics] listen (GET /metrics, plain HTTP)")
    p.set_defaults(func=cmd_serve)
    p = msub.add_parser("show", help="print one scrape (the counters of $JUKICS_METRICS_DIR and the collectors)")
    p.set_defaults(func=cmd_show)
