"""The metrics listener's app and collectors: the scrape, the audit chain check, the TPM probe, the counters.

The process counters are checked in this process (prometheus-client's default registry, no
multiprocess mode) and, for the multiprocess sum, in child processes writing their own files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from jukics.api.identity import PeerIdentity
from jukics.api.metrics_app import (
    AuditChainCollector,
    MetricsApp,
    MultiProcessSum,
    TpmCollector,
    build_metrics_app,
)
from jukics.audit.chain import AuditEvent
from jukics.config import parse_config
from jukics.metrics import code_label, peer_label
from jukics.service import Service, build_app
from jukics.sim.residents import generate_residents, make_invalid_variants, resident_intake_items
from jukics.store import db
from jukics.store.schema import audit_log

ROOT = Path(__file__).resolve().parents[3]
KIZON = "kizon.lab.jukics.example"
CODE = "142140"
TODAY = dt.date(2026, 11, 1)


class FixedClock:
    def __call__(self) -> dt.datetime:
        return dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def service(tmp_path: Path) -> Service:
    config = parse_config({
        "cs": {"municipality_code": CODE, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/nonexistent/cs.crt", "key_file": "/nonexistent/cs.key",
                   "client_ca_file": "/nonexistent/ca.crt", "allowed_clients": [KIZON]},
    })
    svc = Service(config, clock=FixedClock())
    db.upgrade(svc.engine)
    return svc


def wsgi_get(app: Any, path: str = "/metrics", method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
    return got["status"], got["headers"], body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the app ------------------------------------------------------------------------------------

def test_app_serves_get_metrics_only(service):
    app = build_metrics_app(service.config, service=service, root=None)
    status, headers, body = wsgi_get(app)
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain; version=")
    got = samples(body.decode())
    assert got[("jukics_up", ())] == 1
    assert got[("jukics_audit_chain_ok", ())] == 1
    assert ("jukics_build_info", (("environment", "development"), ("keystore", "dev"),
                                  ("version", __import__("jukics").__version__))) in got
    assert not any(name == "jukics_tpm_up" for name, _ in got)  # the dev backend has no TPM
    assert wsgi_get(app, "/metrics", "HEAD")[2] == b""
    assert wsgi_get(app, "/metrics", "POST")[0].startswith("405")
    assert wsgi_get(app, "/")[0].startswith("404")
    assert wsgi_get(app, "/v1/intake/updates")[0].startswith("404")


def test_a_failing_collector_gives_500_not_half_a_scrape():
    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    registry = CollectorRegistry()
    registry.register(Broken())  # type: ignore[arg-type]
    assert wsgi_get(MetricsApp(registry))[0].startswith("500")


def test_link_metrics_from_the_database(service):
    with db.write_transaction(service.engine) as conn:
        conn.exec_driver_sql(
            "UPDATE link_status SET consecutive_failures = 2, delivered_total = 10, duplicates_total = 1, "
            "nacked_total = 3, auth_failures_total = 4 WHERE link = 'prefecture'")
    got = samples(wsgi_get(build_metrics_app(service.config, service=service, root=None))[2].decode())
    link = (("link", "prefecture"),)
    assert got[("jukics_link_delivered_total", link)] == 10
    assert got[("jukics_link_nacked_total", link)] == 3
    assert got[("jukics_link_auth_failures_total", link)] == 4
    assert got[("jukics_link_consecutive_failures", link)] == 2
    assert ("jukics_link_pending_messages", link) in got and ("jukics_link_oldest_pending_age_seconds", link) in got


# --- the audit chain -------------------------------------------------------------------------------

def _append(service: Service, n: int) -> None:
    for i in range(n):
        service.audit.append(AuditEvent(actor="test", terminal="t", action="test.event", purpose="test",
                                        query={"i": i}))


def test_audit_chain_is_verified_incrementally_and_a_break_is_sticky(service):
    chain = AuditChainCollector(service.engine, max_rows=7)
    _append(service, 5)
    s = chain.step()
    assert s["ok"] and s["verified_seq"] == s["head_seq"] == 5 and s["verified_at"] is not None
    _append(service, 20)
    s = chain.step()  # 7 rows per step: not caught up yet, still ok
    assert s["ok"] and s["verified_seq"] == 12
    while chain.step()["verified_seq"] != 25:
        pass
    # an edited record that was already verified: the last one is re-checked every scrape
    with service.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
        conn.execute(update(audit_log).where(audit_log.c.seq == 25).values(hash=b"\0" * 32))
    assert chain.step()["ok"] is False
    _append(service, 1)
    assert chain.step()["ok"] is False  # sticky
    got = samples(generate_latest(_registry(chain)).decode())
    assert got[("jukics_audit_chain_ok", ())] == 0


def test_audit_chain_detects_an_edited_new_record(service):
    chain = AuditChainCollector(service.engine)
    _append(service, 3)
    assert chain.step()["ok"]
    _append(service, 3)
    with service.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
        conn.execute(update(audit_log).where(audit_log.c.seq == 5).values(actor="someone else"))
    s = chain.step()
    assert s["ok"] is False and s["verified_seq"] == 4


def test_audit_chain_starts_at_the_latest_checkpoint(service):
    _append(service, 4)
    cp = service.audit.checkpoint(service.keystore)
    assert cp is not None
    _append(service, 2)
    chain = AuditChainCollector(service.engine)
    s = chain.step()
    assert s["ok"] and s["checkpoint_seq"] == cp.seq and s["verified_seq"] == 6
    got = samples(generate_latest(_registry(chain)).decode())
    assert got[("jukics_audit_checkpoint_seq", ())] == cp.seq
    assert got[("jukics_audit_chain_head_seq", ())] == 6


def _registry(*collectors: Any) -> CollectorRegistry:
    r = CollectorRegistry()
    for c in collectors:
        r.register(c)
    return r


# --- the TPM probe -------------------------------------------------------------------------------

def test_tpm_probe_is_cached_and_a_hung_tpm_is_down():
    calls = []
    now = [0.0]
    tpm = TpmCollector(lambda: calls.append(1) or {"usable": True, "in_lockout": False}, ttl=60, now=lambda: now[0])
    assert tpm.value() == (True, False) and tpm.value() == (True, False) and len(calls) == 1
    now[0] = 61
    tpm.value()
    assert len(calls) == 2

    release = threading.Event()
    hung = TpmCollector(lambda: release.wait(10) and {"usable": True}, timeout=0.2, ttl=0, now=time.monotonic)
    assert hung.value() == (False, False)
    assert hung.value() == (False, False)  # the first probe still runs: no second thread piles up
    release.set()

    failing = TpmCollector(lambda: (_ for _ in ()).throw(OSError("no tpm")), ttl=0)
    assert samples(generate_latest(_registry(failing)).decode())[("jukics_tpm_up", ())] == 0


# --- the process counters ---------------------------------------------------------------------------

def post(client: testing.TestClient, items: list[Any]) -> testing.Result:
    return client.simulate_post("/v1/intake/updates", body=json.dumps({"items": items}, ensure_ascii=True),
                                content_type="application/json")


def test_intake_counts_items_refusals_and_refused_identities(service):
    ident = {"peer": PeerIdentity(dns_names=(KIZON,), common_name=None)}
    client = testing.TestClient(build_app(service.config, identity=lambda env: ident["peer"], service=service))
    people = list(generate_residents(5, seed=3, municipality_code=CODE, today=TODAY))
    items = [i for p in people for i in resident_intake_items(p)]
    before = {r: counter("jukics_intake_items_total", result=r) for r in ("applied", "duplicate", "refused")}
    assert post(client, items).status_code == 200
    assert post(client, items[:2]).status_code == 200  # a retry: duplicates
    bad = dict(items[0], request_id="R-bad-1")
    del bad["name_kanji"]
    bad_code = post(client, [bad]).json["results"][0]["code"]
    assert counter("jukics_intake_items_total", result="applied") - before["applied"] == len(items)
    assert counter("jukics_intake_items_total", result="duplicate") - before["duplicate"] == 2
    assert counter("jukics_intake_items_total", result="refused") - before["refused"] == 1
    assert counter("jukics_intake_refusals_total", code=bad_code) >= 1

    req_before = counter("jukics_intake_requests_refused_total", code="E_BATCH_EMPTY")
    post(client, [])
    assert counter("jukics_intake_requests_refused_total", code="E_BATCH_EMPTY") - req_before == 1

    tls_before = counter("jukics_tls_auth_failures_total", listener="intake", peer="stranger.example")
    ident["peer"] = PeerIdentity(dns_names=("stranger.example",), common_name=None)
    assert post(client, items[:1]).status_code == 403
    assert counter("jukics_tls_auth_failures_total", listener="intake", peer="stranger.example") - tls_before == 1


def test_login_results_and_lockouts_are_counted(service):
    ops = service.operators
    ops.policy = type(ops.policy)(max_failures=2, lockout=dt.timedelta(minutes=15))
    ops.add("op0009", "Counter-Staff-2026", department="市民課", roles=["counter"],
            account_expires_on=dt.date(2027, 3, 31), actor="admin1")
    failed = counter("jukics_operator_logins_total", result="E_LOGIN_FAILED")
    locked = counter("jukics_operator_lockouts_total")
    ops.login("op0009", "wrong", "000000", terminal="t1")
    ops.login("op0009", "wrong", "000000", terminal="t1")  # the second failure locks
    ops.login("nobody", "wrong", "000000", terminal="t1")
    assert counter("jukics_operator_logins_total", result="E_LOGIN_FAILED") - failed == 2
    assert counter("jukics_operator_lockouts_total") - locked == 1
    assert counter("jukics_operator_logins_total", result="E_ACCOUNT_LOCKED") >= 1


def test_label_helpers_keep_personal_data_out():
    assert peer_label("kizon.lab.jukics.example") == "kizon.lab.jukics.example"
    assert peer_label("cs-142140") == "cs-142140"
    assert peer_label(None) == peer_label("") == "none"
    for bad in ("山田 太郎", "Taro Yamada", "taro@example.jp", "12345678901", "x" * 80, "a\nb", "jumin-123456789012"):
        assert peer_label(bad) == "other", bad
    assert code_label("E_FIELD_MISSING") == "E_FIELD_MISSING"
    assert code_label("山田") == code_label(None) == code_label("e_lower") == "other"


def test_no_personal_data_in_any_label_after_intake(service):
    """Synthetic residents, valid and invalid, go in; nothing of them comes out in a scrape."""
    client = testing.TestClient(build_app(service.config, identity=lambda env: PeerIdentity((KIZON,), None),
                                          service=service))
    people = list(generate_residents(30, seed=11, municipality_code=CODE, today=TODAY))
    items = [i for p in people for i in resident_intake_items(p)]
    post(client, items)
    variants = list(make_invalid_variants(items[0]))
    invalid = [v.item for v in variants]
    refused = post(client, invalid).json
    assert refused["refused"] == len(invalid) > 10
    scrape = generate_latest(REGISTRY).decode() + wsgi_get(
        build_metrics_app(service.config, service=service, root=None))[2].decode()
    needles = set()
    for p in people:
        for key in ("juminhyo_code", "my_number", "name_kanji", "name_kana", "address", "birth_date"):
            value = p.get(key)
            if isinstance(value, str) and len(value) >= 4:
                needles.add(value)
    for item in items + [v for v in invalid if isinstance(v, dict)]:
        if isinstance(item.get("request_id"), str) and len(item["request_id"]) >= 4:
            needles.add(item["request_id"])
    assert needles
    label_values = {v for family in text_string_to_metric_families(scrape) for s in family.samples
                    for v in s.labels.values()}
    leaked = {n for n in needles if any(n in v for v in label_values)}
    assert not leaked
    assert "jukics_intake_items_total" in scrape


# --- the multiprocess sum -------------------------------------------------------------------------------

CHILD = """
import sys
from jukics import metrics
for _ in range(int(sys.argv[1])):
    metrics.INTAKE_ITEMS.labels("applied").inc()
