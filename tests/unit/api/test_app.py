"""The HTTP layer with a fake intake service: identity, body limits, error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from falcon import testing

from jukics.api.app import MAX_BATCH_ITEMS, AppDeps, create_app
from jukics.api.identity import PeerIdentity, identity_from_peercert

KIZON = "kizon.lab.jukics.example"


class FakeIntake:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.refusals: list[tuple[str | None, str]] = []

    def submit(self, items: list[Any], *, client: str) -> dict[str, Any]:
        self.batches.append(items)
        refused = sum(1 for i in items if i == "bad")
        return {"results": [], "applied": len(items) - refused, "duplicate": 0, "refused": refused}

    def refuse_request(self, *, client: str | None, code: str) -> None:
        self.refusals.append((client, code))


def make_client(identity: PeerIdentity | None, max_body: int = 4096) -> tuple[testing.TestClient, FakeIntake]:
    intake = FakeIntake()
    deps = AppDeps(
        allowed_intake_clients=(KIZON,),
        intake=intake,
        health=lambda: {"status": "ok"},
        identity=lambda environ: identity,
        max_body_bytes=max_body,
    )
    return testing.TestClient(create_app(deps)), intake


KIZON_ID = PeerIdentity(dns_names=(KIZON,), common_name="kizon")


def post(client: testing.TestClient, body: Any, **kw: Any) -> testing.Result:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.simulate_post("/v1/intake/updates", body=raw, content_type="application/json", **kw)


def test_health():
    client, _ = make_client(None)
    r = client.simulate_get("/v1/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_intake_accepts_allowed_identity():
    client, intake = make_client(KIZON_ID)
    r = post(client, {"items": [{"a": 1}], "batch_id": "b1"})
    assert r.status_code == 200
    assert r.json["applied"] == 1 and r.json["batch_id"] == "b1"
    assert intake.batches == [[{"a": 1}]]


def test_refused_item_gives_422_with_results():
    client, _ = make_client(KIZON_ID)
    r = post(client, {"items": ["bad", {}]})
    assert r.status_code == 422 and r.json["refused"] == 1


@pytest.mark.parametrize(
    "identity",
    [None, PeerIdentity(dns_names=("terminal01.lab.jukics.example",), common_name=KIZON)],
)
def test_intake_refuses_other_identities(identity):
    # A CN equal to the allowed name does not count when the certificate has SANs.
    client, intake = make_client(identity)
    r = post(client, {"items": [{}]})
    assert r.status_code == 403
    assert r.json["error"]["code"] == "E_CLIENT_NOT_ALLOWED"
    assert intake.batches == [] and intake.refusals[0][1] == "E_CLIENT_NOT_ALLOWED"


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"{not json", "E_JSON_MALFORMED", 400),
        (b"\xff\xfe", "E_JSON_MALFORMED", 400),
        ({"items": "x"}, "E_BODY_SHAPE", 400),
        ({"items": [], "extra": 1}, "E_BODY_SHAPE", 400),
        ([1, 2], "E_BODY_SHAPE", 400),
        ({"items": []}, "E_BATCH_EMPTY", 400),
        ({"items": [{}] * (MAX_BATCH_ITEMS + 1)}, "E_BODY_TOO_LARGE", 413),
        ("[" * 5000 + "]" * 5000, "E_BODY_TOO_LARGE", 413),
    ],
)
def test_bad_bodies_get_stable_codes_and_are_audited(body, code, status):
    client, intake = make_client(KIZON_ID, max_body=4096)
    r = post(client, body)
    assert r.status_code == status, r.text
    assert r.json["error"]["code"] == code
    assert intake.batches == []
    assert intake.refusals == [(KIZON, code)]


def test_batch_item_limit():
    client, _ = make_client(KIZON_ID, max_body=10_000_000)
    r = post(client, {"items": [{}] * (MAX_BATCH_ITEMS + 1)})
    assert r.status_code == 413 and r.json["error"]["code"] == "E_BATCH_TOO_LARGE"


def test_deep_nesting_is_malformed_not_500():
    client, _ = make_client(KIZON_ID, max_body=10_000_000)
    r = post(client, "[" * 100_000 + "]" * 100_000)
    assert r.status_code == 400 and r.json["error"]["code"] == "E_JSON_MALFORMED"


def test_wrong_content_type():
    client, _ = make_client(KIZON_ID)
    r = client.simulate_post("/v1/intake/updates", body="{}", content_type="text/plain")
    assert r.status_code == 415 and r.json["error"]["code"] == "E_CONTENT_TYPE"


def test_unknown_route_and_method_use_codes():
    client, _ = make_client(KIZON_ID)
    assert client.simulate_get("/v1/nothing").json["error"]["code"] == "E_NOT_FOUND"
    assert client.simulate_delete("/v1/intake/updates").json["error"]["code"] == "E_METHOD"


def test_identity_from_peercert_reads_san_and_cn():
    cert = {
        "subject": ((("commonName", "kizon"),),),
        "subjectAltName": (("DNS", KIZON), ("IP Address", "10.0.0.1")),
    }
    ident = identity_from_peercert(cert)
    assert ident == PeerIdentity(dns_names=(KIZON,), common_name="kizon")
    assert ident.matches([KIZON]) == KIZON
    assert identity_from_peercert(None) is None
    assert PeerIdentity(dns_names=(), common_name="x").matches(["x"]) == "x"


def test_openapi_documents_every_api_error_code():
    from importlib import resources

    import yaml

    from jukics.api.errors import API_ERRORS

    documented: set[str] = set()
    for name in ("intake.yaml", "terminal.yaml"):  # the terminal API documents its own codes
        spec = yaml.safe_load(resources.files("jukics.api").joinpath(name).read_text(encoding="utf-8"))
        documented |= set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
    assert documented == set(API_ERRORS)
