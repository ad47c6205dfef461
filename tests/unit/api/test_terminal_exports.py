"""POST/GET /v1/exports on the counter-terminal API: ExportService behind a session, the witness
authenticating in the same request; every refusal audited with a stable code, nothing on the medium."""

from __future__ import annotations

import hashlib
import json

import pyrage
import pytest
from falcon import testing
from sqlalchemy import select
from test_terminal_api import PASSWORD, Env, attr

from jukics.api.terminal_app import create_terminal_app
from jukics.audit.chain import verify
from jukics.auth.rbac import load_duties
from jukics.domain.fields import RECORD_ITEMS
from jukics.exports import ExportService
from jukics.store.schema import audit_log


class ExportEnv(Env):
    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path)
        self.identity = pyrage.x25519.Identity.generate()
        self.media = tmp_path / "media"
        self.media.mkdir()
        svc = self.svc
        self.exports = ExportService(svc.engine, self.ops, load_duties(None), svc.audit,
                                     recipients={"kenchou": [str(self.identity.to_public())]},
                                     residents=svc._export_residents, clock=self.clock)
        self.deps = type(self.deps)(**{**self.deps.__dict__, "exports": self.exports, "export_dir": self.media})
        self.client = testing.TestClient(create_terminal_app(self.deps))

    def witness(self, user: str, *, password: str = PASSWORD) -> dict:
        self.clock.tick(seconds=31)
        return {"user_id": user, "password": password, "totp": self.totp[user].at(self.clock.now)}

    def export(self, token: str, **body) -> testing.Result:
        return self.post("/v1/exports", {"dataset": "residents", "recipient": "kenchou", "media_id": "USB-0042",
                                         **body}, token)

    def refusals(self) -> list[tuple[str, str | None]]:
        with self.svc.engine.connect() as conn:
            return [(r.actor, r.code) for r in conn.execute(select(audit_log).where(
                audit_log.c.action.in_(("export.create", "terminal.refused")), audit_log.c.outcome == "refused"))]


@pytest.fixture
def xenv(tmp_path):
    e = ExportEnv(tmp_path)
    yield e
    e.svc.engine.dispose()


def test_export_with_witness_writes_the_encrypted_file_and_answers_no_data(xenv):
    boss = xenv.token("boss1")
    r = xenv.export(boss, witness=xenv.witness("clerk1"))
    assert r.status_code == 201, r.json
    body = r.json
    assert (body["dataset"], body["rows"], body["media_id"], body["requester"], body["witness"]) == (
        "residents", len(xenv.people), "USB-0042", "boss1", "clerk1")
    files = list(xenv.media.iterdir())
    assert [f.name for f in files] == [body["file"]]
    blob = files[0].read_bytes()
    assert body["sha256"] == hashlib.sha256(blob).hexdigest()
    p = xenv.people[0]
    assert attr(p, "name_kanji") not in json.dumps(body, ensure_ascii=False)  # the answer carries no data
    lines = [json.loads(x) for x in pyrage.decrypt(blob, [xenv.identity]).decode().splitlines()]
    assert attr(p, "juminhyo_code") in {x["juminhyo_code"] for x in lines}
    r = xenv.client.simulate_get("/v1/exports", headers={"Authorization": f"Bearer {boss}"})
    assert r.status_code == 200 and [x["sha256"] for x in r.json["exports"]] == [body["sha256"]]
    assert "path" not in r.json["exports"][0]
    assert verify(xenv.svc.engine).ok


@pytest.mark.parametrize(("requester", "witness", "code", "status"), [
    ("boss1", None, "E_EXPORT_NO_WITNESS", 400),
    ("boss1", "boss1", "E_EXPORT_WITNESS_SELF", 403),
    ("boss1", "bad:boss2", "E_EXPORT_WITNESS_FAILED", 403),
    ("boss1", "vend1", "E_EXPORT_WITNESS_FORBIDDEN", 403),
])
def test_witness_refusals_are_audited_and_write_nothing(xenv, requester, witness, code, status):
    token = xenv.token(requester)
    w = None
    if witness:
        w = xenv.witness(witness.removeprefix("bad:"))
        if witness.startswith("bad:"):
            w["password"] = "Wrong-Password-99"
    r = xenv.export(token, **({"witness": w} if w else {}))
    assert r.status_code == status and r.json["error"]["code"] == code, r.json
    assert xenv.refusals()[-1] == (requester, code)
    assert list(xenv.media.iterdir()) == [] and xenv.exports.list() == []


@pytest.mark.parametrize("user", ["clerk1", "vend1"])
def test_export_needs_the_export_permission(xenv, user):
    token = xenv.token(user)
    r = xenv.export(token, witness=xenv.witness("boss1"))
    assert r.status_code == 403 and r.json["error"]["code"] == "E_FORBIDDEN"
    assert xenv.events()[-1] == ("terminal.refused", "refused", "E_FORBIDDEN", user)
    r = xenv.client.simulate_get("/v1/exports", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert list(xenv.media.iterdir()) == []


def test_bad_export_requests(xenv):
    boss = xenv.token("boss1")
    for body, code in (({"recipient": "nobody"}, "E_EXPORT_RECIPIENT"), ({"media_id": "../etc"}, "E_EXPORT_MEDIA_ID"),
                       ({"dataset": "everything"}, "E_EXPORT_DATASET"), ({"dataset": "search"}, "E_EXPORT_DATASET")):
        r = xenv.export(boss, witness=xenv.witness("clerk1"), **body)
        assert r.json["error"]["code"] == code, (body, r.json)
        assert xenv.refusals()[-1] == ("boss1", code)
    r = xenv.export(boss, witness={"user_id": "clerk1"})
    assert r.status_code == 400 and r.json["error"]["code"] == "E_BODY_SHAPE"
    assert list(xenv.media.iterdir()) == []
    # the search data set: the given codes only
    code = attr(xenv.people[3], "juminhyo_code")
    r = xenv.export(boss, witness=xenv.witness("clerk1"), dataset="search", codes=[code])
    assert r.status_code == 201 and r.json["rows"] == 1, r.json
def test_residents_export_carries_every_record_item(xenv):
    boss = xenv.token("boss1")
    r = xenv.export(boss, witness=xenv.witness("clerk1"))
    assert r.status_code == 201, r.json
    blob = (xenv.media / r.json["file"]).read_bytes()
    first = json.loads(pyrage.decrypt(blob, [xenv.identity]).decode().splitlines()[0])
    assert set(first) == set(RECORD_ITEMS)  # not only the 8 F2 items
    code = first["juminhyo_code"]
    current = xenv.svc.store.get_current(code)
    assert first["name_kana"] == current["name_kana"] and first["became_resident_on"] == \
        current.get("became_resident_on")


