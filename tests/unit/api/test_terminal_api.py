"""The counter-terminal API with falcon.testing: a real store, operators, sessions, router and audit chain;
the terminal certificate identity is faked like the intake tests do. Every refused call is audited."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyotp
import pytest
from falcon import testing
from sqlalchemy import select

from jukics.api.identity import PeerIdentity
from jukics.api.terminal_app import TerminalDeps, create_terminal_app
from jukics.auth.operators import LoginPolicy, OperatorStore
from jukics.auth.sessions import SessionStore
from jukics.config import parse_config
from jukics.service import Service
from jukics.sim.residents import generate_residents, resident_intake_items
from jukics.store import db
from jukics.store.corrections import Corrections
from jukics.store.schema import audit_log, terminal_sessions

CODE = "142140"
KIZON = "kizon.lab.jukics.example"
T1 = "term-01.lab.jukics.example"
T2 = "term-02.lab.jukics.example"
PASSWORD = "Counter-Staff-2026"
PURPOSES = {"F5-counter": "窓口での本人確認", "F7-inquiry": "住民からの照会"}


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 0, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **kw: Any) -> None:
        self.now += dt.timedelta(**kw)


class Env:
    def __init__(self, tmp_path, rule: str = "strict") -> None:
        config = parse_config({
            "cs": {"municipality_code": CODE, "environment": "development"},
            "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
            "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
            "intake": {"listen": "127.0.0.1:8443", "cert_file": "/x/cs.crt", "key_file": "/x/cs.key",
                       "client_ca_file": "/x/ca.crt", "allowed_clients": [KIZON]},
        })
        self.clock = Clock()
        self.svc = Service(config)
        db.upgrade(self.svc.engine)
        people = list(generate_residents(30, seed=5, municipality_code=CODE, today=dt.date(2026, 11, 1)))
        items = [i for p in people for i in resident_intake_items(p)]
        assert self.svc.intake.submit(items, client=KIZON)["applied"] == len(items)
        self.people = people
        self.ops = OperatorStore(self.svc.engine, self.svc.store.cipher, self.svc.audit, issuer="jukics",
                                 policy=LoginPolicy(max_failures=3), clock=self.clock)
        self.totp: dict[str, pyotp.TOTP] = {}
        for user, roles in (("clerk1", ["counter"]), ("boss1", ["manager"]), ("boss2", ["manager"]),
                            ("vend1", ["vendor"])):
            e = self.ops.add(user, PASSWORD, department="市民課", roles=roles,
                             account_expires_on=dt.date(2027, 3, 31), actor="admin")
            self.totp[user] = pyotp.TOTP(e.totp_secret)
        self.sessions = SessionStore(self.svc.engine, idle=dt.timedelta(minutes=15), absolute=dt.timedelta(hours=8),
                                     clock=self.clock)
        router = self.svc.query_router
        router.search_rule = rule
        self.terminal: PeerIdentity | None = PeerIdentity((T1,), "term-01")
        self.deps = TerminalDeps(allowed_terminals=(T1, T2), identity=lambda env: self.terminal,
                                 operators=self.ops, sessions=self.sessions, duties=config.duties, router=router,
                                 audit=self.svc.audit, purposes=PURPOSES, result_cap=5,
                                 corrections=Corrections(self.svc.engine, self.svc.store, self.svc.intake,
                                                         self.svc.audit, clock=self.clock))
        self.client = testing.TestClient(create_terminal_app(self.deps))

    def login(self, user: str = "clerk1", *, password: str = PASSWORD, code: str | None = None) -> testing.Result:
        return self.client.simulate_post("/v1/sessions", json={
            "user_id": user, "password": password, "totp": code or self.totp[user].at(self.clock.now)})

    def token(self, user: str = "clerk1") -> str:
        r = self.login(user)
        assert r.status_code == 201, r.json
        self.clock.tick(seconds=31)  # the next login of anyone gets a fresh TOTP step
        return r.json["token"]

    def post(self, path: str, body: dict, token: str | None) -> testing.Result:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.simulate_post(path, json=body, headers=headers)

    def search(self, token: str | None, criteria: dict, purpose: str = "F7-inquiry", ack: Any = True):
        return self.post("/v1/searches", {"criteria": criteria, "purpose": purpose, "access_logged_ack": ack}, token)

    def events(self) -> list[tuple[str, str, str | None, str]]:
        with self.svc.engine.connect() as conn:
            return [(r.action, r.outcome, r.code, r.actor) for r in conn.execute(
                select(audit_log.c.action, audit_log.c.outcome, audit_log.c.code, audit_log.c.actor)
                .order_by(audit_log.c.seq))]


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.svc.engine.dispose()


def person(env: Env, i: int = 0) -> Any:
    return env.people[i]


def attr(p: Any, name: str) -> Any:
    return p[name] if isinstance(p, dict) else getattr(p, name)


def test_login_search_and_identity_check(env):
    token = env.token()
    with env.svc.engine.connect() as conn:
        stored = conn.execute(select(terminal_sessions.c.token_hash)).scalars().all()
    assert len(stored) == 1 and token.encode() not in stored[0]  # only a hash is kept
    p = person(env)
    r = env.post("/v1/identity-checks", {"juminhyo_code": attr(p, "juminhyo_code"), "purpose": "F5-counter",
                                         "access_logged_ack": True}, token)
    assert r.status_code == 200, r.json
    assert r.json["source"] == "local" and r.json["results"][0]["juminhyo_code"] == attr(p, "juminhyo_code")
    r = env.search(token, {"name_kana": attr(p, "name_kana"), "birth_date": str(attr(p, "birth_date"))})
    assert r.status_code == 200, r.json
    assert attr(p, "juminhyo_code") in {x["juminhyo_code"] for x in r.json["results"]}
    actions = [e[0] for e in env.events()]
    assert "query.identity_check" in actions and "query.search" in actions


def test_search_notice_lists_purposes(env):
    r = env.client.simulate_get("/v1/search-notice")
    assert r.status_code == 200 and "logged" in r.json["notice"]
    assert {p["code"] for p in r.json["purposes"]} == set(PURPOSES)


def test_unlisted_terminal_refused_and_audited(env):
    env.terminal = PeerIdentity(("rogue.example",), "rogue")
    r = env.login()
    assert r.status_code == 403 and r.json["error"]["code"] == "E_CLIENT_NOT_ALLOWED"
    assert env.events()[-1][:3] == ("terminal.refused", "refused", "E_CLIENT_NOT_ALLOWED")
    env.terminal = None
    assert env.client.simulate_get("/v1/search-notice").status_code == 403


def test_search_needs_session(env):
    r = env.search(None, {"juminhyo_code": "12345678901"})
    assert r.status_code == 401 and r.json["error"]["code"] == "E_SESSION_REQUIRED"
    r = env.search("forged-token", {"juminhyo_code": "12345678901"})
    assert r.status_code == 401
    assert env.events()[-1][:3] == ("terminal.refused", "refused", "E_SESSION_REQUIRED")


def test_token_from_another_terminal_refused(env):
    token = env.token()
    env.terminal = PeerIdentity((T2,), "term-02")
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.status_code == 403 and r.json["error"]["code"] == "E_SESSION_TERMINAL"
    assert env.events()[-1] == ("terminal.refused", "refused", "E_SESSION_TERMINAL", "clerk1")


def test_idle_and_absolute_expiry_and_logout(env):
    token = env.token()
    env.clock.tick(minutes=16)
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.json["error"]["code"] == "E_SESSION_EXPIRED"
    token = env.token()
    for _ in range(40):  # used every 14 minutes: the idle timeout never hits, the absolute one does
        env.clock.tick(minutes=14)
        r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
        if r.status_code != 200:
            break
    assert r.json["error"]["code"] == "E_SESSION_EXPIRED"
    token = env.token()
    assert env.client.simulate_delete("/v1/sessions", headers={"Authorization": f"Bearer {token}"}).status_code \
        == 204
    assert env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")}).status_code == 401
    assert ("operator.logout", "ok", None, "clerk1") in env.events()


def test_totp_replay_refused(env):
    code = env.totp["clerk1"].at(env.clock.now)
    assert env.login(code=code).status_code == 201
    r = env.login(code=code)
    assert r.status_code == 401 and r.json["error"]["code"] == "E_TOTP_REPLAY"
    assert env.events()[-1][:3] == ("operator.login", "refused", "E_TOTP_REPLAY")


def test_brute_force_locks_account(env):
    for _ in range(3):
        r = env.login(password="Wrong-Password-99")
    assert r.status_code == 403 and r.json["error"]["code"] == "E_ACCOUNT_LOCKED"
    r = env.login()  # the right password is refused while locked
    assert r.json["error"]["code"] == "E_ACCOUNT_LOCKED"
    ev = env.events()
    assert ("operator.locked", "refused", "E_ACCOUNT_LOCKED", "clerk1") in ev
    assert ev[-1][:3] == ("operator.login", "refused", "E_ACCOUNT_LOCKED")


def test_expired_password_and_account_refused(env):
    env.clock.tick(days=91)
    r = env.login()
    assert r.status_code == 403 and r.json["error"]["code"] == "E_PASSWORD_EXPIRED"
    env.clock.tick(days=200)
    r = env.login()
    assert r.json["error"]["code"] == "E_ACCOUNT_EXPIRED"
    assert [e[2] for e in env.events()[-2:]] == ["E_PASSWORD_EXPIRED", "E_ACCOUNT_EXPIRED"]


def test_vendor_gets_403_on_search_and_identity_check(env):
    token = env.token("vend1")
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.status_code == 403 and r.json["error"]["code"] == "E_FORBIDDEN"
    r = env.post("/v1/identity-checks", {"juminhyo_code": attr(person(env), "juminhyo_code"),
                                         "purpose": "F5-counter", "access_logged_ack": True}, token)
    assert r.status_code == 403
    assert env.events()[-1] == ("terminal.refused", "refused", "E_FORBIDDEN", "vend1")


def test_purpose_and_acknowledgement_required(env):
    token = env.token()
    crit = {"juminhyo_code": attr(person(env), "juminhyo_code")}
    r = env.search(token, crit, purpose="")
    assert r.status_code == 400 and r.json["error"]["code"] == "E_PURPOSE_REQUIRED"
    r = env.search(token, crit, purpose="not-in-table")
    assert r.json["error"]["code"] == "E_PURPOSE_REQUIRED"
    r = env.search(token, crit, ack=False)
    assert r.json["error"]["code"] == "E_ACCESS_NOT_ACKNOWLEDGED"
    r = env.search(token, crit, ack="yes")
    assert r.json["error"]["code"] == "E_ACCESS_NOT_ACKNOWLEDGED"
    assert [e[2] for e in env.events()[-4:]] == ["E_PURPOSE_REQUIRED", "E_PURPOSE_REQUIRED",
                                                "E_ACCESS_NOT_ACKNOWLEDGED", "E_ACCESS_NOT_ACKNOWLEDGED"]


@pytest.mark.parametrize("criteria", [
    {"name_kana": "やまだ たろう"},  # 氏名 alone
    {"sex": "1", "name_kana": "やまだ たろう"},  # 性別 + anything
    {"sex": "1", "birth_date": "1980-01-01"},
    {"address": "神奈川県伊勢原市田中1", "birth_date": "1980-01-01"},  # strict mode
    {},  # empty: never a dump
    {"name_kana": "*", "birth_date": "1980-01-01"},  # wildcard
])
def test_refused_search_criteria_audited(env, criteria):
    token = env.token()
    before = len(env.events())
    r = env.search(token, criteria)
    assert r.status_code == 400 and r.json["error"]["code"] == "E_SEARCH_CRITERIA", r.json
    new = env.events()[before:]
    assert len(new) == 1 and new[0][1] == "refused" and new[0][3] == "clerk1"


def test_two_of_four_mode_accepts_address_and_birth_date(tmp_path):
    e = Env(tmp_path, rule="two_of_four")
    try:
        token = e.token()
        r = e.search(token, {"address": "神奈川県伊勢原市田中1", "birth_date": "1980-01-01"})
        assert r.status_code == 200, r.json
        r = e.search(token, {"sex": "1", "birth_date": "1980-01-01"})
        assert r.status_code == 400
    finally:
        e.svc.engine.dispose()


def test_results_capped(env):
    token = env.token()
    # pretend the router found more than the cap: the API never returns more than result_cap rows
    from jukics.links.routing import QueryAnswer
    env.deps.router.search = lambda criteria, **kw: QueryAnswer("local", [{"juminhyo_code": str(i)}
                                                                           for i in range(9)])
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.status_code == 200 and r.json["found"] == 5 and r.json["truncated"] is True


def test_correction_dual_control(env):
    p = person(env)
    code = attr(p, "juminhyo_code")
    clerk = env.token("clerk1")
    r = env.post("/v1/corrections", {"juminhyo_code": code, "changes": {"name_kanji": "訂正\u3000太郎"},
                                     "reason": "窓口での申出により誤記を訂正"}, clerk)
    assert r.status_code == 201, r.json
    rid = r.json["id"]
    assert env.svc.store.get_current(code)["name_kanji"] == attr(p, "name_kanji")  # pending: nothing applied
    # a counter clerk may not approve, not even someone else's request
    r = env.post(f"/v1/corrections/{rid}/approve", {}, clerk)
    assert r.status_code == 403 and r.json["error"]["code"] == "E_FORBIDDEN"
    boss = env.token("boss1")
    r = env.client.simulate_get(f"/v1/corrections/{rid}", headers={"Authorization": f"Bearer {boss}"})
    assert r.json["before"] == {"name_kanji": attr(p, "name_kanji")}
    assert r.json["after"] == {"name_kanji": "訂正\u3000太郎"}
    assert r.json["requested_by"] == "clerk1" and r.json["status"] == "pending"
    r = env.post(f"/v1/corrections/{rid}/approve", {}, boss)
    assert r.status_code == 200 and r.json["status"] == "applied", r.json
    assert env.svc.store.get_current(code)["name_kanji"] == "訂正\u3000太郎"
    r = env.client.simulate_get(f"/v1/corrections/{rid}", headers={"Authorization": f"Bearer {boss}"})
    assert r.json["decided_by"] == "boss1" and r.json["decided_at"] and r.json["status"] == "applied"
    r = env.post(f"/v1/corrections/{rid}/approve", {}, env.token("boss2"))
    assert r.status_code == 409 and r.json["error"]["code"] == "E_CORRECTION_STATE"
    actions = [e[0] for e in env.events()]
    assert "correction.request" in actions and "correction.approve" in actions
    assert any(a.startswith("intake.") for a in actions)  # applied through the normal intake path


def test_an_approval_interrupted_before_its_apply_is_finished_by_approving_again(env):
    from sqlalchemy import update

    from jukics.store.schema import correction_requests

    p = person(env, 3)
    code = attr(p, "juminhyo_code")
    r = env.post("/v1/corrections", {"juminhyo_code": code, "changes": {"name_kanji": "再開\u3000花子"},
                                     "reason": "誤記の訂正"}, env.token("clerk1"))
    rid = r.json["id"]
    # the process died after the decision was stored and before the apply: the row says "applying"
    with env.svc.engine.begin() as conn:
        conn.execute(update(correction_requests).where(correction_requests.c.id == rid)
                     .values(status="applying", decided_by="boss1", decided_at="2026-12-01T00:00:00Z"))
    assert env.svc.store.get_current(code)["name_kanji"] == attr(p, "name_kanji")
    # the requester still cannot finish it themselves
    r = env.post(f"/v1/corrections/{rid}/approve", {}, env.token("clerk1"))
    assert r.status_code == 403
    r = env.post(f"/v1/corrections/{rid}/approve", {}, env.token("boss2"))
    assert r.status_code == 200 and r.json["status"] == "applied", r.json
    assert env.svc.store.get_current(code)["name_kanji"] == "再開\u3000花子"
    r = env.client.simulate_get(f"/v1/corrections/{rid}", headers={"Authorization": f"Bearer {env.token('boss2')}"})
    assert r.json["decided_by"] == "boss1" and r.json["status"] == "applied"
    assert "correction.resume" in [e[0] for e in env.events()]
    # a second resume finds nothing to do
    r = env.post(f"/v1/corrections/{rid}/approve", {}, env.token("boss2"))
    assert r.status_code == 409 and r.json["error"]["code"] == "E_CORRECTION_STATE"


def test_self_approval_refused_and_audited(env):
    code = attr(person(env, 1), "juminhyo_code")
    boss = env.token("boss1")
    r = env.post("/v1/corrections", {"juminhyo_code": code, "kind": "deletion", "changes": {},
                                     "reason": "職権消除"}, boss)
    assert r.status_code == 201
    rid = r.json["id"]
    r = env.post(f"/v1/corrections/{rid}/approve", {}, boss)
    assert r.status_code == 403 and r.json["error"]["code"] == "E_SELF_APPROVAL"
    assert env.events()[-1] == ("correction.approve", "refused", "E_SELF_APPROVAL", "boss1")
    assert env.svc.store.get_current(code)["record_status"] == "current"
    r = env.post(f"/v1/corrections/{rid}/reject", {}, env.token("boss2"))
    assert r.status_code == 200 and r.json["status"] == "rejected"
    assert env.svc.store.get_current(code)["record_status"] == "current"


def test_deletion_applied_after_approval(env):
    code = attr(person(env, 2), "juminhyo_code")
    r = env.post("/v1/corrections", {"juminhyo_code": code, "kind": "deletion", "reason": "職権消除"},
                 env.token("clerk1"))
    r = env.post(f"/v1/corrections/{r.json['id']}/approve", {}, env.token("boss1"))
    assert r.json["status"] == "applied", r.json
    assert env.svc.store.get_current(code)["record_status"] == "deleted"


def test_correction_of_identifiers_refused(env):
    r = env.post("/v1/corrections", {"juminhyo_code": attr(person(env), "juminhyo_code"),
                                     "changes": {"my_number": "123456789018"}, "reason": "x"}, env.token("clerk1"))
    assert r.status_code == 400 and r.json["error"]["code"] == "E_CORRECTION_FIELDS"
    assert env.events()[-1][:3] == ("correction.request", "refused", "E_CORRECTION_FIELDS")


def view(env: Env, code: str, token: str | None, purpose: str = "F5-counter", ack: str = "true"):
    return env.client.simulate_get(f"/v1/residents/{code}", params={"purpose": purpose, "access_logged_ack": ack},
                                   headers={"Authorization": f"Bearer {token}"} if token else {})


def test_view_returns_the_whole_record_and_is_audited_without_personal_data(env):
    from jukics.domain.fields import RECORD_ITEMS

    p = person(env)
    code = attr(p, "juminhyo_code")
    r = view(env, code, env.token())
    assert r.status_code == 200, r.json
    rec = r.json["record"]
    assert set(rec) == set(RECORD_ITEMS) and rec["juminhyo_code"] == code
    assert rec["name_kana"] == attr(p, "name_kana") and rec["record_status"] == "current"
    with env.svc.engine.connect() as conn:
        row = conn.execute(select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).one()
    assert (row.action, row.outcome, row.actor, row.purpose, row.result_count) == (
        "query.view", "ok", "clerk1", "F5-counter", 1)
    stored = row.query + row.target_ids
    assert code not in stored and attr(p, "name_kanji") not in stored
    assert env.svc.audit.target_id(code) in row.target_ids


def test_view_refusals(env):
    token = env.token()
    code = attr(person(env), "juminhyo_code")
    from jukics.domain.identifiers import ProvisionalCheckDigitJuminhyoCodeValidator

    # the check-digit validator (synthetic codes are made valid under it)
    valid = env.deps.router.is_valid_code = ProvisionalCheckDigitJuminhyoCodeValidator().is_valid
    assert valid(code)
    bad_digit = next(code[:-1] + d for d in "0123456789" if not valid(code[:-1] + d))
    r = view(env, bad_digit, token)
    assert r.status_code == 400 and r.json["error"]["code"] == "E_SEARCH_CRITERIA"
    assert env.events()[-1] == ("query.view", "refused", "E_SEARCH_CRITERIA", "clerk1")
    assert view(env, "1234567890x", token).json["error"]["code"] == "E_SEARCH_CRITERIA"
    # a valid code nobody has
    unknown = next(c for c in (f"{n:010d}{d}" for n in range(10**9, 10**9 + 50) for d in "0123456789")
                   if valid(c) and env.svc.store.get_current(c) is None)
    r = view(env, unknown, token)
    assert r.status_code == 404 and r.json["error"]["code"] == "E_UNKNOWN_RESIDENT"
    assert env.events()[-1] == ("query.view", "refused", "E_UNKNOWN_RESIDENT", "clerk1")
    r = view(env, code, token, purpose="")
    assert r.status_code == 400 and r.json["error"]["code"] == "E_PURPOSE_REQUIRED"
    r = view(env, code, token, ack="false")
    assert r.json["error"]["code"] == "E_ACCESS_NOT_ACKNOWLEDGED"
    assert env.events()[-1][:3] == ("terminal.refused", "refused", "E_ACCESS_NOT_ACKNOWLEDGED")
    assert view(env, code, None).status_code == 401
    r = view(env, code, env.token("vend1"))
    assert r.status_code == 403 and r.json["error"]["code"] == "E_FORBIDDEN"
    assert env.events()[-1] == ("terminal.refused", "refused", "E_FORBIDDEN", "vend1")


def test_an_expired_session_row_is_deleted_although_the_request_is_refused(env):
    token = env.token()
    env.clock.tick(minutes=16)
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.json["error"]["code"] == "E_SESSION_EXPIRED"
    with env.svc.engine.connect() as conn:
        assert conn.execute(select(terminal_sessions)).all() == []  # the refusal did not roll the delete back
    r = env.search(token, {"juminhyo_code": attr(person(env), "juminhyo_code")})
    assert r.json["error"]["code"] == "E_SESSION_REQUIRED"  # the token is gone, not merely expired


def test_two_of_four_searches_the_local_store_by_address_and_birth_date(tmp_path):
    e = Env(tmp_path, rule="two_of_four")
    try:
        p = person(e, 4)
        token = e.token()
        r = e.search(token, {"address": attr(p, "address"), "birth_date": str(attr(p, "birth_date"))})
        assert r.status_code == 200, r.json
        assert r.json["source"] == "local" and "local" in r.json["asked"], r.json
        assert attr(p, "juminhyo_code") in {x["juminhyo_code"] for x in r.json["results"]}
        assert all(x["birth_date"] == str(attr(p, "birth_date")) and x["address"] == attr(p, "address")
                   for x in r.json["results"])
    finally:
        e.svc.engine.dispose()


def _spec() -> dict:
    from importlib import resources

    import yaml

    return yaml.safe_load(resources.files("jukics.api").joinpath("terminal.yaml").read_text(encoding="utf-8"))


def _routes(app) -> set[tuple[str, str]]:
    """(path template, METHOD) of every responder the falcon app routes."""
    out: set[tuple[str, str]] = set()

    def walk(nodes):
        for node in nodes:
            if node.resource is not None:
                for method, responder in node.method_map.items():
                    if getattr(responder, "__self__", None) is node.resource:  # not falcon's defaults
                        out.add((node.uri_template, method))
            walk(node.children)

    walk(app._router._roots)
    return out


def test_terminal_yaml_documents_every_route_and_only_routed_ones(tmp_path):
    from test_terminal_exports import ExportEnv

    e = ExportEnv(tmp_path)  # every optional route on (corrections, exports)
    try:
        routed = _routes(create_terminal_app(e.deps))
    finally:
        e.svc.engine.dispose()
    spec = _spec()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    assert routed == documented
    assert ("/v1/residents/{code}", "GET") in routed and ("/v1/exports", "POST") in routed


def test_terminal_yaml_error_codes_have_their_status_and_schemas_resolve():
    from jukics.api.errors import API_ERRORS

    spec = _spec()
    schemas = spec["components"]["schemas"]
    refs: list[str] = []

    def collect(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(spec)
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)
    enum = set(schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "requestBody" in op or method in ("get", "delete") or "parameters" in op, (path, method)
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
            for status, resp in op["responses"].items():
                for code in resp.get("x-error-codes", []):
                    assert code in enum and API_ERRORS[code][0].startswith(status), (path, method, code)


@pytest.mark.parametrize("change", ["disable", "revoke", "grant", "reset_totp"])
def test_an_account_change_ends_the_operators_open_sessions(env, change):
    # a session carries its login's roles: a disable, a role change or a new TOTP secret ends it at once
    token, other = env.token("clerk1"), env.token("boss1")
    p = person(env)
    criteria = {"name_kana": attr(p, "name_kana"), "birth_date": str(attr(p, "birth_date"))}
    assert env.search(token, criteria).status_code == 200
    if change == "disable":
        env.ops.disable("clerk1", actor="admin")
    elif change == "reset_totp":
        env.ops.reset_totp("clerk1", actor="admin")
    else:
        env.ops.set_roles("clerk1", **{change: ["counter"] if change == "revoke" else ["manager"]}, actor="admin")
    r = env.search(token, criteria)
    assert r.status_code == 401 and r.json["error"]["code"] == "E_SESSION_REQUIRED"
    assert env.search(other, criteria).status_code == 200  # another operator's session is untouched
    with env.svc.engine.connect() as conn:
        query = conn.execute(select(audit_log.c.query).where(audit_log.c.action.like("operator.%"))
                             .order_by(audit_log.c.seq.desc())).scalars().first()
    assert json.loads(query)["sessions_ended"] == 1  # in clear: a count, not personal data


def test_a_role_change_that_changes_nothing_keeps_the_session(env):
    token = env.token("clerk1")
    env.ops.set_roles("clerk1", grant=["counter"], actor="admin")  # already held
    p = person(env)
    assert env.search(token, {"name_kana": attr(p, "name_kana"),
                              "birth_date": str(attr(p, "birth_date"))}).status_code == 200
