"""The service's own counters (prometheus-client), one place for every metric a process counts.

Each process (gunicorn worker of any listener, the link worker, a CLI run) increments these; under
gunicorn they are written to $PROMETHEUS_MULTIPROC_DIR (prometheus-client multiprocess mode) and
the metrics listener adds them up at scrape time. Values that live in the database (outbox depth,
link counters, audit chain, certificates) are not counted here: collectors read them at scrape time.

Labels carry codes, listener, link and peer names, purposes and results only: never personal data,
never a user id (a label per operator would be an index of who works when).
"""

from __future__ import annotations

from prometheus_client import Counter

INTAKE_ITEMS = Counter("jukics_intake_items", "Intake items by result (applied, duplicate, refused)", ["result"])
INTAKE_REFUSALS = Counter("jukics_intake_refusals", "Intake items refused, by error code", ["code"])
TLS_AUTH_FAILURES = Counter("jukics_tls_auth_failures",
                            "Connections refused because the client failed authentication, by listener and peer",
                            ["listener", "peer"])
LOGINS = Counter("jukics_operator_logins", "Operator login attempts by result (ok or an error code)", ["result"])
LOCKOUTS = Counter("jukics_operator_lockouts", "Operator accounts locked after repeated failures")
SEARCHES = Counter("jukics_searches", "Resident searches and identity checks by purpose code and result",
                   ["kind", "purpose", "result"])
EXPORTS = Counter("jukics_exports", "Exports to media by result (ok or an error code)", ["result"])
CORRECTIONS = Counter("jukics_corrections", "Correction and deletion requests by step (requested, approved, "
                      "refused)", ["step"])
