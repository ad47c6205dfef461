"""The simulated prefecture and national servers, in process, with real TLS on loopback."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest

from jukics.config import PeerConfig
from jukics.domain.fields import F2_ITEMS, FUHYO_ITEMS
from jukics.links import protocol as p
from jukics.links.transport import LinkAuthError, PeerTransport
from jukics.links.worker import wait_for
from jukics.sim.peers import SimConfigError, parse_sim_config, start_peer
from jukics.sim.pki import make_lab_pki

SENDER = "cs-142140"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"), {
        "cs1": ["cs1"], "cs2": ["cs2"], "pref1": ["pref1", "127.0.0.1"], "nat1": ["nat1", "127.0.0.1"],
    }, bad_for="pref1")


def sim_config(pki, tmp: Path, role: str, national_url: str = "https://127.0.0.1:1") -> dict:
    name = "pref1" if role == "prefecture" else "nat1"
    leaf = pki.leaf(name)
    sim = {"role": role, "name": name, "sender_id": "pref-14" if role == "prefecture" else "nat",
           "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "cert_file": str(leaf.cert),
           "key_file": str(leaf.key), "ca_file": str(pki.ca), "database": str(tmp / f"{role}.sqlite"),
           "wrong_cert_file": str(pki.leaf("pref1-wrongca").cert),
           "wrong_key_file": str(pki.leaf("pref1-wrongca").key),
           "senders": {"cs1": SENDER, "cs2": "cs-131016", "pref1": "pref-14"}}
    if role == "prefecture":
        sim["national"] = {"url": national_url, "peer_name": "nat1"}
    return {"sim": sim}


@pytest.fixture
def network(pki, tmp_path):
    nat = start_peer(parse_sim_config(sim_config(pki, tmp_path, "national")))
    pref = start_peer(parse_sim_config(sim_config(pki, tmp_path, "prefecture", nat.url)))
    yield pref, nat
    pref.stop()
    nat.stop()


def client(pki, url: str, leaf: str = "cs1", names=("pref1",)) -> PeerTransport:
    cs = pki.leaf(leaf)
    return PeerTransport(PeerConfig("prefecture", url, cs.cert, cs.key, pki.ca, tuple(names)), timeout=5)


def record(i: int) -> dict:
    return {"juminhyo_code": f"{10000000000 + i}", "name_kanji": f"山田　太郎{i}", "birth_date": "1980-01-02",
            "sex": "1", "address": f"神奈川県伊勢原市田中{i}番地", "my_number": "123456789018",
            "change_reason": "tennyu", "changed_on": "2026-04-01"}


def envelopes(seqs, link="prefecture", sender=SENDER, payload=None, mtype=None):
    mtype = mtype or (p.UPDATE_NOTICE if link == "prefecture" else p.FUHYO_NOTICE)
    items = F2_ITEMS if link == "prefecture" else FUHYO_ITEMS
    return [p.Envelope(sender, link, s, f"{link}-{s}", mtype, "basis", p.utc_stamp(),
                       payload(s) if payload else {k: record(s)[k] for k in items}) for s in seqs]


def deliver(t: PeerTransport, envs, link="prefecture"):
    resp = t.post(p.messages_path(link), p.encode_batch(envs))
    return resp.status, json.loads(resp.body)


def test_store_dedupe_and_forward_to_national(network, pki):
    pref, nat = network
    t = client(pki, pref.url)
    status, body = deliver(t, envelopes(range(1, 11)))
    assert status == 200 and [r["status"] for r in body["results"]] == ["ack"] * 10
    # a replay of the same batch: duplicates, stored once
    status, body = deliver(t, envelopes(range(1, 11)))
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 10
    assert len(pref.peer.store.received(SENDER, "prefecture")) == 10
    assert pref.peer.state()["duplicates"] == 10
    assert wait_for(lambda: len(nat.peer.store.received("pref-14", "national")) == 10, 10)
    # the national knows where each record came from
    assert {o for o, _c, _r in nat.peer.store.current()} == {SENDER}


def test_whitelist_nacks(network, pki):
    pref, _ = network
    t = client(pki, pref.url)
    extra = envelopes([1], payload=lambda s: {**{k: record(s)[k] for k in F2_ITEMS}, "honseki": "東京都"})
    missing = envelopes([2], payload=lambda s: {k: record(s)[k] for k in F2_ITEMS if k != "sex"})
    wrong_type = envelopes([3], mtype=p.FUHYO_NOTICE)
    for envs, code in ((extra, p.E_FIELD_NOT_ALLOWED), (missing, p.E_FIELD_MISSING), (wrong_type, p.E_UNKNOWN_TYPE)):
        _, body = deliver(t, envs)
        assert body["results"][0]["status"] == "nack" and body["results"][0]["code"] == code
    # 附票 never with 個人番号
    fuhyo = envelopes([1], link="fuhyo", payload=lambda s: {k: record(s)[k] for k in F2_ITEMS})
    _, body = deliver(t, fuhyo, "fuhyo")
    assert body["results"][0] == {"seq": 1, "status": "nack", "code": p.E_FIELD_NOT_ALLOWED,
                                  "detail": "not allowed: my_number"}
    _, body = deliver(t, envelopes([2], link="fuhyo"), "fuhyo")
    assert body["results"][0]["status"] == "ack"
    assert pref.peer.store.received(SENDER, "prefecture") == []


def test_each_cs_is_identified_separately(network, pki):
    pref, _ = network
    status, body = deliver(client(pki, pref.url, "cs2"), envelopes([1]))
    assert status == 403 and body["code"] == p.E_SENDER_MISMATCH  # cs2's certificate, cs1's sender id
    status, body = deliver(client(pki, pref.url, "cs2"), envelopes([1], sender="cs-131016"))
    assert status == 200 and body["results"][0]["status"] == "ack"
    assert [h["sender"] for h in pref.peer.state()["heads"]] == ["cs-131016"]


def test_unknown_ca_is_refused_at_tls(network, pki, tmp_path):
    pref, _ = network
    # a client whose certificate comes from the stranger CA: the server refuses the handshake
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(pki.leaf("pref1-wrongca").cert), str(pki.leaf("pref1-wrongca").key))
    import socket

    with socket.create_connection(("127.0.0.1", pref.tls.port)) as raw, ctx.wrap_socket(raw) as tls:
        tls.settimeout(3)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            tls.sendall(b"POST / HTTP/1.1\r\n\r\n")
            assert tls.recv(100) == b""
            raise ConnectionResetError


def test_national_down_queues_then_drains_in_order(network, pki):
    pref, nat = network
    nat.set_faults({"down": True})
    t = client(pki, pref.url)
    for start in (1, 21):
        deliver(t, envelopes(range(start, start + 20)))
    assert wait_for(lambda: pref.peer.state()["forward_queue"] == 40, 5)
    nat.set_faults({"down": False})
    assert wait_for(lambda: pref.peer.state()["forward_queue"] == 0, 15)
    got = nat.peer.store.received("pref-14", "national")
    assert [int(m["juminhyo_code"]) - 10000000000 for m in got] == list(range(1, 41))


def test_forward_twice_is_deduped_by_national(network, pki):
    pref, nat = network
    pref.set_faults({"forward_twice": True})
    deliver(client(pki, pref.url), envelopes(range(1, 6)))
    assert wait_for(lambda: pref.peer.state()["forward_queue"] == 0, 10)
    assert len(nat.peer.store.received("pref-14", "national")) == 5
    assert nat.peer.state()["duplicates"] == 5


def test_nack_storm_and_dropped_acks(network, pki):
    pref, _ = network
    t = client(pki, pref.url)
    pref.set_faults({"nack_rate": 0.5})
    _, body = deliver(t, envelopes(range(1, 101)))
    nacks = [r for r in body["results"] if r["status"] == "nack"]
    assert 20 < len(nacks) < 80 and {r["code"] for r in nacks} == {"E_SIM_NACK"}
    pref.set_faults({"clear": True, "drop_ack_rate": 1.0})
    with pytest.raises((OSError, Exception)):
        deliver(t, envelopes(range(101, 111)))
    pref.set_faults({"clear": True})
    _, body = deliver(t, envelopes(range(101, 111)))
    assert [r["status"] for r in body["results"]] == ["duplicate"] * 10  # it had stored them


def test_down_wrong_cert_and_slow(network, pki):
    pref, _ = network
    t = client(pki, pref.url)
    pref.set_faults({"down": True})
    with pytest.raises(ConnectionRefusedError):
        deliver(t, envelopes([1]))
    pref.set_faults({"down": False, "wrong_cert": True})
    with pytest.raises(LinkAuthError, match="unable to get local issuer certificate"):
        deliver(client(pki, pref.url), envelopes([1]))
    pref.set_faults({"wrong_cert": False, "slow_seconds": 0.5})
    started = time.monotonic()
    status, _ = deliver(client(pki, pref.url), envelopes([1]))
    assert status == 200 and time.monotonic() - started >= 0.5


def query(t: PeerTransport, path: str, body: dict):
    resp = t.post(path, json.dumps({"sender": SENDER, "purpose": "P01", **body}).encode())
    return resp.status, json.loads(resp.body)


def test_search_key_rule_identity_check_and_consistency(network, pki):
    pref, nat = network
    t = client(pki, pref.url)
    deliver(t, envelopes(range(1, 21)))
    r = record(3)
    assert query(t, p.SEARCH_PATH, {"criteria": {"juminhyo_code": r["juminhyo_code"]}})[1]["results"][0][
        "name_kanji"] == r["name_kanji"]
    assert len(query(t, p.SEARCH_PATH, {"criteria": {"name_kanji": r["name_kanji"], "birth_date": r["birth_date"]}})[1][
        "results"]) == 1
    for bad in ({"name_kanji": r["name_kanji"]}, {"name_kanji": r["name_kanji"], "sex": "1"}, {}):
        status, body = query(t, p.SEARCH_PATH, {"criteria": bad})
        assert status == 400 and body["code"] == p.E_SEARCH_KEYS
    status, body = query(t, p.IDENTITY_CHECK_PATH, {"juminhyo_code": r["juminhyo_code"]})
    assert body["found"] and "my_number" not in body["record"]
    assert query(t, p.IDENTITY_CHECK_PATH, {"juminhyo_code": "99999999999"})[1] == {"found": False, "record": None}
    resp = t.post(p.SEARCH_PATH, json.dumps({"sender": SENDER, "criteria": {"juminhyo_code": "1"}}).encode())
    assert resp.status == 400 and json.loads(resp.body)["code"] == "E_PURPOSE_REQUIRED"

    # 整合性確認 at the national (after forwarding), with seeded mismatches
    assert wait_for(lambda: len(nat.peer.store.received("pref-14", "national")) == 20, 10)
    assert nat.peer.seed_mismatches(2, 1) == {"altered": 2, "dropped": 1}
    digests = [{"juminhyo_code": record(i)["juminhyo_code"], "digest": p.record_digest(record(i), F2_ITEMS)}
               for i in range(1, 22)]  # 21 is unknown to the peer
    n = client(pki, nat.url, names=("nat1",))
    status, body = query(n, p.consistency_path("prefecture"), {"as_of": p.utc_stamp(), "records": digests})
    assert status == 200 and body["checked"] == 21
    assert len(body["mismatched"]) == 2 and len(body["missing_at_peer"]) == 2  # the dropped one and no. 21
    assert body["unknown_to_sender"] == []


def test_card_endpoint_stores_unedited(network, pki):
    _, nat = network
    payload = {"送付先氏名": "山田　太郎", "郵便番号": "259-1100", "nested": {"z": 1, "a": [1, 2]}, "空": ""}
    env = [p.Envelope(SENDER, "sofusaki", 1, "sofusaki-1", "sofusaki", "basis", p.utc_stamp(), payload)]
    t = client(pki, nat.url, names=("nat1",))
    status, body = deliver(t, env, "sofusaki")
    assert status == 200 and body["results"][0]["status"] == "ack"
    stored = nat.peer.card_messages()
    assert stored[0]["payload"] == payload


def test_config_errors(pki, tmp_path):
    cfg = sim_config(pki, tmp_path, "prefecture")
    cfg["sim"].update(role="county", admin_listen="10.0.0.1:9480", senders={}, prefecture_code="99")
    cfg["sim"].pop("national")
    with pytest.raises(SimConfigError) as exc:
        parse_sim_config(cfg)
    text = "\n".join(exc.value.problems)
    for part in ("sim.role", "sim.admin_listen: must be a loopback", "sim.senders", "sim.prefecture_code"):
        assert part in text
