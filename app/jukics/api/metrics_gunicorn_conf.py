"""gunicorn configuration of the metrics listener (`jukics metrics serve`).

One sync worker on ``[metrics] listen`` (plain HTTP: the firewall admits the monitoring host only).
One worker on purpose: the audit chain is verified incrementally and the TPM probe is cached, both
in the worker's memory. This process writes no multiprocess files itself (it only reads them), so
$PROMETHEUS_MULTIPROC_DIR is removed from its environment.
"""

from __future__ import annotations

import os

from jukics.config import load_config

os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
_config = load_config(os.environ.get("JUKICS_CONFIG", "/etc/jukics/jukics.toml"))

bind = [_config.metrics_listen.address]
workers = 1
worker_class = "sync"
timeout = 30
graceful_timeout = 10
limit_request_line = 1024
limit_request_fields = 30
accesslog = None  # a scrape every 15 s is not worth a log line
errorlog = "-"
proc_name = "jukics-metrics"
control_socket_disable = True
preload_app = False
