"""The synthetic resident generator: deterministic, valid, consistent with validation."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from jukics.domain import fields
from jukics.domain.errors import DomainError
from jukics.domain.identifiers import (
    ProvisionalCheckDigitJuminhyoCodeValidator,
    is_valid_municipality_code,
    is_valid_my_number,
)
from jukics.domain.text import seion_kana
from jukics.domain.validate import RECORD_FIELDS, Validators, check_sequence, lookup_code, validate_update
from jukics.sim.residents import (
    generate_residents,
    generate_updates,
    main,
    make_invalid_variants,
    resident_intake_items,
)

TODAY = dt.date(2026, 11, 1)
MUNI = "142140"


def residents(n: int = 1500, seed: int = 11, **kw) -> list[dict]:
    return list(generate_residents(n, seed=seed, municipality_code=MUNI, today=TODAY, **kw))


def replay(items, store: dict, validators: Validators) -> None:
    """Apply intake items the way the store does: sequence first, then validation."""
    for item in items:
        current = store.get(lookup_code(item))
        last = current["update_seq"] if current else None
        assert check_sequence(last, item["update_seq"]) == "apply", item["request_id"]
        update = validate_update(item, current=current, validators=validators, today=TODAY)
        store.pop(update.lookup_code, None)
        store[update.juminhyo_code] = update.record


def test_deterministic_for_a_seed():
    assert residents(200, seed=3) == residents(200, seed=3)
    assert residents(200, seed=3) != residents(200, seed=4)
    base = residents(300)
    assert list(generate_updates(base, 200, seed=5)) == list(generate_updates(base, 200, seed=5))


def test_records_are_plausible_and_valid():
    recs = residents()
    assert all(set(r) == set(RECORD_FIELDS) for r in recs)
    codes = [r["juminhyo_code"] for r in recs]
    numbers = [r["my_number"] for r in recs]
    assert len(set(codes)) == len(codes) and len(set(numbers)) == len(numbers)
    provisional = ProvisionalCheckDigitJuminhyoCodeValidator()
    for r in recs:
        assert provisional.is_valid(r["juminhyo_code"])  # so they pass either validator
        assert is_valid_my_number(r["my_number"])
        assert r["municipality_code"] == MUNI and is_valid_municipality_code(r["municipality_code"])
        assert r["address"].startswith("神奈川県伊勢原市")
        assert r["name_kanji"].count("\u3000") == 1 and r["name_kana"].count("\u3000") == 1
        assert r["name_kana_seion"] == seion_kana(r["name_kana"])
        age = (TODAY - dt.date.fromisoformat(r["birth_date"])).days / 365.25
        assert 0 <= age <= 105.1
        assert r["birth_date"] <= r["became_resident_on"] <= r["address_set_on"] <= r["changed_on"] <= TODAY.isoformat()
    status = Counter(r["record_status"] for r in recs)
    reasons = Counter(r["change_reason"] for r in recs)
    assert 10 <= status["deleted"] <= 60  # ~2 % of 1500
    assert {"shussei", "tennyu", "tenkyo", "tenshutsu"} <= set(reasons)
    assert any(r["former_surname"] for r in recs)
    assert Counter(r["sex"] for r in recs).keys() == {"1", "2"}


def test_deleted_ratio():
    assert all(r["record_status"] == "current" for r in residents(300, deleted_ratio=0.0))
    assert all(r["record_status"] == "deleted" for r in residents(300, deleted_ratio=1.0))


def test_refuses_an_invalid_municipality_code():
    with pytest.raises(ValueError):
        next(generate_residents(1, seed=1, municipality_code="142141", today=TODAY))


@pytest.mark.parametrize("validator", ["digits-only", "provisional-mod11"])
def test_every_resident_history_validates_and_rebuilds_the_record(validator):
    validators = Validators.from_names(validator)
    store: dict = {}
    recs = residents(juminhyo_validator=validators.juminhyo)
    for rec in recs:
        replay(resident_intake_items(rec), store, validators)
        assert store[rec["juminhyo_code"]] == rec
    assert len(store) == len(recs)


def test_every_generated_update_validates():
    validators = Validators()
    recs = residents()
    store = {r["juminhyo_code"]: r for r in recs}
    updates = list(generate_updates(recs, 4000, seed=12, today=TODAY))
    assert len(updates) == 4000
    replay(updates, store, validators)
    kinds = Counter(u["change_reason"] for u in updates)
    assert {"tenkyo", "shussei", "shibou", "tennyu", "tenshutsu", "shimei_henko"} <= set(kinds)
    request_ids = [u["request_id"] for u in updates]
    assert len(set(request_ids)) == len(request_ids)
    assert all(set(u) <= fields.INTAKE_FIELDS for u in updates)
    # some 転入 are former residents coming back under their old 住民票コード
    old_codes = {r["juminhyo_code"] for r in recs}
    assert any(u["change_reason"] == "tennyu" and u["juminhyo_code"] in old_codes for u in updates)


def test_invalid_variants_get_their_code_and_never_leak_values():
    validators = Validators(juminhyo=ProvisionalCheckDigitJuminhyoCodeValidator())
    recs = residents(200, juminhyo_validator=validators.juminhyo)
    store: dict = {}
    items = [item for rec in recs[:25] for item in resident_intake_items(rec)]
    items += list(generate_updates(recs[:25], 40, seed=2, today=TODAY))
    checked = Counter()
    for item in items:
        current = store.get(lookup_code(item))
        personal = [str(item[k]) for k in ("my_number", "name_kanji", "name_kana", "address", "birth_date")
                    if k in item]
        for variant in make_invalid_variants(item, validators=validators):
            with pytest.raises(DomainError) as err:
                validate_update(variant.item, current=current, validators=validators, today=TODAY)
            assert (err.value.code, err.value.field) == (variant.code, variant.field), variant
            message = f"{err.value} {err.value.to_dict()}"
            assert not any(value in message for value in personal)
            checked[variant.code] += 1
        replay([item], store, validators)
    assert checked["E_JUMINHYO_CODE_CHECK_DIGIT"] and checked["E_MY_NUMBER_CHECK_DIGIT"]
    assert checked["E_FIELD_NOT_ALLOWED"] and checked["E_TEXT_CONTROL_CHAR"] and checked["E_DATE_INVALID"]
    assert len(checked) >= 20


def test_main_prints_json_lines(capsys):
    assert main(["--residents", "20", "--updates", "10", "--seed", "3", "--today", "2026-11-01"]) == 0
    import json

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) >= 30
    store: dict = {}
    replay(lines, store, Validators())
