"""Link metrics for Prometheus, from the link status in the database (node_exporter textfile).

The counters live in the database (``link_status``), so they survive a restart of the worker and
are the same whichever process reads them; the worker writes them to a textfile every few seconds
(atomically, prometheus-client's ``write_to_textfile``). Labels carry link names only, never data.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_COUNTERS = (
    ("delivered_total", "jukics_link_delivered", "Messages the peer acknowledged"),
    ("duplicates_total", "jukics_link_duplicates", "Messages the peer had already (re-sent after a lost answer)"),
    ("nacked_total", "jukics_link_nacked", "Messages the peer refused for good (moved to dead letters)"),
    ("auth_failures_total", "jukics_link_auth_failures", "Connections refused because the peer failed authentication"),
)


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


class LinkCollector:
    def __init__(self, status: Callable[[], Sequence[Mapping[str, Any]]],
                 now: Callable[[], float] = lambda: dt.datetime.now(dt.UTC).timestamp()) -> None:
        self.status = status
        self.now = now

    def collect(self) -> Iterator[Metric]:
        rows = self.status()
        now = self.now()
        pending = GaugeMetricFamily("jukics_link_pending_messages", "Messages waiting in the outbox", labels=["link"])
        age = GaugeMetricFamily("jukics_link_oldest_pending_age_seconds",
                                "Age of the oldest message waiting (0 when none)", labels=["link"])
        dead = GaugeMetricFamily("jukics_link_dead_letters", "Messages in the dead-letter store", labels=["link"])
        fails = GaugeMetricFamily("jukics_link_consecutive_failures", "Failed attempts since the last success",
                                  labels=["link"])
        success = GaugeMetricFamily("jukics_link_last_success_timestamp_seconds",
                                    "When the peer last answered a batch", labels=["link"])
        counters = {key: CounterMetricFamily(name, text, labels=["link"]) for key, name, text in _COUNTERS}
        for r in rows:
            link = [str(r["link"])]
            pending.add_metric(link, r["pending"])
            oldest = _ts(r.get("oldest_pending_created_at"))
            age.add_metric(link, max(0.0, now - oldest) if oldest is not None and r["pending"] else 0.0)
            dead.add_metric(link, r["dead_letters"])
            fails.add_metric(link, r.get("consecutive_failures") or 0)
            last = _ts(r.get("last_success_at"))
            if last is not None:
                success.add_metric(link, last)
            for key, metric in counters.items():
                metric.add_metric(link, r.get(key) or 0)
        yield from (pending, age, dead, fails, success, *counters.values())


def write_textfile(path: Path, status: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
    registry = CollectorRegistry()
    registry.register(LinkCollector(status))  # type: ignore[arg-type]
    # Like prometheus-client's write_to_textfile (a temporary file in the same directory, renamed into
    # place), but world-readable: the worker runs with UMask=0077 and node_exporter is another user.
    # The file holds link names and counts only.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(generate_latest(registry))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
