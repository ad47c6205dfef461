"""Fuzzing F1 intake: more than 10,000 generated requests against the real app and a real store.

The real Falcon app (``build_app``) with the real domain validation, the real SQLite store and the
real audit chain in a temporary folder; only the TLS layer is replaced (the 既存住基 identity is
injected). Hypothesis generates requests of every kind of bad input the intake API must survive:

- bodies that are not the documented shape: random JSON values, wrong top-level keys and types,
  empty and oversize batches, deep nesting, bodies larger than ``server.max_body_bytes``, bytes
  that are not UTF-8 (random bytes, valid JSON with bytes corrupted), a wrong content type;
- batches mixing SYNTHETIC valid items (new residents, further updates of loaded ones, re-sends),
  the broken copies of ``make_invalid_variants`` (each with the code it must get), items with random
  fields mutated (wrong types, random strings and numbers, huge strings, nested values, digits
  changed in identifiers, forbidden field names), and items that are not objects at all.

Every response is checked: never a 5xx; the body is JSON of the documented shape (an error object
with a registered API code and its documented status, or a result per item with
applied/duplicate/refused and, when refused, a registered code); a variant gets exactly its code.
After the run: every version in the store (decrypted) has a valid 個人番号 check digit, a 住民票コード
valid under the configured validator (the provisional check digit, so bad check digits must be
refused) and a 市町村コード this CS serves; the audit chain verifies and holds exactly one record per
item processed plus one per request refused as a whole.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from falcon import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jukics.api.app import MAX_BATCH_ITEMS
from jukics.api.errors import API_ERRORS
from jukics.api.identity import PeerIdentity
from jukics.audit.chain import verify
from jukics.config import parse_config
from jukics.domain import fields
from jukics.domain.errors import ERROR_CODES
from jukics.domain.identifiers import is_valid_municipality_code, is_valid_my_number
from jukics.domain.validate import Validators
from jukics.service import Service, build_app
from jukics.sim.residents import generate_residents, generate_updates, make_invalid_variants, resident_intake_items
from jukics.store import db
from jukics.store.repository import STORE_ERROR_CODES
from jukics.store.schema import audit_log, resident_versions

KIZON = "kizon.lab.jukics.example"
TODAY = dt.date(2026, 11, 1)
MUNICIPALITY = "142140"
VALIDATORS = Validators.from_names("provisional-mod11", frozenset({MUNICIPALITY}))
MAX_BODY = 256 * 1024  # small, so oversize bodies are cheap to generate
REQUESTS_PER_EXAMPLE = 5
EXAMPLES = 2_050  # x 5 = 10,250 requests
ITEM_CODES = set(ERROR_CODES) | set(STORE_ERROR_CODES)
FIELD_NAMES = sorted(fields.INTAKE_FIELDS)


class FixedClock:
    def __call__(self) -> dt.datetime:
        return dt.datetime(2026, 11, 1, 3, 0, tzinfo=dt.UTC)


# --- the pools of SYNTHETIC items ---------------------------------------------------------------

LOADED = list(generate_residents(40, seed=31, municipality_code=MUNICIPALITY, today=TODAY,
                                 juminhyo_validator=VALIDATORS.juminhyo))
LOADED_ITEMS = [item for person in LOADED for item in resident_intake_items(person)]
UPDATES = list(generate_updates(LOADED, 400, seed=32, today=TODAY, juminhyo_validator=VALIDATORS.juminhyo))
# New residents: their first item (出生/転入) applies once, a re-send is a duplicate.
NEWCOMERS = [resident_intake_items(p)[0] for p in generate_residents(
    3000, seed=33, municipality_code=MUNICIPALITY, today=TODAY, juminhyo_validator=VALIDATORS.juminhyo)]
VALID_POOL = NEWCOMERS + UPDATES
VARIANTS = [v for item in NEWCOMERS[:40] + UPDATES[:40] for v in make_invalid_variants(item, validators=VALIDATORS)]


# --- strategies ---------------------------------------------------------------------------------
# Built once, and pools are drawn by index: hypothesis labels a sampled_from by hashing its elements,
# which for thousands of dicts costs more than the request itself.


def pick(pool: list[Any]) -> st.SearchStrategy[Any]:
    # Uniform picks (hypothesis favours small and repeated integers, which would make most valid
    # items re-sends of the same few).
    return st.randoms(use_true_random=False).map(lambda r: pool[r.randrange(len(pool))])


def _json_values(max_leaves: int) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12), st.sampled_from(["", "0", "1", "123456789012", "2024-02-30", "令和元年5月1日"]),
        st.text(st.sampled_from("a1\udc80\ud800\u202e\x00"), max_size=6),  # lone surrogates, controls
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(st.text(max_size=8), children, max_size=4)),
        max_leaves=max_leaves,
    )


_JSON = {n: _json_values(n) for n in (2, 3, 4, 6, 10)}


def json_values(max_leaves: int) -> st.SearchStrategy[Any]:
    return _JSON[max_leaves]


def huge_string() -> st.SearchStrategy[str]:
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["亜", "あ", "1", "x", "\u3000", "\u202e"]),
                     st.integers(300, 8_000))


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789"), min_size=n, max_size=n)


@st.composite
def mutated_item(draw: st.DrawFn) -> dict[str, Any]:
    """A valid item with 1-3 random changes."""
    item = dict(draw(pick(VALID_POOL)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "drop", "extra", "identifier", "huge", "nest"]))
        name = draw(st.sampled_from(FIELD_NAMES))
        if op == "set":
            item[name] = draw(json_values(4))
        elif op == "drop":
            item.pop(name, None)
        elif op == "extra":
            item[draw(st.one_of(st.sampled_from(["honseki", "setainushi", "本籍", "name_kana_seion", ""]),
                                st.text(max_size=10)))] = draw(json_values(2))
        elif op == "identifier":
            target = draw(st.sampled_from(["juminhyo_code", "my_number", "municipality_code",
                                           "previous_juminhyo_code", "postal_code"]))
            length = {"juminhyo_code": 11, "my_number": 12, "municipality_code": 6,
                      "previous_juminhyo_code": 11, "postal_code": 7}[target]
            item[target] = draw(st.one_of(digits(length), digits(length - 1), digits(length + 1),
                                          st.sampled_from(["１" * length, "-" * length])))
        elif op == "huge":
            item[name] = draw(huge_string())
        else:
            item[name] = nested(draw(st.integers(10, 400)))
    return item


ITEMS = st.one_of(
    pick(VALID_POOL).map(lambda i: ("valid", dict(i))),
    pick(VARIANTS).map(lambda v: ("variant", v)),
    mutated_item().map(lambda i: ("mutated", i)),
    json_values(6).map(lambda v: ("random", v)),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values(3), max_size=8).map(lambda d: ("random", d)),
)


def encode(body: Any) -> bytes:
    # ensure_ascii: lone surrogates (which hypothesis text may hold) can only travel escaped
    return json.dumps(body, ensure_ascii=True).encode()


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One request: body bytes, content type, and what we know about its items."""
    kind = draw(st.sampled_from(["batch"] * 10 + ["random_json", "shape", "bytes", "corrupt", "deep", "oversize",
                                                  "content_type", "too_many", "empty"]))
    ctype = "application/json"
    tagged: list[tuple[str, Any]] = []
    if kind == "batch":
        tagged = draw(st.lists(ITEMS, min_size=1, max_size=6))
        body: Any = {"items": [t[1] if t[0] != "variant" else t[1].item for t in tagged]}
        if draw(st.booleans()):
            body["batch_id"] = draw(st.one_of(st.text(max_size=20), json_values(2)))
        raw = encode(body)
    elif kind == "random_json":
        raw = encode(draw(json_values(10)))
    elif kind == "shape":
        raw = encode(draw(st.one_of(
            st.dictionaries(st.sampled_from(["items", "batch_id", "item", "extra"]), json_values(3), max_size=3),
            st.builds(lambda v: {"items": v}, json_values(3).filter(lambda v: not isinstance(v, list))),
        )))
    elif kind == "bytes":
        raw = draw(st.binary(max_size=300))
    elif kind == "corrupt":
        good = bytearray(encode({"items": [draw(pick(VALID_POOL))]}))
        for _ in range(draw(st.integers(1, 4))):
            good[draw(st.integers(0, len(good) - 1))] = draw(st.sampled_from([0xFF, 0xC0, 0x80, 0xED, 0xF8, 0x00]))
        raw = bytes(good)
    elif kind == "deep":
        depth = draw(st.integers(900, 30_000))
        raw = (b'{"items": [' + b"[" * depth + b"]" * depth + b"]}") if draw(st.booleans()) else b"[" * depth
    elif kind == "oversize":
        raw = encode({"items": [{"name_kanji": "亜" * (MAX_BODY // 6 + draw(st.integers(1, 1000)))}]})
    elif kind == "content_type":
        ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "application/jsonx", ""]))
        raw = encode({"items": [draw(pick(VALID_POOL))]})
    elif kind == "too_many":
        raw = b'{"items": [' + b",".join([b"1"] * (MAX_BATCH_ITEMS + draw(st.integers(1, 5)))) + b"]}"
    else:
        raw = b'{"items": []}'
    return {"kind": kind, "raw": raw, "ctype": ctype, "tagged": tagged}


# --- the test -----------------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Service:
    config = parse_config({
        "cs": {"municipality_code": MUNICIPALITY, "environment": "development"},
        "database": {"url": f"sqlite:///{tmp_path}/jukics.db"},
        "keystore": {"backend": "dev", "dev_secret_file": str(tmp_path / "secret")},
        "intake": {"listen": "127.0.0.1:8443", "cert_file": "/nonexistent/cs.crt", "key_file": "/nonexistent/cs.key",
                   "client_ca_file": "/nonexistent/ca.crt", "allowed_clients": [KIZON]},
        "server": {"max_body_bytes": MAX_BODY},
        "validation": {"juminhyo_validator": "provisional-mod11"},
    })
    svc = Service(config, clock=FixedClock())
    db.upgrade(svc.engine)
    return svc


def check_response(req: dict[str, Any], result: testing.Result, tally: Counter) -> None:
    assert result.status_code < 500, (req["kind"], result.status_code, result.text[:500])
    body = json.loads(result.text)  # always JSON
    if isinstance(body.get("error"), dict):  # (a batch result has an integer "error" count instead)
        code = body["error"]["code"]
        assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
        assert code in API_ERRORS and result.status == API_ERRORS[code][0], (req["kind"], result.status, body)
        tally["audit_expected"] += 1  # a request refused as a whole leaves one record
        tally[f"error {code}"] += 1
        return
    assert result.status_code in (200, 422), result.status
    n = len(json.loads(req["raw"])["items"])
    results = body["results"]
    assert isinstance(results, list) and len(results) == n
    seen = Counter()
    for index, r in enumerate(results):
        assert r["index"] == index and r["status"] in ("applied", "duplicate", "refused"), r
        assert isinstance(r.get("message", ""), str) and isinstance(r.get("request_id", ""), str)
        assert isinstance(r.get("field", ""), str)
        if r["status"] == "refused":
            assert r["code"] in ITEM_CODES, r
        seen[r["status"]] += 1
    for status in ("applied", "duplicate", "refused"):
        assert body[status] == seen[status]
        tally[status] += seen[status]
    assert result.status_code == (422 if seen["refused"] else 200)
    if "batch_id" in body:
        assert isinstance(body["batch_id"], str)
    for (tag, value), r in zip(req["tagged"], results, strict=bool(req["tagged"])):
        if tag == "variant":
            assert r["status"] == "refused" and r["code"] == value.code, (value.code, value.field, r)
    tally["audit_expected"] += n


def test_intake_survives_10000_generated_requests(service: Service) -> None:
    ident = PeerIdentity(dns_names=(KIZON,), common_name=None)
    client = testing.TestClient(build_app(service.config, identity=lambda env: ident, service=service))
    tally: Counter = Counter()

    def post(raw: bytes, ctype: str) -> testing.Result:
        tally["requests"] += 1
        return client.simulate_post("/v1/intake/updates", body=raw, content_type=ctype or None)

    # The residents the updates refer to.
    loaded = post(encode({"items": LOADED_ITEMS}), "application/json")
    assert loaded.status_code == 200, loaded.text[:500]
    tally["audit_expected"] += len(LOADED_ITEMS)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(requests(), min_size=REQUESTS_PER_EXAMPLE, max_size=REQUESTS_PER_EXAMPLE))
    def run(reqs: list[dict[str, Any]]) -> None:
        for req in reqs:
            check_response(req, post(req["raw"], req["ctype"]), tally)

    run()
    print(f"\nintake fuzz: {tally['requests']} requests; items applied {tally['applied']}, duplicate "
          f"{tally['duplicate']}, refused {tally['refused']}; request errors "
          f"{ {k[6:]: v for k, v in sorted(tally.items()) if k.startswith('error ')} }")
    assert tally["requests"] >= 10_000
    assert tally["applied"] > 300 and tally["refused"] > 5_000  # the run exercised both sides

    # Zero accepted invalid identifiers: every stored version, decrypted.
    store = service.store
    with service.engine.connect() as conn:
        rows = conn.execute(select(resident_versions.c.code_hash, resident_versions.c.update_seq,
                                   resident_versions.c.record_ct, resident_versions.c.status,
                                   resident_versions.c.recorded_at)).all()
        audit_rows = conn.execute(select(audit_log.c.seq)).all()
    assert len(rows) == tally["applied"] + len(LOADED_ITEMS)
    for row in rows:
        record = store._decode(bytes(row.code_hash), row.update_seq, bytes(row.record_ct), row.status,
                               row.recorded_at)
        assert VALIDATORS.juminhyo.is_valid(record["juminhyo_code"])
        assert is_valid_my_number(record["my_number"])
        assert is_valid_municipality_code(record["municipality_code"])
        assert record["municipality_code"] in VALIDATORS.municipality_codes
        if record.get("previous_juminhyo_code") is not None:
            assert VALIDATORS.juminhyo.is_valid(record["previous_juminhyo_code"])

    # Every refusal (and every other operation) is in the chain, and the chain verifies.
    assert len(audit_rows) == tally["audit_expected"]
    report = verify(service.engine)
    assert report.ok, report.summary
