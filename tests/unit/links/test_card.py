"""F9 送付先情報 (unedited, deleted one business day after sending) and F10 card events with the
突合結果 back to 既存住基: the real intake API (falcon.testing), the real delivery worker and the
in-process national sim (the card-management endpoint) over mutual TLS on loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from falcon import testing
from sqlalchemy import select

from jukics.api.identity import PeerIdentity
from jukics.audit.chain import verify
from jukics.config import ConfigError, parse_config
from jukics.domain.business_days import BusinessCalendar
from jukics.service import Service, build_app, run_purge
from jukics.sim.peers import parse_sim_config, start_peer
from jukics.sim.pki import make_lab_pki
from jukics.store import db
from jukics.store.schema import audit_log, card_messages

CODE = "142140"
KIZON = "kizon.lab.jukics.example"
SENDER = f"cs-{CODE}"
BASIS = {"sofusaki.sofusaki": "番号利用法第17条", "card.card_event": "番号利用法第17条"}
RESIDENT = "12345678906"  # 11 digits (digits-only validator)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"), {"cs1": ["cs1"], "nat1": ["nat1", "127.0.0.1"]})


@pytest.fixture
def nat(pki, tmp_path):
    leaf = pki.leaf("nat1")
    peer = start_peer(parse_sim_config({"sim": {
        "role": "national", "name": "nat1", "sender_id": "nat", "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0", "cert_file": str(leaf.cert), "key_file": str(leaf.key),
        "ca_file": str(pki.ca), "database": str(tmp_path / "national.sqlite"), "senders": {"cs1": SENDER}}}))
    yield peer
    peer.stop()


class Clock:
    def __init__(self, when: dt.datetime) -> None:
        self.now = when

    def __call__(self) -> dt.datetime:
        return self.now


def make(pki, tmp_path: Path, url: str, clock: Clock, extra: list[str] | None = None) -> Service:
    cs = pki.leaf("cs1")
    peer = {"url": url, "cert_file": str(cs.cert), "key_file": str(cs.key), "trust_file": str(pki.ca),
            "peer_names": ["nat1"]}
    config = parse_config({
        "cs": {"municipality_code": CODE, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                   "client_ca_file": "/x/ca.crt", "allowed_clients": [KIZON]},
        "links": {"peers": {"sofusaki": peer, "card": peer}, "legal_basis": BASIS, "timeout_seconds": 5},
        "calendar": {"extra_closed_days": extra or []},
    })
    svc = Service(config, clock=clock)
    db.upgrade(svc.engine)
    return svc


def client(svc: Service, name: str = KIZON) -> testing.TestClient:
    ident = PeerIdentity(dns_names=(name,), common_name=None)
    return testing.TestClient(build_app(svc.config, identity=lambda env: ident, service=svc))


def post(c: testing.TestClient, items: list) -> testing.Result:
    return c.simulate_post("/v1/intake/card", body=json.dumps({"items": items}),  # \uXXXX escapes
                           content_type="application/json")


def drain(svc: Service) -> None:
    workers = svc.link_workers()
    for _ in range(50):
        if all(svc.card.outbox_pending(w.link) == [] for w in workers):
            return
        for w in workers:
            w.step()
    raise AssertionError("the card links did not drain")


def sofusaki(i: int) -> dict:
    # 69 items in real life; synthetic here. Odd spacing and key order are part of "unedited".
    return {"送付先氏名": f"山田　太郎{i}", "送付先郵便番号": "2591100", "送付先住所": "神奈川県伊勢原市田中１番地",
            "備考": None, "z_last": "Ｚ", "a_first": " 前後に空白 "}


def event(kind: str, card_id: str = "C0001", code: str = RESIDENT, on: str = "2026-11-19") -> dict:
    return {"juminhyo_code": code, "kind": kind, "event_on": on, "card_id": card_id}


def test_business_days():
    cal = BusinessCalendar()
    assert cal.add_business_days(dt.date(2026, 11, 20), 1) == dt.date(2026, 11, 24)  # Sat, Sun, 勤労感謝の日
    assert cal.add_business_days(dt.date(2026, 11, 24), 1) == dt.date(2026, 11, 25)
    assert cal.holiday_name(dt.date(2026, 11, 23))
    assert cal.add_business_days(dt.date(2027, 5, 1), 1) == dt.date(2027, 5, 6)  # Golden Week, 振替休日
    closure = [dt.date(2026, 12, 29) + dt.timedelta(days=d) for d in range(6)]  # 年末年始 12/29-1/3
    assert BusinessCalendar(closure).add_business_days(dt.date(2026, 12, 28), 1) == dt.date(2027, 1, 4)
    with pytest.raises(ValueError):
        cal.add_business_days(dt.date(2026, 1, 5), 0)


def test_calendar_config_errors(pki, tmp_path):
    with pytest.raises(ConfigError, match="extra_closed_days"):
        make(pki, tmp_path, "https://127.0.0.1:9", Clock(dt.datetime.now(dt.UTC)), extra=["2026-13-01"])


def test_sofusaki_is_passed_unedited_and_deleted_one_business_day_after_sending(pki, nat, tmp_path):
    # Friday 2026-11-20 10:00 JST; the next business day is Tuesday 11-24 (11-23 is a holiday).
    clock = Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC))
    svc = make(pki, tmp_path, nat.url, clock)
    c = client(svc)
    items = [{"request_id": f"sofu-{i}", "type": "sofusaki", "payload": sofusaki(i)} for i in range(3)]
    r = post(c, items)
    assert r.status_code == 200 and (r.json["applied"], r.json["refused"]) == (3, 0)
    assert post(c, items[:1]).json["duplicate"] == 1  # a re-sent item is not a second message
    drain(svc)

    received = nat.peer.card_messages()
    assert [m["payload"] for m in received] == [sofusaki(i) for i in range(3)]  # unedited, in order
    expected = [hashlib.sha256(json.dumps(sofusaki(i), ensure_ascii=False, sort_keys=True,
                                          separators=(",", ":")).encode()).hexdigest() for i in range(3)]
    assert [m["sha256"] for m in received] == expected == [x["sha256"] for x in r.json["results"]]
    with svc.engine.connect() as conn:
        rows = conn.execute(select(card_messages).order_by(card_messages.c.id)).all()
    assert {row.delete_on for row in rows} == {"2026-11-24"} and all(row.sent_at for row in rows)

    clock.now = dt.datetime(2026, 11, 23, 14, 0, tzinfo=dt.UTC)  # Monday 23:00 JST, a holiday
    assert run_purge(svc.config, clock=clock)["sofusaki_deleted"] == 0
    clock.now = dt.datetime(2026, 11, 23, 15, 0, tzinfo=dt.UTC)  # Tuesday 00:00 JST
    assert run_purge(svc.config, clock=clock, dry_run=True)["sofusaki_deleted"] == 3
    assert run_purge(svc.config, clock=clock)["sofusaki_deleted"] == 3
    assert run_purge(svc.config, clock=clock)["sofusaki_deleted"] == 0
    with svc.engine.connect() as conn:
        assert all(row.payload_ct is None and row.deleted_at for row in conn.execute(select(card_messages)))
    assert svc.card.status()["sofusaki_deleted"] == 3

    # a replay after the deletion is still a duplicate: nothing is resurrected or sent again
    assert post(c, items).json["duplicate"] == 3
    assert svc.card.outbox_pending("sofusaki") == [] and len(nat.peer.card_messages()) == 3
    with svc.engine.connect() as conn:
        logged = " ".join(str(row.query) for row in conn.execute(select(audit_log)))
    assert "山田" not in logged and "伊勢原" not in logged
    assert verify(svc.engine).ok


def test_sofusaki_is_never_sent_before_its_ack_and_not_deleted_before_it_was_sent(pki, tmp_path):
    clock = Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC))
    svc = make(pki, tmp_path, "https://127.0.0.1:9", clock)  # the card system is unreachable
    assert post(client(svc), [{"request_id": "s-1", "type": "sofusaki", "payload": sofusaki(1)}]).status_code == 200
    (worker,) = [w for w in svc.link_workers() if w.link == "sofusaki"]
    assert worker.step().error == "connection refused"
    clock.now += dt.timedelta(days=30)
    assert run_purge(svc.config, clock=clock)["sofusaki_deleted"] == 0  # not sent: kept, still queued
    assert [m.payload for m in svc.card.outbox_pending("sofusaki")] == [sofusaki(1)]


@pytest.mark.parametrize(("item", "code"), [
    ({"request_id": "x", "type": "other", "payload": {}}, "E_CARD_TYPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": []}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {"a": {"nested": 1}}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {"a": 1}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {f"k{i}": "v" for i in range(101)}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {"a": "x" * 40000}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "x", "type": "sofusaki", "payload": {"a": "\ud800"}}, "E_SOFUSAKI_SHAPE"),
    ({"request_id": "", "type": "sofusaki", "payload": {"a": "b"}}, "E_META_INVALID"),
    ({"request_id": "has space", "type": "sofusaki", "payload": {"a": "b"}}, "E_META_INVALID"),
    ({"type": "sofusaki", "payload": {"a": "b"}, "extra": 1}, "E_TYPE"),
    ({"request_id": "x", "type": "card_event", "payload": event("lost")}, "E_CARD_EVENT_KIND"),
    ({"request_id": "x", "type": "card_event", "payload": event("kofu", code="1234")}, "E_JUMINHYO_CODE_FORMAT"),
    ({"request_id": "x", "type": "card_event", "payload": event("kofu", on="2026-02-30")}, "E_DATE_INVALID"),
    ({"request_id": "x", "type": "card_event", "payload": event("kofu", on="2027-01-01")}, "E_DATE_FUTURE"),
    ({"request_id": "x", "type": "card_event", "payload": event("kofu", card_id="c-1")}, "E_CARD_ID_INVALID"),
    ({"request_id": "x", "type": "card_event", "payload": {**event("kofu"), "my_number": "1"}},
     "E_FIELD_NOT_ALLOWED"),
    ({"request_id": "x", "type": "card_event", "payload": {"kind": "kofu"}}, "E_MISSING_FIELD"),
])
def test_bad_items_are_refused_with_a_stable_code_and_nothing_is_written(pki, tmp_path, item, code):
    svc = make(pki, tmp_path, "https://127.0.0.1:9", Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)))
    good = {"request_id": "ok-1", "type": "sofusaki", "payload": {"a": "b"}}
    r = post(client(svc), [good, item])
    assert r.status_code == 422 and r.json["results"][1]["status"] == "refused"
    assert r.json["results"][1]["code"] == code and r.json["applied"] == 1  # the good one is kept
    assert [m.seq for m in svc.card.outbox_pending("sofusaki")] == [1] and svc.card.outbox_pending("card") == []


def test_a_used_request_id_with_other_content_is_refused(pki, tmp_path):
    svc = make(pki, tmp_path, "https://127.0.0.1:9", Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)))
    c = client(svc)
    assert post(c, [{"request_id": "r1", "type": "sofusaki", "payload": {"a": "b"}}]).status_code == 200
    r = post(c, [{"request_id": "r1", "type": "sofusaki", "payload": {"a": "changed"}}])
    assert r.status_code == 422 and r.json["results"][0]["code"] == "E_REQUEST_ID_REUSED"
    assert len(svc.card.outbox_pending("sofusaki")) == 1


def test_only_kizon_may_call_and_the_body_shape_is_checked(pki, tmp_path):
    svc = make(pki, tmp_path, "https://127.0.0.1:9", Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)))
    stranger = client(svc, "terminal-1.lab.jukics.example")
    assert post(stranger, [{"request_id": "a", "type": "sofusaki", "payload": {"a": "b"}}]).status_code == 403
    assert stranger.simulate_get("/v1/kizon/notices").status_code == 403
    c = client(svc)
    assert post(c, []).json["error"]["code"] == "E_BATCH_EMPTY"
    r = c.simulate_post("/v1/intake/card", body='{"items": {}}', content_type="application/json")
    assert r.json["error"]["code"] == "E_BODY_SHAPE"
    r = c.simulate_post("/v1/kizon/notices/ack", body='{"through": "1"}', content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == "E_BODY_SHAPE"


def test_card_events_and_the_tottsugo_result_back_to_kizon(pki, nat, tmp_path):
    clock = Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC))
    svc = make(pki, tmp_path, nat.url, clock)
    c = client(svc)
    items = [
        {"request_id": "e1", "type": "card_event", "payload": event("kofu")},
        {"request_id": "e2", "type": "card_event", "payload": event("haishi")},
        {"request_id": "e3", "type": "card_event", "payload": event("haishi")},  # already revoked
        {"request_id": "e4", "type": "card_event", "payload": event("henkan", card_id="C9999")},  # unknown
        {"request_id": "e5", "type": "card_event", "payload": event("kofu", card_id="C0002", code="12345678914")},
        {"request_id": "e6", "type": "card_event", "payload": event("kaishu", card_id="C0002")},  # another's card
    ]
    assert post(c, items).json["applied"] == 6
    drain(svc)
    r = c.simulate_get("/v1/kizon/notices")
    notices = r.json["notices"]
    assert [n["ref"] for n in notices] == ["e1", "e2", "e3", "e4", "e5", "e6"]
    assert [n["payload"]["result"]["matched"] for n in notices] == [True, True, False, False, True, False]
    assert notices[2]["payload"]["result"]["reason"] == "the card is revoked"
    assert notices[0]["payload"]["kind"] == "kofu" and notices[0]["payload"]["juminhyo_code"] == RESIDENT
    # the events' payloads are gone once acknowledged; the notices until 既存住基 acknowledges them
    with svc.engine.connect() as conn:
        assert all(row.payload_ct is None for row in conn.execute(select(card_messages)))
    assert c.simulate_get("/v1/kizon/notices", params={"after": notices[3]["id"]}).json["notices"][0]["ref"] == "e5"
    ack = c.simulate_post("/v1/kizon/notices/ack", body=json.dumps({"through": notices[3]["id"]}),
                          content_type="application/json")
    assert ack.json == {"deleted": 4}
    assert [n["ref"] for n in c.simulate_get("/v1/kizon/notices").json["notices"]] == ["e5", "e6"]
    assert svc.card.status()["card_events_done"] == 6
    actions = [row.action for row in svc.engine.connect().execute(select(audit_log.c.action))]
    assert actions.count("card.intake") == 6 and "kizon.notices_ack" in actions and "link.deliver" in actions
    assert verify(svc.engine).ok


def test_a_lost_answer_keeps_the_tottsugo_result(pki, nat, tmp_path):
    """The card system handled the event but its answer was lost: the re-send is a duplicate and the
    earlier 突合結果 comes back with it, so 既存住基 still gets it (once)."""
    svc = make(pki, tmp_path, nat.url, Clock(dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)))
    assert post(client(svc), [{"request_id": "e1", "type": "card_event", "payload": event("kofu")}]).status_code == 200
    nat.set_faults({"drop_ack_rate": 1.0})
    (card_worker,) = [w for w in svc.link_workers() if w.link == "card"]
    assert card_worker.step().error is not None
    nat.set_faults({"drop_ack_rate": 0.0})
    result = card_worker.step()
    assert result.duplicates == 1
    notices = svc.card.notices(client="kizon")
    assert len(notices) == 1 and notices[0]["payload"]["result"]["matched"] is True