metrics.INTAKE_REFUSALS.labels("E_OUT_OF_ORDER").inc(int(sys.argv[2]))
"""


def test_counters_of_every_process_directory_are_summed(tmp_path):
    root = tmp_path / "metrics"
    for listener, applied, refused in (("intake", 3, 1), ("intake", 4, 0), ("peer", 5, 2)):
        (root / listener).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "app"), PROMETHEUS_MULTIPROC_DIR=str(root / listener))
        subprocess.run([sys.executable, "-c", CHILD, str(applied), str(refused)], env=env, check=True)
    got = samples(generate_latest(_registry(MultiProcessSum(root))).decode())
    assert got[("jukics_intake_items_total", (("result", "applied"),))] == 12
    assert got[("jukics_intake_refusals_total", (("code", "E_OUT_OF_ORDER"),))] == 3
    assert len(list((root / "intake").glob("*.db"))) == 2  # one file per process


def test_the_scrape_needs_no_key(service, monkeypatch):
    """A key store that cannot open (a TPM that is down) fails no scrape: only counts are read."""
    def no_key(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the key store must not be opened by a scrape")

    monkeypatch.setattr(type(service), "keystore", property(no_key))
    status, _, body = wsgi_get(build_metrics_app(service.config, service=service, root=None))
    assert status == "200 OK" and b"jukics_link_pending_messages" in body and b"jukics_audit_chain_ok 1.0" in body
