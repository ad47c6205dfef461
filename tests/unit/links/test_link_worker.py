"""The delivery worker against a scripted peer: order, settle, NACK → dead letter, requeue, retries,
partial answers, lost answers (re-sent, deduped), legal basis, metrics. Real intake, real store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from sqlalchemy import select

from jukics.api.identity import PeerIdentity
from jukics.audit.chain import verify
from jukics.config import ConfigError, parse_config
from jukics.domain.fields import F2_ITEMS, FUHYO_ITEMS
from jukics.links.metrics import write_textfile
from jukics.links.protocol import Result, decode_batch, encode_results
from jukics.links.transport import Response
from jukics.links.worker import DELIVERED, FAILED, IDLE, Backoff, LinkWorker
from jukics.service import Service, build_app
from jukics.sim.residents import generate_residents, resident_intake_items
from jukics.store import db
from jukics.store.schema import audit_log

KIZON = "kizon.lab.jukics.example"
CODE = "142140"
BASIS = {"prefecture.update_notice": "住基法第30条の6", "fuhyo.fuhyo_notice": "住基法第30条の41"}


def make_service(tmp_path: Path, legal_basis: dict[str, str] | None = None) -> Service:
    peer = {"url": "https://127.0.0.1:9", "cert_file": "/x/c.pem", "key_file": "/x/k.pem",
            "trust_file": "/x/t.pem", "peer_names": ["pref1"]}
    config = parse_config({
        "cs": {"municipality_code": CODE, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                   "client_ca_file": "/x/ca.crt", "allowed_clients": [KIZON]},
        "links": {"peers": {"prefecture": peer, "fuhyo": peer},
                  "legal_basis": BASIS if legal_basis is None else legal_basis},
    })
    svc = Service(config, clock=lambda: dt.datetime.now(dt.UTC))
    db.upgrade(svc.engine)
    return svc


def load(svc: Service, n: int, seed: int = 7) -> list[dict[str, Any]]:
    people = list(generate_residents(n, seed=seed, municipality_code=CODE, today=dt.date(2026, 11, 1)))
    ident = PeerIdentity(dns_names=(KIZON,), common_name=None)
    client = testing.TestClient(build_app(svc.config, identity=lambda env: ident, service=svc))
    items: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    for person in [*people, None]:
        person_items = resident_intake_items(person) if person is not None else []
        if batch and (person is None or len(batch) + len(person_items) > 1000):  # whole residents per batch
            r = client.simulate_post("/v1/intake/updates", body=json.dumps({"items": batch}),
                                     content_type="application/json")
            assert r.status_code == 200 and r.json["applied"] == len(batch)
            items += batch
            batch = []
        batch += person_items
    return items


class ScriptedPeer:
    """A peer in memory: dedupes on (sender, link, seq) like a real one; faults from a script."""

    name = "pref1"

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, int], Result] = {}
        self.stored: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.nack: set[int] = set()
        self.posts = 0

    def post(self, path: str, body: bytes) -> Response:
        self.posts += 1
        action = self.script.pop(0) if self.script else "ok"
        if action == "down":
            raise ConnectionRefusedError(111, "Connection refused")
        if action == "503":
            return Response(503, b'{"code": "E_UNAVAILABLE", "message": "busy"}')
        if action == "malformed":
            return Response(200, b'{"results": [{"seq": 999999, "status": "ack"}]}')
        batch = decode_batch(body, link=path.split("/")[3])
        if action.startswith("partial:"):
            batch = batch[: int(action.split(":")[1])]
        results = []
        for e in batch:
            key = (e.sender, e.link, e.seq)
            if key in self.seen:
                results.append(Result(e.seq, "duplicate"))
                continue
            if e.seq in self.nack:
                res = Result(e.seq, "nack", "E_FIELD_NOT_ALLOWED", "honseki")
            else:
                res = Result(e.seq, "ack")
                self.stored.append({"link": e.link, "seq": e.seq, "type": e.type, "basis": e.legal_basis,
                                    "sender": e.sender, **e.payload})
            self.seen[key] = res
            results.append(res)
        if action == "lost":  # stored, but the answer never arrives: the worker must re-send
            raise TimeoutError("timed out")
        return Response(200, encode_results(results))

    def close(self) -> None:
        pass


def worker(svc: Service, peer: ScriptedPeer, link: str = "prefecture", batch: int = 50) -> LinkWorker:
    mtype = {"prefecture": "update_notice", "fuhyo": "fuhyo_notice"}[link]
    return LinkWorker(link, source=svc.store, state=svc.link_state, transport=peer, sender=svc.config.sender_id,
                      message_type=mtype, legal_basis=svc.config.links.legal_basis.get((link, mtype)),
                      batch_size=batch)


def drain(w: LinkWorker, limit: int = 1000) -> None:
    for _ in range(limit):
        if w.step().outcome == IDLE:
            return
    raise AssertionError("the link did not drain")


def actions(svc: Service) -> list[str]:
    with svc.engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.action).order_by(audit_log.c.seq)).scalars())


def test_delivers_everything_in_order_with_exactly_the_link_items(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 60)
    peer = ScriptedPeer()
    drain(worker(svc, peer))
    assert [m["seq"] for m in peer.stored] == list(range(1, len(items) + 1))
    assert all(set(m) - {"link", "seq", "type", "basis", "sender"} == set(F2_ITEMS) for m in peer.stored)
    assert {m["basis"] for m in peer.stored} == {"住基法第30条の6"}
    assert {m["sender"] for m in peer.stored} == {"cs-142140"}
    # order per resident = intake order
    codes = [i["juminhyo_code"] for i in items]
    assert [m["juminhyo_code"] for m in peer.stored] == codes
    assert svc.store.outbox_counts()["prefecture"] == 0
    status = {s["link"]: s for s in svc.link_state.status()}["prefecture"]
    assert status["delivered_total"] == len(items) and status["acked_seq"] == len(items)
    assert status["consecutive_failures"] == 0 and status["last_success_at"]
    assert "link.deliver" in actions(svc) and verify(svc.engine).ok


def test_fuhyo_never_carries_my_number(tmp_path):
    svc = make_service(tmp_path)
    load(svc, 10)
    peer = ScriptedPeer()
    drain(worker(svc, peer, "fuhyo"))
    assert peer.stored and all("my_number" not in m for m in peer.stored)
    assert all(set(m) - {"link", "seq", "type", "basis", "sender"} == set(FUHYO_ITEMS) for m in peer.stored)


def test_nack_goes_to_dead_letters_and_the_link_goes_on_then_requeue(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 30)
    peer = ScriptedPeer()
    peer.nack = {3, 7}
    drain(worker(svc, peer))
    assert [m["seq"] for m in peer.stored] == [s for s in range(1, len(items) + 1) if s not in (3, 7)]
    dead = svc.link_state.dead_letter_list("prefecture")
    assert [(d["seq"], d["code"]) for d in dead] == [(3, "E_FIELD_NOT_ALLOWED"), (7, "E_FIELD_NOT_ALLOWED")]
    assert actions(svc).count("link.nack") == 2
    # requeue: back at the end under new sequence numbers, delivered once the peer accepts
    with pytest.raises(LookupError, match="E_NO_DEAD_LETTER"):
        svc.link_state.requeue([dead[0]["id"], 424242], actor="op1", reason="fixed")
    assert len(svc.link_state.dead_letter_list()) == 2  # all or nothing
    moved = svc.link_state.requeue([d["id"] for d in dead], actor="op1", reason="peer whitelist fixed")
    assert [m["new_seq"] for m in moved] == [len(items) + 1, len(items) + 2]
    peer.nack = set()
    drain(worker(svc, peer))
    assert svc.link_state.dead_letter_list() == []
    resent = peer.stored[-2:]
    assert [m["juminhyo_code"] for m in resent] == [items[2]["juminhyo_code"], items[6]["juminhyo_code"]]
    assert "link.requeue" in actions(svc) and verify(svc.engine).ok


def test_peer_down_503_and_malformed_answers_change_nothing(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 10)
    peer = ScriptedPeer()
    peer.script = ["down", "503", "malformed"]
    w = worker(svc, peer)
    for _ in range(3):
        assert w.step().outcome == FAILED
        assert svc.store.outbox_counts()["prefecture"] == len(items)
    status = {s["link"]: s for s in svc.link_state.status()}["prefecture"]
    assert status["consecutive_failures"] == 3 and "result for seq" in status["last_error"]
    drain(w)
    assert len(peer.stored) == len(items)
    assert {s["link"]: s for s in svc.link_state.status()}["prefecture"]["consecutive_failures"] == 0


def test_partial_answer_settles_the_prefix_and_resends_the_rest(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 20)
    peer = ScriptedPeer()
    peer.script = ["partial:5"]
    w = worker(svc, peer, batch=len(items))
    assert w.step().acked == 5
    assert svc.store.outbox_counts()["prefecture"] == len(items) - 5
    drain(w)
    assert [m["seq"] for m in peer.stored] == list(range(1, len(items) + 1))


def test_lost_answer_is_resent_and_deduped_by_the_peer(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 20)
    peer = ScriptedPeer()
    peer.script = ["lost", "lost"]
    w = worker(svc, peer, batch=8)
    assert w.step().outcome == FAILED and w.step().outcome == FAILED
    result = w.step()
    assert result.outcome == DELIVERED and result.duplicates == 8
    drain(w)
    assert [m["seq"] for m in peer.stored] == list(range(1, len(items) + 1))  # each exactly once
    status = {s["link"]: s for s in svc.link_state.status()}["prefecture"]
    assert status["delivered_total"] == len(items) - 8 and status["duplicates_total"] == 8


def test_no_legal_basis_sends_nothing_and_logs_the_refusal(tmp_path):
    svc = make_service(tmp_path)
    with pytest.raises(ConfigError, match=r"no legal basis for \(fuhyo, fuhyo_notice\)"):
        parse_config({**svc.config.raw, "links": {**svc.config.raw["links"], "legal_basis": {}}})
    load(svc, 5)
    peer = ScriptedPeer()
    w = worker(svc, peer, "fuhyo")
    w.legal_basis = None  # as if the config allowed the peer but not the type
    drain(w)
    assert peer.posts == 0
    dead = svc.link_state.dead_letter_list("fuhyo")
    assert dead and {d["code"] for d in dead} == {"E_LEGAL_BASIS"}
    assert "link.nack" in actions(svc)


def test_backoff_is_capped_and_exponential():
    b = Backoff(initial=0.5, maximum=4.0)
    delays = [b.next_delay() for _ in range(8)]
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2 and 1.6 <= delays[2] <= 2.4
    assert all(d <= 4.0 * 1.2 for d in delays) and delays[-1] >= 4.0 * 0.8
    b.reset()
    assert b.next_delay() <= 0.6


def test_metrics_textfile(tmp_path):
    svc = make_service(tmp_path)
    items = load(svc, 10)
    peer = ScriptedPeer()
    peer.nack = {2}
    drain(worker(svc, peer))
    out = tmp_path / "jukics_links.prom"
    write_textfile(out, svc.link_state.status)
    text = out.read_text()
    assert f'jukics_link_delivered_total{{link="prefecture"}} {len(items) - 1}.0' in text
    assert 'jukics_link_nacked_total{link="prefecture"} 1.0' in text
    assert 'jukics_link_dead_letters{link="prefecture"} 1.0' in text
    assert f'jukics_link_pending_messages{{link="fuhyo"}} {len(items)}.0' in text
    assert 'jukics_link_oldest_pending_age_seconds{link="fuhyo"}' in text
    assert 'jukics_link_pending_messages{link="prefecture"} 0.0' in text


@pytest.mark.parametrize(("links", "problem"), [
    ({"peers": {"nowhere": {}}}, "links.peers.nowhere: unknown link"),
    ({"peers": {"prefecture": {"url": "http://x:1"}}}, "must be https://HOST:PORT"),
    ({"peers": {"prefecture": {"url": "https://x:1", "cert_file": "/a", "key_file": "/b", "trust_file": "/c"}},
      "legal_basis": BASIS}, "peer_names: the peer's expected names (SAN) must be pinned"),
    ({"peers": {"prefecture": {"url": "https://x:1", "identity": "nope"}}}, "is not a client identity"),
    ({"batch_size": 0}, "links.batch_size"),
    ({"legal_basis": {"prefecture": "x"}}, 'must be "destination.type"'),
    ({"surprise": 1}, "links.surprise: unknown key"),
])
def test_links_config_errors(tmp_path, links, problem):
    svc = make_service(tmp_path)
    with pytest.raises(ConfigError) as exc:
        parse_config({**svc.config.raw, "links": links})
    assert any(problem in p for p in exc.value.problems), exc.value.problems
