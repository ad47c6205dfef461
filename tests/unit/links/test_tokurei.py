"""F6 特例転入 at the 転入地 CS: 転出証明書情報 delivered by the prefecture to the peer-facing listener
(real mutual TLS on loopback), handed to 既存住基, claimed by the 特例転入 in the intake transaction
together with the F2 update, the 転入通知情報 delivered to the prefecture sim; unclaimed certificates
erased after the configured period."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from jukics.audit.chain import verify
from jukics.config import PeerConfig, parse_config
from jukics.domain.fields import TENNYU_NOTICE_ITEMS, TENSHUTSU_CERT_ITEMS
from jukics.links import protocol as p
from jukics.links.transport import PeerTransport
from jukics.service import Service, build_peer_app, run_purge
from jukics.sim.peers import parse_sim_config, start_peer
from jukics.sim.pki import make_lab_pki
from jukics.sim.residents import generate_residents, resident_intake_items
from jukics.sim.server import TlsWsgiServer, server_context
from jukics.store import db
from jukics.store.schema import audit_log, tenshutsu_certs

CODE = "142140"
KIZON = "kizon.lab.jukics.example"
BASIS = {"prefecture.update_notice": "住基法第30条の6", "tokurei.tennyu_notice": "住基法第24条の2"}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 20, 1, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"), {
        "cs1": ["cs1", "127.0.0.1"], "cs2": ["cs2"], "pref1": ["pref1", "127.0.0.1"]})


@pytest.fixture
def net(pki, tmp_path):
    leaf = pki.leaf("pref1")
    pref = start_peer(parse_sim_config({"sim": {
        "role": "prefecture", "name": "pref1", "sender_id": "pref-14", "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0", "cert_file": str(leaf.cert), "key_file": str(leaf.key),
        "ca_file": str(pki.ca), "database": str(tmp_path / "prefecture.sqlite"),
        "senders": {"cs1": f"cs-{CODE}"}, "national": {"url": "https://127.0.0.1:1", "peer_name": "nat1"}}}))
    clock = Clock()
    cs = pki.leaf("cs1")
    peer = {"url": pref.url, "cert_file": str(cs.cert), "key_file": str(cs.key), "trust_file": str(pki.ca),
            "peer_names": ["pref1"]}
    svc = Service(parse_config({
        "cs": {"municipality_code": CODE, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                   "client_ca_file": "/x/ca.crt", "allowed_clients": [KIZON]},
        "links": {"peers": {"prefecture": peer, "tokurei": peer}, "legal_basis": BASIS, "timeout_seconds": 5},
        "tokurei": {"unclaimed_days": 30},
        "peer_listener": {"allowed_peers": {"pref1": "pref-14"}},
    }), clock=clock)
    db.upgrade(svc.engine)
    app = build_peer_app(svc.config, service=svc, peer_names=lambda env: env.get("jukics.peer_names", []))
    listener = TlsWsgiServer(app, "127.0.0.1", 0, server_context(cs.cert, cs.key, pki.ca))
    listener.start()
    yield svc, pref, listener, clock
    listener.stop()
    pref.stop()


def from_peer(pki, listener, leaf: str = "pref1") -> PeerTransport:
    cert = pki.leaf(leaf)
    return PeerTransport(PeerConfig("inbound", f"https://127.0.0.1:{listener.port}", cert.cert, cert.key, pki.ca,
                                    ("cs1",)), timeout=5)


def newcomer() -> dict:
    """A synthetic resident whose history starts with a 転入, turned into a 特例転入."""
    for person in generate_residents(50, seed=5, municipality_code=CODE, today=dt.date(2026, 11, 1)):
        items = resident_intake_items(person)
        if items[0]["change_reason"] == "tennyu":
            return {**items[0], "change_reason": "tokurei_tennyu"}
    raise AssertionError("no 転入 among the synthetic residents")


def certificate(item: dict, cert_id: str = "T-0001", **changes: str) -> dict:
    cert = {"cert_id": cert_id, "juminhyo_code": item["juminhyo_code"], "name_kanji": item["name_kanji"],
            "name_kana": item["name_kana"], "birth_date": item["birth_date"], "sex": item["sex"],
            "my_number": item["my_number"], "address": item["previous_address"],
            "destination_address": item["address"], "planned_move_on": "2026-11-01",
            "from_municipality_code": "131016", "to_municipality_code": CODE}
    assert set(cert) == set(TENSHUTSU_CERT_ITEMS)
    return {**cert, **changes}


def deliver(t: PeerTransport, payloads: list[dict], first_seq: int = 1, sender: str = "pref-14",
            mtype: str = p.TENSHUTSU_CERT) -> tuple[int, dict]:
    envs = [p.Envelope(sender, "tokurei", first_seq + i, f"tokurei-{first_seq + i}", mtype, "住基法第24条の2",
                       p.utc_stamp(), body) for i, body in enumerate(payloads)]
    resp = t.post(p.messages_path("tokurei"), p.encode_batch(envs))
    return resp.status, json.loads(resp.body)


def drain(svc: Service) -> None:
    workers = svc.link_workers()
    for _ in range(50):
        if all(svc.link_source(w.link).outbox_pending(w.link) == [] for w in workers):
            return
        for w in workers:
            w.step()
    raise AssertionError("the links did not drain")


def actions(svc: Service) -> list[str]:
    with svc.engine.connect() as conn:
        return [r.action for r in conn.execute(select(audit_log.c.action).order_by(audit_log.c.seq))]


def test_tokurei_tennyu_end_to_end(pki, net):
    svc, pref, listener, _ = net
    item = newcomer()
    t = from_peer(pki, listener)
    status, body = deliver(t, [certificate(item)])
    assert status == 200 and [r["status"] for r in body["results"]] == ["ack"]
    assert deliver(t, [certificate(item)])[1]["results"][0]["status"] == "duplicate"  # the same seq again
    # the same certificate under a new seq (the prefecture re-relayed it): stored once
    assert deliver(t, [certificate(item)], first_seq=2)[1]["results"][0]["status"] == "duplicate"

    # handed to 既存住基
    notices = svc.card.notices(client=KIZON)
    assert [(n["kind"], n["ref"]) for n in notices] == [("tenshutsu_cert", "T-0001")]
    assert notices[0]["payload"] == certificate(item)
    with svc.engine.connect() as conn:
        row = conn.execute(select(tenshutsu_certs)).one()
    assert item["name_kanji"].encode() not in bytes(row.payload_ct)

    # 既存住基 registers the 特例転入: the F2 update and the 転入通知情報 are queued together
    before = svc.store.outbox_counts()
    answer = svc.intake.submit([item], client=KIZON)
    assert answer["applied"] == 1, answer
    after = svc.store.outbox_counts()
    assert after["prefecture"] - before["prefecture"] == 1 and after["tokurei"] == 1
    (notice,) = svc.tokurei.outbox_pending("tokurei")
    assert set(notice.payload) == set(TENNYU_NOTICE_ITEMS)
    assert notice.payload["cert_id"] == "T-0001" and notice.payload["from_municipality_code"] == "131016"
    assert notice.payload["moved_in_on"] == item["changed_on"] and notice.payload["address"] == item["address"]
    assert svc.tokurei.status()["claimed_unsent"] == 1

    drain(svc)
    got = pref.peer.store.received(f"cs-{CODE}", "tokurei")
    assert [r["juminhyo_code"] for r in got] == [item["juminhyo_code"]]
    assert pref.peer.store.received(f"cs-{CODE}", "prefecture")[-1]["change_reason"] == "tokurei_tennyu"
    with svc.engine.connect() as conn:
        row = conn.execute(select(tenshutsu_certs)).one()
    assert row.claimed_at and row.deleted_at and row.payload_ct is None and row.notice_ct is None
    assert {"tokurei.received", "tokurei.claimed", "link.deliver"} <= set(actions(svc))
    assert verify(svc.engine).ok


def test_a_tokurei_tennyu_without_a_certificate_sends_no_notice(pki, net):
    svc, _, _, _ = net
    assert svc.intake.submit([newcomer()], client=KIZON)["applied"] == 1
    assert svc.store.outbox_counts()["tokurei"] == 0 and svc.store.outbox_counts()["prefecture"] == 1
    assert "tokurei.unmatched" in actions(svc)


@pytest.mark.parametrize(("change", "code"), [
    ({"my_number": "123456789012"}, "E_ITEM_INVALID"),
    ({"to_municipality_code": "131016"}, "E_NOT_FOR_US"),
    ({"juminhyo_code": "123"}, "E_ITEM_INVALID"),
    ({"planned_move_on": "2026-02-30"}, "E_ITEM_INVALID"),
    ({"cert_id": "has space"}, "E_ITEM_INVALID"),
    ({"honseki": "東京都"}, "E_FIELD_NOT_ALLOWED"),
])
def test_bad_certificates_are_nacked_and_not_stored(pki, net, change, code):
    svc, _, listener, _ = net
    status, body = deliver(from_peer(pki, listener), [certificate(newcomer(), **change)])
    assert status == 200 and body["results"][0]["status"] == "nack" and body["results"][0]["code"] == code
    assert svc.tokurei.status()["waiting"] == 0 and svc.card.notices(client=KIZON) == []


def test_missing_item_and_wrong_type(pki, net):
    _, _, listener, _ = net
    cert = certificate(newcomer())
    del cert["sex"]
    t = from_peer(pki, listener)
    assert deliver(t, [cert])[1]["results"][0]["code"] == "E_FIELD_MISSING"
    assert deliver(t, [certificate(newcomer())], first_seq=2, mtype="update_notice")[1]["results"][0][
        "code"] == "E_UNKNOWN_TYPE"


def test_only_the_listed_peers_may_deliver(pki, net):
    svc, _, listener, _ = net
    status, body = deliver(from_peer(pki, listener, "cs2"), [certificate(newcomer())])
    assert status == 403 and body["code"] == "E_UNKNOWN_SENDER"
    status, body = deliver(from_peer(pki, listener), [certificate(newcomer())], sender="pref-13")
    assert status == 403 and body["code"] == "E_SENDER_MISMATCH"
    resp = from_peer(pki, listener).post("/v1/links/prefecture/messages", b"{}")
    assert resp.status == 404
    assert actions(svc).count("peer.refused") == 2 and svc.tokurei.status()["waiting"] == 0


def test_unclaimed_certificates_are_erased_after_the_period(pki, net):
    svc, _, listener, clock = net
    item = newcomer()
    assert deliver(from_peer(pki, listener), [certificate(item)])[1]["results"][0]["status"] == "ack"
    clock.now += dt.timedelta(days=29)
    assert run_purge(svc.config, clock=clock)["tenshutsu_unclaimed_deleted"] == 0
    clock.now += dt.timedelta(days=1)
    assert run_purge(svc.config, clock=clock, dry_run=True)["tenshutsu_unclaimed_deleted"] == 1
    assert run_purge(svc.config, clock=clock)["tenshutsu_unclaimed_deleted"] == 1
    assert svc.card.notices(client=KIZON) == []  # not fetched in time: gone with it
    assert svc.tokurei.status() == {"waiting": 0, "claimed_unsent": 0, "done": 0, "unclaimed_deleted": 1}
    # a late 特例転入 finds nothing to claim: no 転入通知 from an erased certificate
    assert svc.intake.submit([item], client=KIZON)["applied"] == 1
    assert svc.store.outbox_counts()["tokurei"] == 0


def test_peer_listener_config(tmp_path: Path):
    from jukics.config import ConfigError

    base = {"cs": {"municipality_code": CODE, "environment": "development"},
            "database": {"url": f"sqlite:///{tmp_path}/j.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "s")},
            "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x", "key_file": "/x", "client_ca_file": "/x",
                       "allowed_clients": [KIZON]}}
    with pytest.raises(ConfigError, match="allowed_peers"):
        parse_config({**base, "peer_listener": {"allowed_peers": {"pref1": 3}}})
    with pytest.raises(ConfigError, match="unclaimed_days"):
        parse_config({**base, "tokurei": {"unclaimed_days": 0}})


def test_the_prefecture_sim_relays_certificates_to_the_destination_cs(pki, net, tmp_path):
    svc, _, listener, _ = net
    leaf = pki.leaf("pref1")
    relay = start_peer(parse_sim_config({"sim": {
        "role": "prefecture", "name": "pref1", "sender_id": "pref-14", "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0", "cert_file": str(leaf.cert), "key_file": str(leaf.key),
        "ca_file": str(pki.ca), "database": str(tmp_path / "relay.sqlite"), "senders": {"cs1": f"cs-{CODE}"},
        "national": {"url": "https://127.0.0.1:1", "peer_name": "nat1"},
        "cs_endpoints": {CODE: {"url": f"https://127.0.0.1:{listener.port}", "peer_name": "cs1"}}}}))
    try:
        item = newcomer()
        results = relay.peer.relay_tenshutsu([certificate(item),
                                              certificate(item, "T-0002", to_municipality_code="131016")])
        assert [(r["cert_id"], r["status"]) for r in results] == [("T-0001", "ack"), ("T-0002", "refused")]
        assert results[1]["code"] == "E_NO_SUCH_CS"
        # the same certificate again goes under the next sequence and is a duplicate at the CS
        again = relay.peer.relay_tenshutsu([certificate(item)])[0]
        assert (again["seq"], again["status"]) == (2, "duplicate")
        assert relay.peer.state()["tenshutsu_relayed"] == 2
        assert svc.tokurei.status()["waiting"] == 1
    finally:
        relay.stop()
