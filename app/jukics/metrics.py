"""The service's own counters (prometheus-client), one place for every metric a process counts.

Each process (gunicorn worker of any listener, the link worker, a CLI run) increments these; under
gunicorn they are written to $PROMETHEUS_MULTIPROC_DIR (prometheus-client multiprocess mode) and
the metrics listener adds them up at scrape time. Values that live in the database (outbox depth,
link counters, audit chain, certificates) are not counted here: collectors read them at scrape time.

Labels carry codes, listener, link and peer names, purposes and results only: never personal data,
never a user id (a label per operator would be an index of who works when).
"""

from __future__ import annotations

import re

from prometheus_client import Counter

INTAKE_ITEMS = Counter("jukics_intake_items", "Intake items by result (applied, duplicate, refused)", ["result"])
INTAKE_REFUSALS = Counter("jukics_intake_refusals", "Intake items refused, by error code", ["code"])
# A whole request refused before any item was looked at (bad JSON, empty batch, ...): not an item.
INTAKE_REQUEST_REFUSALS = Counter("jukics_intake_requests_refused",
                                  "Intake requests refused before any item was looked at, by error code", ["code"])
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


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")
_LONG_DIGITS = re.compile(r"[0-9]{10,}")
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def peer_label(name: str | None) -> str:
    """A TLS identity as a label value: a host name (CA-verified SAN) or ``other`` / ``none``.

    Anything that is not shaped like a host name (a CN with spaces, a person's name, an e-mail address)
    becomes ``other``: the label must never carry personal data, and must stay low-cardinality.
    """
    if not name:
        return "none"
    # a long run of digits could be a 住民票コード (11) or a 個人番号 (12); a municipality code (6) is fine
    return name.lower() if _NAME.fullmatch(name) and not _LONG_DIGITS.search(name) else "other"


def code_label(code: object) -> str:
    """An error code as a label value (E_...); anything else becomes ``other``."""
    return code if isinstance(code, str) and _CODE.fullmatch(code) else "other"
