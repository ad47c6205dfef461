"""The 異動事由 table: what each change reason may do. Adding a reason is adding one row.

Source of the logic checks (seed 001 Ⅲ(2)-5, seed 002 III 5 リスク3, the same sentence):
「現存する住民に対して転入を異動事由とする更新が行われようとした場合や、転居を異動事由とする更新の際に
住所以外の更新が行われようとした場合に当該処理をエラーとする」 (``seed-001-isehara.md`` §4.8).
The other rows extend that rule the way SPEC §3 asks (「a 死亡/消除 of a 消除者 is an error」, 「an update
for an unknown 住民票コード that is not a 転入/出生 is an error」); those extensions are **inferred**.
Reasons named by the seeds: 転入, 転出, 転居, 出生, 死亡 (seed 002 別添1(2) 1-①), 区間異動 (seed 002
L.760), 住民票コードの変更 and 個人番号の変更 (seed 000 ⑧ 「住民からの請求に基づく住民票コードの変更及び
個人番号の変更」), 特例転入 (F6). 職権記載/職権修正/職権消除, 旧氏, 失踪宣告 and 更新禁止 are our rows.

Kinds:

- ``create``: the item carries a complete record; allowed when no record exists, or (if
  ``create_over_deleted``) when the record is a 消除者 who comes back (転入 of a former resident keeps
  the same 住民票コード). On a current resident → ``on_current_resident`` (E_TENNYU_ALREADY_RESIDENT
  for 転入).
- ``change``: the item carries the 住民票コード and any fields; every *data* field whose value differs
  from the stored record must be in ``alterable`` (else ``violation_code``), and at least one must
  differ (else E_NO_CHANGE). Unknown code → E_UNKNOWN_RESIDENT; 消除者 → E_RESIDENT_DELETED.
- ``delete``: 消除. No data field may change; the record becomes ``deleted``. Unknown code →
  E_UNKNOWN_RESIDENT; already a 消除者 → E_ALREADY_DELETED.

Every reason may set the *event* fields (異動事由, 異動年月日, 届出の年月日) and the write meta
(依頼管理番号, 操作者ID, 操作端末ID, 更新順番号); they are never "changes" of the person's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

Kind = Literal["create", "change", "delete"]

#: Describe the event, not the person; any reason may set them.
EVENT_FIELDS: Final = frozenset({"change_reason", "changed_on", "notified_on"})
#: Every write carries these (SPEC §3); never data.
META_FIELDS: Final = frozenset({"request_id", "operator_id", "terminal_id", "update_seq"})
#: The person's data: what a change may or may not alter. (timestamp, record_status and the derived
#: name_kana_seion are set by the system, never by intake.)
DATA_FIELDS: Final = frozenset(
    {
        "juminhyo_code",
        "name_kanji",
        "name_kana",
        "former_surname",
        "former_surname_kana",
        "birth_date",
        "sex",
        "municipality_code",
        "postal_code",
        "address",
        "my_number",
        "became_resident_on",
        "address_set_on",
        "previous_address",
        "previous_juminhyo_code",
        "update_locked",
    }
)
#: A creating item must carry these (after normalisation, non-empty).
CREATE_REQUIRED: Final = frozenset(
    {
        "name_kanji",
        "name_kana",
        "birth_date",
        "sex",
        "municipality_code",
        "address",
        "my_number",
        "became_resident_on",
        "address_set_on",
    }
)
#: 転居 (seed: 「住所以外の更新」 is an error): the address fields.
ADDRESS_FIELDS: Final = frozenset({"address", "postal_code", "address_set_on"})
NAME_FIELDS: Final = frozenset({"name_kanji", "name_kana"})
FORMER_SURNAME_FIELDS: Final = frozenset({"former_surname", "former_surname_kana"})
#: 職権修正 corrects the person's data but never the identifiers (those have their own reasons).
CORRECTABLE_FIELDS: Final = DATA_FIELDS - {
    "juminhyo_code",
    "previous_juminhyo_code",
    "my_number",
    "municipality_code",
    "update_locked",
}


@dataclass(frozen=True)
class Reason:
    """One row of the 異動事由 table (see the module doc for the kinds)."""

    code: str
    label: str
    kind: Kind
    #: change: data fields this reason may alter.
    alterable: frozenset[str] = frozenset()
    #: fields the item must carry beyond the kind's own requirements.
    requires: frozenset[str] = frozenset()
    #: change: the code when a field outside ``alterable`` changes.
    violation_code: str = "E_FIELD_NOT_ALTERABLE"
    #: create: the code when the 住民票コード is a current resident.
    on_current_resident: str = "E_ALREADY_RESIDENT"
    #: create: may re-create a 消除者's record (a former resident moving back).
    create_over_deleted: bool = True
    #: accepted on a record with 更新禁止フラグ (only the reason that lifts the flag).
    allowed_when_locked: bool = False
    #: days after ``today`` that 異動年月日 may be (転出 is notified before the move).
    future_days: int = 0
    #: create: 異動年月日 must equal 生年月日 (出生).
    changed_on_is_birth: bool = False
    #: values this reason writes itself (the item may repeat them, but not contradict them).
    sets: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    #: the item field holding the 住民票コード that identifies the stored record.
    matches_on: str = "juminhyo_code"


_ROWS: Final[tuple[Reason, ...]] = (
    # create
    Reason("tennyu", "転入", "create", requires=frozenset({"previous_address"}),
           on_current_resident="E_TENNYU_ALREADY_RESIDENT"),
    Reason("tokurei_tennyu", "転入（特例転入）", "create", requires=frozenset({"previous_address"}),
           on_current_resident="E_TENNYU_ALREADY_RESIDENT"),
    Reason("shussei", "出生", "create", create_over_deleted=False, changed_on_is_birth=True),
    Reason("shokken_kisai", "職権記載", "create"),
    # change
    Reason("tenkyo", "転居", "change", alterable=ADDRESS_FIELDS, requires=frozenset({"address"}),
           violation_code="E_TENKYO_NON_ADDRESS_CHANGE"),
    Reason("kukan_ido", "区間異動", "change", alterable=ADDRESS_FIELDS | {"municipality_code"},
           requires=frozenset({"address", "municipality_code"})),
    Reason("shimei_henko", "氏名の変更", "change", alterable=NAME_FIELDS),
    Reason("kyushi_henko", "旧氏の記載・変更・削除", "change", alterable=FORMER_SURNAME_FIELDS),
    Reason("shokken_shusei", "職権修正", "change", alterable=CORRECTABLE_FIELDS),
    Reason("kojin_bango_henko", "個人番号の変更", "change", alterable=frozenset({"my_number"}),
           requires=frozenset({"my_number"})),
    Reason("juminhyo_code_henko", "住民票コードの変更", "change",
           alterable=frozenset({"juminhyo_code", "previous_juminhyo_code"}),
           requires=frozenset({"previous_juminhyo_code"}), matches_on="previous_juminhyo_code"),
    Reason("koshin_kinshi", "更新禁止の設定", "change", alterable=frozenset({"update_locked"}),
           sets=MappingProxyType({"update_locked": True})),
    Reason("koshin_kinshi_kaijo", "更新禁止の解除", "change", alterable=frozenset({"update_locked"}),
           sets=MappingProxyType({"update_locked": False}), allowed_when_locked=True),
    # delete (消除)
    Reason("tenshutsu", "転出", "delete", future_days=31),
    Reason("shibou", "死亡", "delete"),
    Reason("shisso_sengen", "失踪宣告", "delete"),
    Reason("shokken_shojo", "職権消除", "delete"),
)

#: code -> row. The codes are the values of the 異動事由 field (change_reason).
REASONS: Final[Mapping[str, Reason]] = MappingProxyType({r.code: r for r in _ROWS})


def get_reason(code: str) -> Reason | None:
    """The row for ``code``, or None when unknown."""
    return REASONS.get(code)


def _check_table() -> None:
    # Import-time guard (not assert: it must also run under python -O): a bad new row fails loudly.
    from jukics.domain.errors import ERROR_CODES

    if len(REASONS) != len(_ROWS):
        raise RuntimeError("duplicate 異動事由 code in the table")
    for r in _ROWS:
        problems = [
            not (r.code.isascii() and r.code.isidentifier()),
            not r.alterable <= DATA_FIELDS,
            r.kind != "change" and bool(r.alterable),
            r.violation_code not in ERROR_CODES or r.on_current_resident not in ERROR_CODES,
            not set(r.sets) <= r.alterable,
            r.matches_on not in ("juminhyo_code", "previous_juminhyo_code"),
        ]
        if any(problems):
            raise RuntimeError(f"異動事由 row {r.code!r} is inconsistent")


_check_table()
