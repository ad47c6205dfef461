"""F1 intake end to end through the Falcon app: real domain validation, real SQLite store, real audit.

Only the TLS layer is replaced (the client identity is injected); tests/integration covers gunicorn.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from falcon import testing

from jukics.api.identity import PeerIdentity
from jukics.audit.chain import verify
from jukics.config import parse_config
from jukics.service import Service, build_app
from jukics.sim.residents import generate_residents, generate_updates, make_invalid_variants, resident_intake_items
from jukics.store import db

KIZON = "kizon.lab.jukics.example"
TODAY = dt.date(2026, 11, 1)
CODE = "142140"


class FixedClock:
    def __call__(self) -> dt.datetime:
        return dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def service(tmp_path: Path) -> Service:
    config = parse_config(
        {
            "cs": {"municipality_code": CODE, "environment": "development"},
            "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
            "intake": {
                "listen": "127.0.0.1:8443",
                "cert_file": "/nonexistent/cs.crt",
                "key_file": "/nonexistent/cs.key",
                "client_ca_file": "/nonexistent/ca.crt",
                "allowed_clients": [KIZON],
            },
        }
    )
    svc = Service(config, clock=FixedClock())
    db.upgrade(svc.engine)
    return svc


@pytest.fixture
def client(service: Service) -> testing.TestClient:
    ident = PeerIdentity(dns_names=(KIZON,), common_name=None)
    return testing.TestClient(build_app(service.config, identity=lambda env: ident, service=service))


def residents(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return list(generate_residents(n, seed=seed, municipality_code=CODE, today=TODAY))


def history_items(people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for person in people for item in resident_intake_items(person)]


def post(client: testing.TestClient, items: list[Any]) -> testing.Result:
    # ensure_ascii: some invalid variants carry lone surrogates, which only escaped JSON can hold
    body = json.dumps({"items": items}, ensure_ascii=True)
    return client.simulate_post("/v1/intake/updates", body=body, content_type="application/json")


def test_load_retry_and_update(client, service):
    people = residents(120)
    items = history_items(people)
    r = post(client, items)
    assert r.status_code == 200, r.json["results"][:3]
    assert r.json["applied"] == len(items) and r.json["refused"] == 0
    stats = service.store.stats()
    assert stats["residents"] + stats["deleted"] == len(people)
    assert stats["versions"] == len(items)

    # Every stored record is exactly the generated one (decrypted back).
    for person in people[:20]:
        stored = service.store.get_current(person["juminhyo_code"])
        for key in ("name_kanji", "name_kana", "birth_date", "address", "my_number", "record_status"):
            assert stored[key] == person[key], key

    # A retried batch creates nothing twice.
    again = post(client, items)
    assert again.status_code == 200
    assert again.json["duplicate"] == len(items) and again.json["applied"] == 0
    assert service.store.stats() == stats

    # Further moves, births and deaths apply, old versions stay as history.
    updates = list(generate_updates(people, 150, seed=8, today=TODAY))
    r = post(client, updates)
    assert r.status_code == 200, [x for x in r.json["results"] if x["status"] != "applied"][:3]
    assert service.store.stats()["versions"] == len(items) + len(updates)
    assert verify(service.engine).ok


def test_outbox_gets_f2_and_fuhyo_for_each_applied_item(client, service):
    items = history_items(residents(10))
    assert post(client, items).status_code == 200
    f2 = service.store.outbox_pending("prefecture", limit=1000)
    fuhyo = service.store.outbox_pending("fuhyo", limit=1000)
    assert len(f2) == len(fuhyo) == len(items)
    assert [m.seq for m in f2] == sorted(m.seq for m in f2)
    payload = f2[0].payload if hasattr(f2[0], "payload") else f2[0].message
    assert set(payload) == {"juminhyo_code", "name_kanji", "birth_date", "sex", "address", "my_number",
                            "change_reason", "changed_on"}
    fuhyo_payload = fuhyo[0].payload if hasattr(fuhyo[0], "payload") else fuhyo[0].message
    assert "my_number" not in fuhyo_payload


def test_invalid_items_are_refused_with_their_code_and_audited(client, service):
    people = residents(5)
    valid = history_items(people)
    assert post(client, valid).status_code == 200
    before = service.store.stats()
    fresh = list(generate_updates(people, 20, seed=3, today=TODAY))
    variants = [v for item in fresh for v in make_invalid_variants(item)]
    assert len(variants) > 50
    r = post(client, [v.item for v in variants])
    assert r.status_code == 422
    for v, result in zip(variants, r.json["results"], strict=True):
        assert result["status"] == "refused", (v.code, result)
        assert result["code"] == v.code, (v.code, result)
    assert service.store.stats() == before
    report = verify(service.engine)
    assert report.ok and report.rows >= len(valid) + len(variants)


def test_mixed_batch_applies_the_valid_items(client, service):
    items = history_items(residents(3))
    bad = dict(items[0], honseki="東京都")  # 本籍 is not a field the CS may receive
    r = post(client, [*items, bad])
    assert r.status_code == 422
    statuses = [x["status"] for x in r.json["results"]]
    assert statuses == ["applied"] * len(items) + ["refused"]
    assert r.json["results"][-1]["code"] == "E_FIELD_NOT_ALLOWED"


def test_out_of_order_and_reused_request_id(client, service):
    people = residents(2)
    items = history_items(people)
    assert post(client, items).status_code == 200
    update = next(iter(generate_updates(people, 1, seed=5, today=TODAY)))
    skipped = dict(update, update_seq=update["update_seq"] + 1, request_id="skip-1")
    r = post(client, [skipped])
    assert r.json["results"][0]["code"] == "E_OUT_OF_ORDER"
    assert post(client, [update]).status_code == 200
    reused = dict(update, operator_id="someone-else")
    r = post(client, [reused])
    assert r.json["results"][0]["code"] == "E_REQUEST_ID_REUSED"


def test_no_personal_data_in_db_files_responses_or_logs(client, service, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    people = residents(30, seed=11)
    items = history_items(people)
    bodies = [post(client, items).text]
    variants = [v.item for item in items[:10] for v in make_invalid_variants(item)]
    bodies.append(post(client, variants).text)
    secrets = {str(p["my_number"]) for p in people} | {str(p["name_kanji"]) for p in people}
    secrets |= {str(p["address"]) for p in people}
    blobs = [path.read_bytes() for path in tmp_path.glob("jukics.db*")]
    assert blobs, "database files expected"
    haystacks = [*blobs, *(b.encode() for b in bodies), caplog.text.encode()]
    leaks = [s for s in secrets for h in haystacks if s.encode() in h]
    assert leaks == []
    # And the personal values really went in (the grep is not vacuous).
    assert service.store.get_current(people[0]["juminhyo_code"])["my_number"] == people[0]["my_number"]


def test_refused_requests_are_audited(service):
    app = build_app(service.config, identity=lambda env: None, service=service)
    c = testing.TestClient(app)
    r = c.simulate_post("/v1/intake/updates", body=json.dumps({"items": [{}]}), content_type="application/json")
    assert r.status_code == 403
    report = verify(service.engine)
    assert report.ok and report.rows == 1


def test_health_reports_database(client, service):
    r = client.simulate_get("/v1/health")
    assert r.status_code == 200 and r.json == {"status": "ok", "database": "ok"}


def test_juminhyo_code_change_moves_the_record_to_the_new_code(client, service):
    person = residents(1, seed=21)[0]
    items = resident_intake_items(person)
    assert post(client, items).status_code == 200
    old = person["juminhyo_code"]
    new = "9" + old[1:] if old[0] != "9" else "1" + old[1:]
    item = {
        "juminhyo_code": new,
        "previous_juminhyo_code": old,
        "change_reason": "juminhyo_code_henko",
        "changed_on": "2026-10-30",
        "request_id": "code-change-1",
        "operator_id": "op1",
        "terminal_id": "t1",
        "update_seq": len(items) + 1,
    }
    r = post(client, [item])
    assert r.status_code == 200, r.json
    moved = service.store.get_current(new)
    assert moved["my_number"] == person["my_number"]
    assert moved["previous_juminhyo_code"] == old
    assert service.store.get_current(old) is None
