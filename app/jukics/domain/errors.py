"""Stable error codes for bad input, and the exception that carries them.

Every refusal names a code from ``ERROR_CODES`` and, where there is one, the offending *field name*.
Messages are built from the code's description and the field name only: they never contain the
offending value, because the value may be personal data (個人番号, 氏名, 住所, 生年月日). SPEC §3:
「No plaintext 個人番号 may appear in … logs, metrics labels or error messages」.

``validate_update`` raises a single ``DomainError`` (the first failing check, in a fixed documented
order), so each item maps to exactly one stable code, as the intake API reports it.
"""

from __future__ import annotations

from typing import Final

from jukics.domain.fields import LABELS

#: code -> description. The API documentation lists this table; codes are never renamed or reused.
ERROR_CODES: Final[dict[str, str]] = {
    # shape and types
    "E_TYPE": "the value has the wrong JSON type (for example a number where a string is required)",
    "E_FIELD_NOT_ALLOWED": "the field is not one the CS may receive (総務省告示第334号 第6-7); the item is refused",
    "E_MISSING_FIELD": "a required field is missing, null or empty",
    "E_META_MISSING": "操作者ID, 操作端末ID or 更新順番号 is missing: every write must carry them",
    "E_META_INVALID": "操作者ID, 操作端末ID or 依頼管理番号 is not 1-64 printable ASCII characters without spaces",
    "E_UPDATE_SEQ_INVALID": "更新順番号 must be an integer from 1 to 2^63-1",
    # identifiers
    "E_MY_NUMBER_FORMAT": "個人番号 must be exactly 12 ASCII digits",
    "E_MY_NUMBER_CHECK_DIGIT": "個人番号 check digit is wrong (総務省令第85号 第5条)",
    "E_JUMINHYO_CODE_FORMAT": "住民票コード must be exactly 11 ASCII digits",
    "E_JUMINHYO_CODE_CHECK_DIGIT": "住民票コード check digit is wrong under the configured validator",
    "E_MUNICIPALITY_CODE_FORMAT": "市町村コード must be exactly 6 ASCII digits",
    "E_MUNICIPALITY_CODE_CHECK_DIGIT": "市町村コード check digit is wrong (全国地方公共団体コード)",
    "E_MUNICIPALITY_NOT_SERVED": "市町村コード is not one this CS serves",
    "E_POSTAL_CODE_INVALID": "郵便番号 must be exactly 7 ASCII digits, without a hyphen",
    "E_SEX_INVALID": "性別 must be the string '1' (男) or '2' (女)",
    # dates
    "E_DATE_INVALID": "not a real date in YYYY-MM-DD or 和暦 (令和6年4月1日, R06.04.01), from 1873-01-01 on",
    "E_DATE_FUTURE": "the date is later than today (or later than the 異動事由 allows)",
    "E_DATE_ORDER": "the dates contradict each other (for example a date before the 生年月日)",
    # text
    "E_TEXT_CONTROL_CHAR": "the text contains a control, format or bidirectional-override character",
    "E_TEXT_CHAR_NOT_ALLOWED": "the text contains a surrogate or private-use (外字) character",
    "E_TEXT_TOO_LONG": "the text is longer than the field allows",
    "E_KANA_INVALID": "a かな field may contain only hiragana, katakana, ー, ・ and spaces",
    # 異動事由 logic checks (seed 001 Ⅲ(2)-5, seed 002 III 5 リスク3)
    "E_REASON_UNKNOWN": "異動事由 is not a code of jukics.domain.reasons",
    "E_TENNYU_ALREADY_RESIDENT": "転入 for a 住民票コード that is a current resident",
    "E_ALREADY_RESIDENT": "a creating 異動事由 for a 住民票コード that is a current resident",
    "E_CODE_ALREADY_USED": "the 住民票コード already has a record (current or 消除者) and cannot be created again",
    "E_TENKYO_NON_ADDRESS_CHANGE": "転居 may change only the address fields",
    "E_FIELD_NOT_ALTERABLE": "this 異動事由 may not change this field",
    "E_NO_CHANGE": "the 異動事由 changes nothing it is meant to change",
    "E_ALREADY_DELETED": "消除 (転出, 死亡, …) of a resident who is already a 消除者",
    "E_RESIDENT_DELETED": "a change for a 消除者: only a creating 異動事由 such as 転入 applies",
    "E_UNKNOWN_RESIDENT": "no record with this 住民票コード, and the 異動事由 does not create one",
    "E_UPDATE_LOCKED": "the record carries 更新禁止フラグ and refuses updates",
    "E_FIELDS_INCONSISTENT": "fields that go together disagree (旧氏 without かな旧氏, codes that must differ, …)",
    # ordering and uniqueness (raised by check_sequence, or by the store with these codes)
    "E_OUT_OF_ORDER": "更新順番号 is not the next one for this resident (a gap, or lower than the last applied)",
    "E_SEQ_CONFLICT": "更新順番号 was already applied with a different 依頼管理番号",
    "E_MY_NUMBER_IN_USE": "the 個人番号 belongs to another resident's record (raised by the store)",
    # F9 送付先情報 and F10 card events (POST /v1/intake/card, jukics.links.card)
    "E_CARD_TYPE": "type must be 'sofusaki' (送付先情報) or 'card_event' (card lifecycle event)",
    "E_SOFUSAKI_SHAPE": "送付先情報 must be a JSON object of at most 100 items (string keys, string or null "
                        "values), at most 32 KiB; it is passed on unedited",
    "E_CARD_EVENT_KIND": "kind must be one of kofu (交付), haishi (廃止), kaishu (回収), teishi_kaijo "
                         "(一時停止解除), henkan (返還)",
    "E_CARD_ID_INVALID": "card_id must be 1-32 characters of A-Z and 0-9",
    "E_REQUEST_ID_REUSED": "依頼管理番号 was already used for a different item: nothing was changed",
}


class DomainError(Exception):
    """Bad input: a stable ``code`` from ``ERROR_CODES`` and the offending ``field`` name (or None).

    The message is the code's description plus the field name and its Japanese label, never the
    value. ``detail`` may add a fixed, value-free hint (for example an allowed maximum length);
    callers must never pass any part of the input there.
    """

    def __init__(self, code: str, field: str | None = None, detail: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unregistered error code {code!r}")
        self.code = code
        self.field = field
        self.detail = detail
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = ERROR_CODES[self.code]
        if self.field is not None:
            label = LABELS.get(self.field)
            text += f" (field: {self.field}{' ' + label if label else ''})"
        if self.detail:
            text += f"; {self.detail}"
        return text

    def to_dict(self) -> dict[str, str]:
        """The value-free form the API returns for a refused item."""
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out

    def __repr__(self) -> str:
        return f"DomainError({self.code!r}, field={self.field!r})"
