"""Certificate metrics: per TLS identity, the current certificate's notAfter / notBefore and the last swap.

One collector for both places that export them: the ``jukics cert`` textfile (node_exporter) and
the metrics listener (read from the files at scrape time), so the names are the same in both
(monitoring/rules/jukics.rules.yml alerts on them). Labels carry identity names only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from jukics.certs.lifecycle import CertError, CertStore, Identity
from jukics.config import Config


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


class CertCollector:
    """``stores`` gives (identity name, CertStore) pairs; a store that cannot be read is skipped."""

    def __init__(self, stores: Callable[[], Sequence[tuple[str, CertStore]]]) -> None:
        self.stores = stores

    def collect(self) -> Iterator[Metric]:
        not_after = GaugeMetricFamily("jukics_cert_not_after_timestamp_seconds", "Current certificate's notAfter",
                                      labels=["identity"])
        not_before = GaugeMetricFamily("jukics_cert_not_before_timestamp_seconds",
                                       "Current certificate's notBefore", labels=["identity"])
        result = GaugeMetricFamily("jukics_cert_swap_last_result",
                                   "1 if the last activate/rollback succeeded, else 0", labels=["identity"])
        when = GaugeMetricFamily("jukics_cert_swap_last_timestamp_seconds", "Time of the last activate/rollback",
                                 labels=["identity"])
        for name, store in self.stores():
            try:
                current = store.describe("current")
            except (OSError, ValueError, CertError):
                current = None  # unreadable: the series is absent and JukicsCertMetricsMissing says so
            if current:
                not_after.add_metric([name], _ts(current["not_after"]))
                not_before.add_metric([name], _ts(current["not_before"]))
            swap = store.last_swap()
            if swap.get("last_swap_at"):
                result.add_metric([name], 1 if swap.get("last_swap_ok") else 0)
                when.add_metric([name], _ts(swap["last_swap_at"]))
        yield from (not_after, not_before, result, when)


def config_stores(config: Config, keys: Any = None) -> list[tuple[str, CertStore]]:
    """The configured identities' stores. Reading certificates needs no key, so ``keys`` may be None."""
    if config.tls is None:
        return []
    out = []
    for name, ident in sorted(config.tls.identities.items()):
        identity = Identity(ident.name, ident.role, ident.subject_names, ident.peer_names, ident.peer_endpoint)
        out.append((name, CertStore(Path(config.tls.dir), identity, keys)))
    return out
