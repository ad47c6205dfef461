"""The service's /metrics end to end: gunicorn intake (2 workers) and the metrics listener, real processes.

Intake requests go over mutual TLS to both workers; the metrics listener sums the workers'
multiprocess files ($JUKICS_METRICS_DIR/intake) with the database collectors. A restart of the
intake listener starts its counters again from nothing (its own directory only).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ServiceProcesses, free_port, write_lab_config
from prometheus_client.parser import text_string_to_metric_families

from jukics.sim.residents import generate_residents, make_invalid_variants, resident_intake_items

ROOT = Path(__file__).resolve().parents[2]
KIZON = "kizon.lab.jukics.example"


@dataclass
class Stack:
    services: ServiceProcesses
    intake_port: int
    metrics_port: int
    pki: Path

    @property
    def work(self) -> Path:
        return self.services.work

    @property
    def config(self) -> Path:
        return self.services.config

    @property
    def env(self) -> dict[str, str]:
        return self.services.env


def scrape(stack: Stack) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", stack.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _ctx(stack: Stack, cert: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(stack.pki / "ca.crt"))
    ctx.load_cert_chain(str(stack.pki / f"{cert}.crt"), str(stack.pki / f"{cert}.key"))
    return ctx


def post(stack: Stack, cert: str, items: list) -> tuple[int, dict]:
    conn = http.client.HTTPSConnection("127.0.0.1", stack.intake_port, context=_ctx(stack, cert), timeout=20)
    try:
        conn.request("POST", "/v1/intake/updates", body=json.dumps({"items": items}, ensure_ascii=True).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, lab_pki: Path) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("metrics")
    intake_port, metrics_port = free_port(), free_port()
    config = write_lab_config(work, lab_pki, intake_port, workers=2, kizon=KIZON, extra=f"""
[metrics]
listen = "127.0.0.1:{metrics_port}"
""")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "app"), JUKICS_METRICS_DIR=str(work / "run-metrics"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    s = Stack(ServiceProcesses(work, config, env), intake_port, metrics_port, lab_pki)
    s.services.upgrade()
    s.services.start("intake", "serve")
    s.services.start("metrics", "metrics", "serve")
    s.services.wait_until(lambda: post(s, "kizon", [])[0] == 400, "the intake listener")
    s.services.wait_until(lambda: "jukics_up 1.0" in scrape(s), "the metrics listener")
    yield s
    s.services.stop_all()


def test_a_failed_handshake_is_counted_and_logged(stack):
    before = values(scrape(stack)).get(
        ("jukics_tls_auth_failures_total", (("listener", "intake"), ("peer", "unverified"))), 0.0)
    # no client certificate: the server refuses the handshake
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cafile=str(stack.pki / "ca.crt"))
    conn = http.client.HTTPSConnection("127.0.0.1", stack.intake_port, context=anonymous, timeout=20)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/v1/health")
        conn.getresponse().read()
    conn.close()
    key = ("jukics_tls_auth_failures_total", (("listener", "intake"), ("peer", "unverified")))
    stack.services.wait_until(lambda: values(scrape(stack)).get(key, 0.0) == before + 1, "the handshake count")
    assert "TLS handshake from 127.0.0.1 failed on the intake listener" in (stack.work / "intake.log").read_text()


def test_counts_add_up_across_workers_and_refusals_appear_by_code(stack):
    people = list(generate_residents(40, seed=5, municipality_code="142140", today=dt.date(2026, 11, 1)))
    first = [i for p in people[:20] for i in resident_intake_items(p)]
    second = [i for p in people[20:] for i in resident_intake_items(p)]
    items = first + second
    # Both workers take one batch, for certain: a sync worker serves one connection at a time, so the
    # worker holding a half-sent request is busy and the second batch goes to the other worker.
    held = http.client.HTTPSConnection("127.0.0.1", stack.intake_port, context=_ctx(stack, "kizon"), timeout=30)
    body = json.dumps({"items": first}, ensure_ascii=True).encode()
    held.putrequest("POST", "/v1/intake/updates")
    held.putheader("Content-Type", "application/json")
    held.putheader("Content-Length", str(len(body)))
    held.endheaders(body[:10])
    # (the TLS handshake above needed a worker: it is that worker's connection now)
    assert post(stack, "kizon", second)[0] == 200
    held.send(body[10:])
    assert held.getresponse().status == 200
    held.close()
    invalid = [v.item for v in make_invalid_variants(items[0])]
    status, body = post(stack, "kizon", invalid)
    assert status == 422 and body["refused"] == len(invalid)
    codes: dict[str, int] = {}
    for r in body["results"]:
        codes[r["code"]] = codes.get(r["code"], 0) + 1
    assert post(stack, "wrongname", items[:1])[0] == 403

    text = scrape(stack)
    got = values(text)
    files = list((stack.work / "run-metrics" / "intake").glob("counter_*.db"))
    assert len(files) >= 2, "both workers should have written counters"
    from prometheus_client.multiprocess import MultiProcessCollector

    per_worker = [sum(s.value for m in MultiProcessCollector.merge([str(f)]) for s in m.samples
                      if s.name == "jukics_intake_items_total" and s.labels == {"result": "applied"}) for f in files]
    assert sorted(per_worker)[-2:] == sorted([len(first), len(second)]), per_worker  # one batch each
    assert sum(per_worker) == len(items)
    assert got[("jukics_intake_items_total", (("result", "applied"),))] == len(items)
    assert got[("jukics_intake_items_total", (("result", "refused"),))] == len(invalid)
    for code, n in codes.items():
        assert got[("jukics_intake_refusals_total", (("code", code),))] == n, code
    assert got[("jukics_intake_requests_refused_total", (("code", "E_BATCH_EMPTY"),))] >= 1
    assert got[("jukics_intake_requests_refused_total", (("code", "E_CLIENT_NOT_ALLOWED"),))] == 1
    assert got[("jukics_tls_auth_failures_total",
                (("listener", "intake"), ("peer", "wrongname.lab.jukics.example")))] == 1
    # the database collectors: the outbox filled by the intake, the audit chain verified
    assert got[("jukics_audit_chain_ok", ())] == 1
    assert got[("jukics_audit_chain_verified_seq", ())] == got[("jukics_audit_chain_head_seq", ())] > 0
    assert got[("jukics_link_pending_messages", (("link", "prefecture"),))] == len(items)

    # no personal data in any label value
    labels = {v for f in text_string_to_metric_families(text) for s in f.samples for v in s.labels.values()}
    for p in people:
        for key in ("juminhyo_code", "my_number", "name_kanji", "name_kana", "address"):
            value = p.get(key)
            assert not (isinstance(value, str) and any(value in lv for lv in labels)), key


def test_a_restarted_listener_starts_its_counters_afresh(stack):
    before = values(scrape(stack))
    assert before[("jukics_intake_items_total", (("result", "applied"),))] > 0
    stack.services.stop("intake")
    stack.services.start("intake", "serve")
    stack.services.wait_until(lambda: post(stack, "kizon", [])[0] == 400, "the restarted intake listener")
    after = values(scrape(stack))
    # the old workers' files are gone: only the new run's request refusals count
    assert ("jukics_intake_items_total", (("result", "applied"),)) not in after
    assert after[("jukics_intake_requests_refused_total", (("code", "E_BATCH_EMPTY"),))] >= 1
    # the database collectors are unaffected by the restart
    assert after[("jukics_link_pending_messages", (("link", "prefecture"),))] == \
        before[("jukics_link_pending_messages", (("link", "prefecture"),))]
