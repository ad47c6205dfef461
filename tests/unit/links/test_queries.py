"""F5 identity check, F7/F8 search routing and F4 整合性確認, against the in-process prefecture and
national sims over real mutual TLS on loopback. Real intake, real store, real delivery worker."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from jukics.audit.chain import verify
from jukics.cli.main import main as cli_main
from jukics.config import parse_config
from jukics.domain.fields import F2_ITEMS
from jukics.domain.places import prefecture_of_address, prefecture_of_code
from jukics.links import protocol as p
from jukics.links.routing import LOCAL, NATIONAL, PREFECTURE, QueryRefused, check_search_keys
from jukics.service import Service
from jukics.sim.peers import ORIGIN, parse_sim_config, start_peer
from jukics.sim.pki import make_lab_pki
from jukics.sim.residents import generate_residents, resident_intake_items
from jukics.store import db
from jukics.store.schema import audit_log, consistency_reports

CODE = "142140"
KIZON = "kizon.lab.jukics.example"
BASIS = {"prefecture.update_notice": "住基法第30条の6"}
OTHER_CS = "cs-131016"  # a 東京都 CS, known to the national sim only (through its prefecture)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_lab_pki(tmp_path_factory.mktemp("pki"), {
        "cs1": ["cs1"], "cs2": ["cs2"], "pref1": ["pref1", "127.0.0.1"], "nat1": ["nat1", "127.0.0.1"],
    }, bad_for="pref1")


def _sim(pki, tmp: Path, role: str, national_url: str = "https://127.0.0.1:1"):
    name = "pref1" if role == "prefecture" else "nat1"
    leaf = pki.leaf(name)
    sim = {"role": role, "name": name, "sender_id": "pref-14" if role == "prefecture" else "nat",
           "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "cert_file": str(leaf.cert),
           "key_file": str(leaf.key), "ca_file": str(pki.ca), "database": str(tmp / f"{role}.sqlite"),
           "senders": {"cs1": f"cs-{CODE}", "cs2": OTHER_CS, "pref1": "pref-14"}}
    if role == "prefecture":
        sim["national"] = {"url": national_url, "peer_name": "nat1"}
    return start_peer(parse_sim_config({"sim": sim}))


@pytest.fixture
def net(pki, tmp_path):
    nat = _sim(pki, tmp_path, "national")
    pref = _sim(pki, tmp_path, "prefecture", nat.url)
    yield pref, nat
    pref.stop()
    nat.stop()


def config_dict(pki, tmp_path: Path, url: str, names: list[str] | None = None) -> dict:
    cs = pki.leaf("cs1")
    peer = {"url": url, "cert_file": str(cs.cert), "key_file": str(cs.key), "trust_file": str(pki.ca),
            "peer_names": names or ["pref1"]}
    return {
        "cs": {"municipality_code": CODE, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                   "client_ca_file": "/x/ca.crt", "allowed_clients": [KIZON]},
        "links": {"peers": {"prefecture": peer}, "legal_basis": BASIS, "timeout_seconds": 5},
    }


def load(svc: Service, n: int) -> None:
    people = generate_residents(n, seed=11, municipality_code=CODE, today=dt.date(2026, 11, 1))
    items = [i for person in people for i in resident_intake_items(person)]
    answer = svc.intake.submit(items, client=KIZON)
    assert answer["applied"] == len(items), answer


def toml(data: dict, prefix: str = "") -> str:
    """Enough TOML for these configs (tables of str, int and lists of str)."""
    plain = [f"{json.dumps(k)} = {json.dumps(v, ensure_ascii=False)}"
             for k, v in data.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and plain else []) + plain
    for k, v in data.items():
        if isinstance(v, dict):
            name = f'{prefix}."{k}"' if prefix else k
            out.append(toml(v, name))
    return "\n".join(out)


def cs_service(pki, tmp_path: Path, url: str, names: list[str] | None = None) -> Service:
    svc = Service(parse_config(config_dict(pki, tmp_path, url, names)), clock=lambda: dt.datetime.now(dt.UTC))
    db.upgrade(svc.engine)
    return svc


def deliver_all(svc: Service) -> None:
    (worker,) = svc.link_workers()
    for _ in range(200):
        if svc.store.outbox_counts().get("prefecture", 0) == 0:
            return
        worker.step()
    raise AssertionError("the prefecture link did not drain")


def other_resident(i: int) -> dict:
    return {"juminhyo_code": f"2000000000{i}", "name_kanji": "東京　花子", "birth_date": "1990-05-06", "sex": "2",
            "address": f"東京都千代田区千代田{i}番", "my_number": "123456789018", "change_reason": "tennyu",
            "changed_on": "2026-04-01", ORIGIN: OTHER_CS}


def seed_national(pki, nat, n: int = 2) -> list[dict]:
    """Residents of another prefecture, at the national sim only (as 東京都's prefecture would send)."""
    from jukics.config import PeerConfig
    from jukics.links.transport import PeerTransport

    leaf = pki.leaf("pref1")
    t = PeerTransport(PeerConfig("national", nat.url, leaf.cert, leaf.key, pki.ca, ("nat1",)), timeout=5)
    people = [other_resident(i) for i in range(1, n + 1)]
    envs = [p.Envelope("pref-14", "national", 1000 + i, f"national-{1000 + i}", p.UPDATE_NOTICE, "basis",
                       p.utc_stamp(), r) for i, r in enumerate(people)]
    resp = t.post(p.messages_path("national"), p.encode_batch(envs))
    t.close()
    assert resp.status == 200 and all(r["status"] == "ack" for r in json.loads(resp.body)["results"])
    return people


def audit_rows(svc: Service, prefix: str) -> list:
    with svc.engine.connect() as conn:
        return [r for r in conn.execute(select(audit_log).order_by(audit_log.c.seq)) if r.action.startswith(prefix)]


def test_places():
    assert prefecture_of_code("142140") == "神奈川県" and prefecture_of_code("011002") == "北海道"
    assert prefecture_of_code("992140") is None
    assert prefecture_of_address("京都府京都市左京区") == "京都府"
    assert prefecture_of_address("東京都千代田区") == "東京都"
    assert prefecture_of_address("伊勢原市田中") is None


@pytest.mark.parametrize(("criteria", "rule"), [
    ({"name_kanji": "山田　太郎"}, "strict"),
    ({"name_kanji": "山田　太郎", "sex": "1"}, "strict"),
    ({"sex": "1", "birth_date": "1980-01-02", "address": "神奈川県"}, "two_of_four"),
    ({"birth_date": "1980-01-02", "address": "神奈川県伊勢原市"}, "strict"),
    ({"juminhyo_code": "12345678901", "name_kanji": "山田"}, "strict"),
    ({}, "strict"),
    ({"name_kanji": "  ", "birth_date": "1980-01-02"}, "strict"),
    ({"phone": "0463"}, "strict"),
])
def test_search_key_rule_refuses(criteria, rule):
    with pytest.raises(QueryRefused) as exc:
        check_search_keys(criteria, rule)
    assert exc.value.code == "E_SEARCH_KEYS"


def test_search_key_rule_accepts():
    assert check_search_keys({"juminhyo_code": " 12345678901 "}) == {"juminhyo_code": "12345678901"}
    assert check_search_keys({"name_kana": "ヤマダ", "birth_date": "1980-01-02", "address": ""})
    assert check_search_keys({"birth_date": "1980-01-02", "address": "神奈川県伊勢原市"}, "two_of_four")


def test_identity_check_and_search_are_routed_by_where_the_resident_lives(pki, net, tmp_path):
    pref, nat = net
    svc = cs_service(pki, tmp_path, pref.url)
    load(svc, 30)
    deliver_all(svc)
    own = next(r for r in (svc.store.get_current(c) for c in _codes(svc)) if r["record_status"] == "current")
    router = svc.query_router
    kwargs = {"purpose": "F5-counter", "actor": "op0001", "terminal": "term-01"}

    # own resident: answered locally, no peer asked; never 個人番号 in an answer
    a = router.identity_check(own["juminhyo_code"], **kwargs)
    assert (a.source, a.asked, len(a.results)) == (LOCAL, [LOCAL], 1)
    assert "my_number" not in a.results[0] and a.results[0]["name_kanji"] == own["name_kanji"]

    # a resident of this prefecture known to the prefecture only (another CS of 神奈川県 sent it)
    other_kanagawa = {k: v for k, v in own.items() if k in F2_ITEMS} | {"juminhyo_code": "30000000001"}
    pref.peer.deliver("prefecture", "cs-141003", [p.Envelope("cs-141003", "prefecture", 1, "prefecture-1",
                                                             p.UPDATE_NOTICE, "basis", p.utc_stamp(), other_kanagawa)])
    a = router.identity_check("30000000001", **kwargs)
    assert (a.source, a.asked) == (PREFECTURE, [LOCAL, PREFECTURE])

    # another prefecture's resident: the prefecture relays to the 全国サーバ
    tokyo = seed_national(pki, nat)
    a = router.identity_check(tokyo[0]["juminhyo_code"], **kwargs)
    assert (a.source, a.asked) == (NATIONAL, [LOCAL, PREFECTURE, NATIONAL])
    assert a.results[0]["address"] == tokyo[0]["address"] and "my_number" not in a.results[0]

    # nobody has it
    a = router.identity_check("99999999999", **kwargs)
    assert (a.source, a.results, a.errors) == (None, [], {})

    # search: ふりがな + 生年月日 finds own residents locally
    a = router.search({"name_kana": own["name_kana"], "birth_date": own["birth_date"]}, **kwargs)
    assert a.source == LOCAL and own["juminhyo_code"] in {r["juminhyo_code"] for r in a.results}
    # 漢字氏名 + 住所 in 東京都: straight to national (local and prefecture cannot hold them)
    a = router.search({"name_kanji": "東京　花子", "address": tokyo[1]["address"]}, **kwargs)
    assert (a.source, a.asked) == (NATIONAL, [NATIONAL]) and set(a.skipped) == {LOCAL, PREFECTURE}
    assert [r["juminhyo_code"] for r in a.results] == [tokyo[1]["juminhyo_code"]]
    # 漢字氏名 + 生年月日 (no ふりがな): the local file is skipped, the prefecture finds them
    a = router.search({"name_kanji": own["name_kanji"], "birth_date": own["birth_date"]}, **kwargs)
    assert a.source == PREFECTURE and LOCAL in a.skipped
    # 個人番号 of an own resident: local
    a = router.search({"my_number": own["my_number"]}, **kwargs)
    assert a.source == LOCAL and a.results[0]["juminhyo_code"] == own["juminhyo_code"]

    events = audit_rows(svc, "query.")
    assert len(events) == 8 and {e.purpose for e in events} == {"F5-counter"}
    assert all(e.actor == "op0001" and e.terminal == "term-01" for e in events)
    # the keys are in the log only as keyed hashes
    assert own["juminhyo_code"] not in json.dumps([e.query for e in events], ensure_ascii=False)
    assert own["name_kana"] not in json.dumps([e.query for e in events], ensure_ascii=False)
    assert json.loads(events[2].query)["source"] == NATIONAL
    assert verify(svc.engine).ok


def _codes(svc: Service) -> list[str]:
    return [r["juminhyo_code"] for r in svc.store.iter_current(("juminhyo_code",))]


def test_refused_queries_are_audited_and_run_nowhere(pki, net, tmp_path):
    pref, _ = net
    svc = cs_service(pki, tmp_path, pref.url)
    router = svc.query_router
    cases = [
        (lambda: router.search({"name_kanji": "山田　太郎"}, purpose="x", actor="op", terminal="t"), "E_SEARCH_KEYS"),
        (lambda: router.search({"name_kanji": "山田", "sex": "1"}, purpose="x", actor="op", terminal="t"),
         "E_SEARCH_KEYS"),
        (lambda: router.search({"juminhyo_code": "12345678901"}, purpose="", actor="op", terminal="t"),
         "E_PURPOSE_REQUIRED"),
        (lambda: router.identity_check("1234", purpose="x", actor="op", terminal="t"), "E_INVALID_JUMINHYO_CODE"),
    ]
    for call, code in cases:
        with pytest.raises(QueryRefused) as exc:
            call()
        assert exc.value.code == code
    events = audit_rows(svc, "query.")
    assert [(e.outcome, e.code) for e in events] == [("refused", c) for _, c in cases]
    assert pref.peer.store.counters().get("queries", 0) == 0


def test_a_peer_down_or_unauthenticated_is_an_error_not_an_empty_answer(pki, net, tmp_path):
    pref, _ = net
    svc = cs_service(pki, tmp_path, pref.url, names=["someone-else"])
    a = svc.query_router.identity_check("99999999999", purpose="x", actor="op", terminal="t")
    assert a.source is None and a.errors[PREFECTURE].startswith("E_LINK_PEER_IDENTITY")
    assert audit_rows(svc, "query.")[-1].outcome == "error"

    # the prefecture answers for itself but cannot reach the 全国サーバ: that tier is an error
    ok_svc = cs_service(pki, tmp_path / "c", pref.url)
    net[1].stop()
    a = ok_svc.query_router.identity_check("99999999999", purpose="x", actor="op", terminal="t")
    assert a.asked == [LOCAL, PREFECTURE, NATIONAL] and a.errors[NATIONAL].startswith("E_PEER_UNAVAILABLE")
    assert PREFECTURE not in a.errors

    svc2 = cs_service(pki, tmp_path / "b", "https://127.0.0.1:9")
    (tmp_path / "b").mkdir(exist_ok=True)
    a = svc2.query_router.search({"my_number": "123456789018"}, purpose="x", actor="op", terminal="t")
    assert a.errors[PREFECTURE].startswith("E_PEER_UNAVAILABLE") and a.source is None


def test_consistency_check_whole_file_with_seeded_differences(pki, net, tmp_path):
    pref, _ = net
    svc = cs_service(pki, tmp_path, pref.url)
    load(svc, 40)
    deliver_all(svc)
    total = len(_codes(svc))
    # parts smaller than the file: the peer answers per part and names the unknown ones at the end
    report = svc.consistency.run("prefecture", svc.prefecture_queries(), actor="op0001", part_size=7)
    assert (report.status, report.checked, report.counts) == ("ok", total, dict.fromkeys(
        ("missing_at_peer", "unknown_to_cs", "mismatched"), 0))

    assert pref.peer.seed_mismatches(3, 2) == {"altered": 3, "dropped": 2}
    stranger = {k: v for k, v in other_resident(9).items() if k in F2_ITEMS}
    pref.peer.deliver("prefecture", f"cs-{CODE}", [p.Envelope(f"cs-{CODE}", "prefecture", 10_000, "prefecture-x",
                                                             p.UPDATE_NOTICE, "basis", p.utc_stamp(), stranger)])
    report = svc.consistency.run("prefecture", svc.prefecture_queries(), actor="op0001", part_size=11)
    assert report.status == "differs" and report.checked == total
    assert report.counts == {"missing_at_peer": 2, "unknown_to_cs": 1, "mismatched": 3}
    assert report.detail["unknown_to_cs"] == [stranger["juminhyo_code"]]

    # the lists are stored encrypted; the counts in clear
    with svc.engine.connect() as conn:
        row = conn.execute(select(consistency_reports).where(consistency_reports.c.id == report.id)).one()
    assert row.mismatched == 3 and stranger["juminhyo_code"].encode() not in bytes(row.detail_ct)
    shown = svc.consistency.report(actor="op0002")
    assert shown.id == report.id and shown.detail == report.detail
    assert [e.action for e in audit_rows(svc, "consistency.")] == ["consistency.run"] * 2 + ["consistency.report"]
    assert [r.status for r in svc.consistency.reports()] == ["differs", "ok"]
    assert verify(svc.engine).ok


def test_consistency_against_an_unauthenticated_peer_fails_and_is_kept(pki, net, tmp_path):
    pref, _ = net
    svc = cs_service(pki, tmp_path, pref.url, names=["not-pref1"])
    load(svc, 3)
    report = svc.consistency.run("prefecture", svc.prefecture_queries(), actor="op")
    assert report.status == "failed" and report.error.startswith("E_LINK_PEER_IDENTITY") and report.checked == 0
    assert audit_rows(svc, "consistency.")[-1].outcome == "error"
    with pytest.raises(LookupError):
        svc.consistency.report(report.id + 1, actor=None)


def test_cli(pki, net, tmp_path, capsys):
    pref, _ = net
    cfg = tmp_path / "jukics.toml"
    cfg.write_text(toml(config_dict(pki, tmp_path, pref.url)) + "\n")
    svc = cs_service(pki, tmp_path, pref.url)
    load(svc, 5)
    deliver_all(svc)
    code = _codes(svc)[0]
    base = ["--config", str(cfg)]
    assert cli_main([*base, "query", "identity", code, "--purpose", "F5", "--operator", "op", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == LOCAL
    assert cli_main([*base, "query", "identity", "99999999999", "--purpose", "F5", "--operator", "op"]) == 3
    capsys.readouterr()
    assert cli_main([*base, "query", "search", "--name-kanji", "x", "--sex", "1", "--purpose", "F7",
                     "--operator", "op"]) == 2
    assert "E_SEARCH_KEYS" in capsys.readouterr().err
    assert cli_main([*base, "consistency", "report", "--operator", "op"]) == 2
    assert "E_NO_REPORT" in capsys.readouterr().err
    assert cli_main([*base, "consistency", "run", "--operator", "op"]) == 0
    capsys.readouterr()
    pref.peer.seed_mismatches(1, 0)
    assert cli_main([*base, "consistency", "run", "--operator", "op", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["mismatched"] == 1
    assert cli_main([*base, "consistency", "report", "--operator", "op", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["detail"]["mismatched"]) == 1
