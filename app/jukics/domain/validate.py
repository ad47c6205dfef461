"""Validation of one 本人確認情報 update from 既存住基 (flow F1), and the 更新順番号 rule.

How the store uses this module (one item, inside the resident's transaction)::

    parsed = parse_item(item, validators=v, today=today)          # item-only checks
    current = store.current_record(parsed.lookup_code)           # plain dict or None
    last = current["update_seq"] if current else None
    if check_sequence(last, parsed.meta.update_seq,
                      last_request_id=current and current["request_id"],
                      new_request_id=parsed.meta.request_id) == "duplicate":
        ...  # already applied: report "duplicate", change nothing
    update = apply_to_current(parsed, current=current)            # 異動事由 logic checks
    store.write(update)                                          # old version → history

``validate_update`` is ``parse_item`` followed by ``apply_to_current``, for callers that check the
sequence elsewhere. The sequence must be checked *before* the logic checks: a re-sent 転入 is a
duplicate, not E_TENNYU_ALREADY_RESIDENT.

Errors: the first failing check raises one ``DomainError``; the order is fixed, so an item always
gets the same code:

1. the item is a JSON object with string keys (E_TYPE);
2. every key is in ``fields.INTAKE_FIELDS`` (E_FIELD_NOT_ALLOWED, first offending key in sorted order;
   ``field`` names it only when it is a plain ASCII identifier, since a key could be anything);
3. 操作者ID, 操作端末ID, 更新順番号 present and not null (E_META_MISSING, in that order);
4. 住民票コード, 異動事由, 異動年月日, 依頼管理番号 present and not null (E_MISSING_FIELD);
5. each present field, in ``fields.LABELS`` order: JSON type (E_TYPE), then format (E_*_FORMAT,
   E_*_CHECK_DIGIT, E_DATE_INVALID, E_TEXT_*, E_KANA_INVALID, E_SEX_INVALID, E_REASON_UNKNOWN, …);
6. fields the 異動事由 requires (E_MISSING_FIELD); dates not in the future (E_DATE_FUTURE);
   values the reason fixes not contradicted (E_FIELDS_INCONSISTENT);
7. against the stored record: 更新禁止フラグ (E_UPDATE_LOCKED), existence and 消除 state
   (E_UNKNOWN_RESIDENT, E_TENNYU_ALREADY_RESIDENT, E_ALREADY_RESIDENT, E_CODE_ALREADY_USED,
   E_RESIDENT_DELETED, E_ALREADY_DELETED), fields the reason may alter (E_TENKYO_NON_ADDRESS_CHANGE,
   E_FIELD_NOT_ALTERABLE), something changed (E_NO_CHANGE);
8. the resulting record is consistent (E_FIELDS_INCONSISTENT, E_DATE_ORDER).

Items may be partial (only the fields that change) or full (the whole new record): fields absent
from the item keep their stored value, a field sent as ``null`` (allowed for the optional fields in
``NULLABLE_FIELDS``) is cleared, and an optional text sent as "" is treated as ``null``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from jukics.domain import fields
from jukics.domain.dates import parse_date
from jukics.domain.errors import DomainError
from jukics.domain.identifiers import (
    DigitsOnlyJuminhyoCodeValidator,
    JuminhyoCodeValidator,
    get_juminhyo_validator,
    is_digits,
    is_valid_municipality_code,
    is_valid_my_number,
)
from jukics.domain.reasons import CREATE_REQUIRED, DATA_FIELDS, Kind, Reason, get_reason
from jukics.domain.text import KANA_FIELDS, normalize_kana, normalize_text, seion_kana

#: 性別 codes. No code list is in the seeds (seed 002 §3.1 names the field 「性別」 only). We use
#: the codes of JIS X 0303 / ISO 5218 that a 住民票 can hold, 男 and 女; 0 (不明) and 9 (適用不能)
#: are refused because a 住民票 always records one of the two. Add a row here if that changes.
SEX_CODES: Final[dict[str, str]] = {"1": "男", "2": "女"}

#: Optional fields that an item may clear with null (or "").
NULLABLE_FIELDS: Final = frozenset(
    {"former_surname", "former_surname_kana", "postal_code", "previous_address", "previous_juminhyo_code",
     "notified_on"}
)
#: Fields every item carries (beyond the write meta).
ITEM_REQUIRED: Final[tuple[str, ...]] = ("juminhyo_code", "change_reason", "changed_on", "request_id")
DATE_FIELDS: Final = frozenset({"birth_date", "became_resident_on", "address_set_on", "notified_on", "changed_on"})
#: The fields of the record ``Update.record`` returns (all of ``fields.LABELS`` but the store's timestamp).
RECORD_FIELDS: Final[tuple[str, ...]] = tuple(f for f in fields.LABELS if f != "timestamp")

MAX_UPDATE_SEQ: Final = 2**63 - 1
_META_TEXT = re.compile(r"[\x21-\x7e]{1,64}")
_SAFE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Validators:
    """The configurable parts of validation.

    ``juminhyo``: the 住民票コード check (config ``validation.juminhyo_validator``).
    ``municipality_codes``: the 市町村コード this CS serves (the city, or its wards for a
    政令指定都市); None accepts any valid code.
    """

    juminhyo: JuminhyoCodeValidator = field(default_factory=DigitsOnlyJuminhyoCodeValidator)
    municipality_codes: frozenset[str] | None = None

    @classmethod
    def from_names(cls, juminhyo_validator: str = "digits-only",
                   municipality_codes: frozenset[str] | None = None) -> Validators:
        """Build from configuration values; ``ValueError`` for an unknown validator name."""
        return cls(get_juminhyo_validator(juminhyo_validator), municipality_codes)


@dataclass(frozen=True)
class Meta:
    """The write meta every update carries (SPEC §3)."""

    request_id: str
    operator_id: str
    terminal_id: str
    update_seq: int


@dataclass(frozen=True)
class ParsedItem:
    """An item that passed the item-only checks (steps 1-6 of the module doc)."""

    reason: Reason
    #: normalised values of the fields the item carried; dates as ISO strings; None = cleared.
    values: Mapping[str, object]
    meta: Meta
    #: the 住民票コード to look the stored record up by (the old code for 住民票コードの変更).
    lookup_code: str


@dataclass(frozen=True)
class Update:
    """A validated update, ready for the store.

    ``record`` is the complete new current record (every name of ``RECORD_FIELDS``, None where
    empty): normalised values, dates as ISO strings, ``name_kana_seion`` derived, ``record_status``
    'current' or 'deleted', the event fields and meta of this update. ``changed_fields`` are the
    data fields (``reasons.DATA_FIELDS``) whose value differs from the stored record, sorted; for a
    create, every data field with a value.
    """

    kind: Kind
    reason: str
    juminhyo_code: str
    lookup_code: str
    record: dict[str, object]
    changed_fields: tuple[str, ...]
    meta: Meta


# --- per-field parsers ------------------------------------------------------------------------

Parser = Callable[[object, str, Validators], object]


def _need_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise DomainError("E_TYPE", name)
    return value


def _juminhyo_code(value: object, name: str, v: Validators) -> str:
    text = _need_str(value, name)
    if not is_digits(text, 11):
        raise DomainError("E_JUMINHYO_CODE_FORMAT", name)
    if not v.juminhyo.is_valid(text):
        raise DomainError("E_JUMINHYO_CODE_CHECK_DIGIT", name)
    return text


def _my_number(value: object, name: str, v: Validators) -> str:
    text = _need_str(value, name)
    if not is_digits(text, 12):
        raise DomainError("E_MY_NUMBER_FORMAT", name)
    if not is_valid_my_number(text):
        raise DomainError("E_MY_NUMBER_CHECK_DIGIT", name)
    return text


def _municipality_code(value: object, name: str, v: Validators) -> str:
    text = _need_str(value, name)
    if not is_digits(text, 6):
        raise DomainError("E_MUNICIPALITY_CODE_FORMAT", name)
    if not is_valid_municipality_code(text):
        raise DomainError("E_MUNICIPALITY_CODE_CHECK_DIGIT", name)
    if v.municipality_codes is not None and text not in v.municipality_codes:
        raise DomainError("E_MUNICIPALITY_NOT_SERVED", name)
    return text


def _postal_code(value: object, name: str, v: Validators) -> str:
    if not is_digits(_need_str(value, name), 7):
        raise DomainError("E_POSTAL_CODE_INVALID", name)
    return str(value)


def _sex(value: object, name: str, v: Validators) -> str:
    if _need_str(value, name) not in SEX_CODES:
        raise DomainError("E_SEX_INVALID", name)
    return str(value)


def _text(value: object, name: str, v: Validators) -> str:
    if name in KANA_FIELDS:
        return normalize_kana(_need_str(value, name), name)
    return normalize_text(_need_str(value, name), name)


def _date(value: object, name: str, v: Validators) -> str:
    return parse_date(_need_str(value, name), field=name).isoformat()


def _reason(value: object, name: str, v: Validators) -> str:
    if get_reason(_need_str(value, name)) is None:
        raise DomainError("E_REASON_UNKNOWN", name)
    return str(value)


def is_meta_text(value: object) -> bool:
    """True when ``value`` is a well-formed 依頼管理番号/操作者ID/操作端末ID (1-64 printable ASCII)."""
    return isinstance(value, str) and _META_TEXT.fullmatch(value) is not None


def _meta_text(value: object, name: str, v: Validators) -> str:
    if not _META_TEXT.fullmatch(_need_str(value, name)):
        raise DomainError("E_META_INVALID", name)
    return str(value)


def _update_seq(value: object, name: str, v: Validators) -> int:
    if type(value) is not int:  # bool is an int subclass; JSON true must not count as 1
        raise DomainError("E_TYPE", name)
    if not 1 <= value <= MAX_UPDATE_SEQ:
        raise DomainError("E_UPDATE_SEQ_INVALID", name)
    return value


def _flag(value: object, name: str, v: Validators) -> bool:
    if type(value) is not bool:
        raise DomainError("E_TYPE", name)
    return value


PARSERS: Final[dict[str, Parser]] = {
    "juminhyo_code": _juminhyo_code,
    "name_kanji": _text,
    "name_kana": _text,
    "former_surname": _text,
    "former_surname_kana": _text,
    "birth_date": _date,
    "sex": _sex,
    "municipality_code": _municipality_code,
    "postal_code": _postal_code,
    "address": _text,
    "my_number": _my_number,
    "became_resident_on": _date,
    "address_set_on": _date,
    "notified_on": _date,
    "previous_address": _text,
    "change_reason": _reason,
    "changed_on": _date,
    "previous_juminhyo_code": _juminhyo_code,
    "request_id": _meta_text,
    "operator_id": _meta_text,
    "terminal_id": _meta_text,
    "update_seq": _update_seq,
    "update_locked": _flag,
}
_FIELD_ORDER: Final = tuple(f for f in fields.LABELS if f in fields.INTAKE_FIELDS)
if set(PARSERS) != set(fields.INTAKE_FIELDS):  # every intake field has exactly one parser
    raise RuntimeError("validate.PARSERS and fields.INTAKE_FIELDS disagree")


# --- item-only checks -------------------------------------------------------------------------


def _safe_key(key: str) -> str | None:
    return key if _SAFE_KEY.fullmatch(key) else None


_ABSENT: Final = object()
_DATE_ORDER: Final = tuple(f for f in _FIELD_ORDER if f in DATE_FIELDS)
_REQUIRED_BY_REASON: dict[str, tuple[str, ...]] = {}


def _required_fields(reason: Reason) -> tuple[str, ...]:
    """The fields ``reason`` requires (its own and, for a create, ``CREATE_REQUIRED``), in field order."""
    found = _REQUIRED_BY_REASON.get(reason.code)
    if found is None:
        required = set(reason.requires) | (CREATE_REQUIRED if reason.kind == "create" else set())
        found = _REQUIRED_BY_REASON[reason.code] = tuple(n for n in _FIELD_ORDER if n in required)
    return found


def parse_item(item: Mapping[str, object], *, validators: Validators, today: dt.date) -> ParsedItem:
    """Steps 1-6 of the module doc: everything that needs no stored record. Raises ``DomainError``."""
    if not isinstance(item, Mapping):
        raise DomainError("E_TYPE")
    if not item.keys() <= fields.INTAKE_FIELDS:  # (a set test; the loops find which key is wrong)
        for key in item:
            if not isinstance(key, str):
                raise DomainError("E_TYPE")
        for key in sorted(item):
            if key not in fields.INTAKE_FIELDS:
                raise DomainError("E_FIELD_NOT_ALLOWED", _safe_key(key))
    get = item.get
    for name in fields.REQUIRED_WRITE_META:
        if get(name) is None:
            raise DomainError("E_META_MISSING", name)
    for name in ITEM_REQUIRED:
        if get(name) is None:
            raise DomainError("E_MISSING_FIELD", name)

    values: dict[str, object] = {}
    for name in _FIELD_ORDER:
        raw = get(name, _ABSENT)
        if raw is _ABSENT:
            continue
        if raw is None:
            if name not in NULLABLE_FIELDS:
                raise DomainError("E_MISSING_FIELD", name)
            values[name] = None
            continue
        value = PARSERS[name](raw, name, validators)
        if value == "":
            if name not in NULLABLE_FIELDS:
                raise DomainError("E_MISSING_FIELD", name)
            value = None
        values[name] = value

    reason = get_reason(str(values["change_reason"]))
    assert reason is not None  # checked by _reason
    for name in _required_fields(reason):
        if values.get(name) is None:
            raise DomainError("E_MISSING_FIELD", name)

    iso_today = today.isoformat()
    for name in _DATE_ORDER:
        value = values.get(name)
        if value is not None:
            limit = iso_today
            if name == "changed_on" and reason.future_days:
                limit = (today + dt.timedelta(days=reason.future_days)).isoformat()
            if str(value) > limit:
                raise DomainError("E_DATE_FUTURE", name)
    for name, fixed in reason.sets.items():
        if name in values and values[name] != fixed:
            raise DomainError("E_FIELDS_INCONSISTENT", name)
    if reason.matches_on != "juminhyo_code" and values[reason.matches_on] == values["juminhyo_code"]:
        raise DomainError("E_FIELDS_INCONSISTENT", reason.matches_on)

    update_seq = values["update_seq"]
    assert isinstance(update_seq, int)  # checked by _update_seq
    meta = Meta(
        request_id=str(values["request_id"]),
        operator_id=str(values["operator_id"]),
        terminal_id=str(values["terminal_id"]),
        update_seq=update_seq,
    )
    return ParsedItem(reason=reason, values=values, meta=meta, lookup_code=str(values[reason.matches_on]))


def lookup_code(item: Mapping[str, object]) -> str | None:
    """The 住民票コード the store should load the current record by, or None when the item has none
    that looks valid (then ``validate_update(item, current=None, …)`` reports the real problem).

    It is the item's 住民票コード, except for 住民票コードの変更, where the record is found by the old
    code (旧住民票コード) and the item's 住民票コード is the new one.
    """
    if not isinstance(item, Mapping):
        return None
    reason_code = item.get("change_reason")
    reason = get_reason(reason_code) if isinstance(reason_code, str) else None
    code = item.get(reason.matches_on if reason else "juminhyo_code")
    return code if isinstance(code, str) and is_digits(code, 11) else None


# --- checks against the stored record ---------------------------------------------------------


def _canonical(current: Mapping[str, Any]) -> dict[str, object]:
    """The data fields of a stored record, in the form parse_item produces (for comparison)."""
    out: dict[str, object] = {}
    for name in DATA_FIELDS:
        value = current.get(name)
        if isinstance(value, dt.date):
            value = value.isoformat()
        if name == "update_locked":
            value = bool(value)
        out[name] = value
    return out


def apply_to_current(parsed: ParsedItem, *, current: Mapping[str, Any] | None) -> Update:
    """Steps 7-8 of the module doc: the 異動事由 logic checks against the stored ``current`` record
    (a plain dict keyed by field names, with ``record_status`` 'current' or 'deleted'; None when
    no record has this code). Returns the ``Update``; raises ``DomainError``.
    """
    reason = parsed.reason
    if current is not None and current.get("juminhyo_code") != parsed.lookup_code:
        raise ValueError("the stored record passed is not the one this item refers to")
    if current is not None and bool(current.get("update_locked")) and not reason.allowed_when_locked:
        raise DomainError("E_UPDATE_LOCKED", "update_locked")

    deleted = current is not None and current.get("record_status") == "deleted"
    code_field = reason.matches_on
    if reason.kind == "create":
        if current is not None and not deleted:
            raise DomainError(reason.on_current_resident, code_field)
        if deleted and not reason.create_over_deleted:
            raise DomainError("E_CODE_ALREADY_USED", code_field)
        base: dict[str, object] = {"update_locked": False}
    else:
        if current is None:
            raise DomainError("E_UNKNOWN_RESIDENT", code_field)
        if deleted:
            raise DomainError("E_ALREADY_DELETED" if reason.kind == "delete" else "E_RESIDENT_DELETED", code_field)
        base = _canonical(current)

    new: dict[str, object] = {name: base.get(name) for name in DATA_FIELDS}
    for name, value in parsed.values.items():
        if name in DATA_FIELDS:
            new[name] = value
    new.update(reason.sets)

    if reason.kind == "create":
        changed = sorted(name for name in DATA_FIELDS if new[name] not in (None, False))
    else:
        changed = sorted(name for name in DATA_FIELDS if new[name] != base.get(name))
        allowed = reason.alterable if reason.kind == "change" else frozenset()
        refused = [name for name in changed if name not in allowed]
        if refused:
            raise DomainError(reason.violation_code, refused[0])
        if reason.kind == "change" and not changed:
            raise DomainError("E_NO_CHANGE")

    record: dict[str, object] = dict.fromkeys(RECORD_FIELDS)
    record.update(new)
    for name in ("change_reason", "changed_on", "notified_on", "request_id", "operator_id", "terminal_id",
                 "update_seq"):
        record[name] = parsed.values.get(name)
    _check_record(record, reason)
    kana = record["name_kana"]
    record["name_kana_seion"] = seion_kana(str(kana)) if kana else None
    record["record_status"] = "deleted" if reason.kind == "delete" else "current"
    return Update(
        kind=reason.kind,
        reason=reason.code,
        juminhyo_code=str(record["juminhyo_code"]),
        lookup_code=parsed.lookup_code,
        record=record,
        changed_fields=tuple(changed),
        meta=parsed.meta,
    )


def _check_record(record: Mapping[str, object], reason: Reason) -> None:
    # 旧氏 and かな旧氏 come together (seed 002 §3.1 fields 37, 38).
    if (record["former_surname"] is None) != (record["former_surname_kana"] is None):
        missing = "former_surname" if record["former_surname"] is None else "former_surname_kana"
        raise DomainError("E_FIELDS_INCONSISTENT", missing)
    if record["previous_juminhyo_code"] is not None and record["previous_juminhyo_code"] == record["juminhyo_code"]:
        raise DomainError("E_FIELDS_INCONSISTENT", "previous_juminhyo_code")
    # 「コードや日付などの矛盾をシステム判定する」 (seed 002 III[住基] 2 リスク3): nothing before birth.
    birth = record["birth_date"]
    if birth is not None:
        for name in ("became_resident_on", "address_set_on", "notified_on", "changed_on"):
            value = record[name]
            if value is not None and str(value) < str(birth):
                raise DomainError("E_DATE_ORDER", name)
        if reason.changed_on_is_birth and record["changed_on"] != birth:
            raise DomainError("E_DATE_ORDER", "changed_on")


def validate_update(
    item: Mapping[str, object],
    *,
    current: Mapping[str, Any] | None,
    validators: Validators,
    today: dt.date,
) -> Update:
    """Validate one intake item against the stored ``current`` record (or None when unknown).

    ``parse_item`` then ``apply_to_current``; the sequence is not checked here (see the module
    doc for the store's flow and ``check_sequence``). Raises one ``DomainError``.
    """
    return apply_to_current(parse_item(item, validators=validators, today=today), current=current)


# --- 更新順番号 ----------------------------------------------------------------------------------


def check_sequence(
    last_seq: int | None,
    new_seq: int,
    *,
    last_request_id: str | None = None,
    new_request_id: str | None = None,
) -> Literal["apply", "duplicate"]:
    """Decide what to do with 更新順番号 ``new_seq`` given the last applied ``last_seq``.

    The rule (per 住民票コード, SPEC §3 and intake.yaml: strictly increasing by 1): the first update
    of a code carries 1; each next one carries ``last_seq + 1``, across 消除 and a later 転入 too.

    - ``last_seq + 1`` (or 1 when ``last_seq`` is None) → ``'apply'``;
    - ``== last_seq`` → ``'duplicate'`` (a re-send; report it, change nothing), unless both request
      ids are given and differ → ``E_SEQ_CONFLICT``;
    - anything else (a gap, or lower than the last applied) → ``E_OUT_OF_ORDER``: the store keeps
      the item out until the missing ones arrive (異常時 replay is the sender's job).

    ``new_seq`` must already be a valid 更新順番号 (``E_UPDATE_SEQ_INVALID`` otherwise).
    """
    if type(new_seq) is not int or not 1 <= new_seq <= MAX_UPDATE_SEQ:
        raise DomainError("E_UPDATE_SEQ_INVALID", "update_seq")
    expected = 1 if last_seq is None else last_seq + 1
    if new_seq == expected:
        return "apply"
    if last_seq is not None and new_seq == last_seq:
        if last_request_id is not None and new_request_id is not None and last_request_id != new_request_id:
            raise DomainError("E_SEQ_CONFLICT", "update_seq")
        return "duplicate"
    raise DomainError("E_OUT_OF_ORDER", "update_seq")
