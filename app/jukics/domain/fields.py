"""The 本人確認情報 record: canonical field names shared by every layer.

The names are the contract between intake (domain), storage (store), the links (F2, 附票) and the
APIs. Japanese labels are the terms of the seeds (seed 002 §3.1 lists 38 fields; SPEC §3 names the
ones kept here). Add fields here, never rename them: stored rows and messages use these keys.
"""

from __future__ import annotations

from typing import Final

# name -> Japanese label
LABELS: Final[dict[str, str]] = {
    "juminhyo_code": "住民票コード",
    "name_kanji": "漢字氏名",
    "name_kana": "ふりがな氏名",
    "name_kana_seion": "清音化かな氏名",  # derived search key, never sent by intake
    "former_surname": "旧氏",
    "former_surname_kana": "かな旧氏",
    "birth_date": "生年月日",
    "sex": "性別",
    "municipality_code": "市町村コード",
    "postal_code": "郵便番号",
    "address": "住所",
    "my_number": "個人番号",
    "became_resident_on": "住民となった日",
    "address_set_on": "住所を定めた日",
    "notified_on": "届出の年月日",
    "previous_address": "転入前住所",
    "change_reason": "異動事由",
    "changed_on": "異動年月日",
    "previous_juminhyo_code": "旧住民票コード",
    "request_id": "依頼管理番号",
    "operator_id": "操作者ID",
    "terminal_id": "操作端末ID",
    "update_seq": "更新順番号",
    "timestamp": "タイムスタンプ",
    "update_locked": "更新禁止フラグ",
    "record_status": "レコード状況",
}

#: Fields the CS may receive from 既存住基 (総務省告示第334号 第6-7). Anything else is refused.
INTAKE_FIELDS: Final[frozenset[str]] = frozenset(LABELS) - {"name_kana_seion", "timestamp", "record_status"}

#: Every write carries these, or it is refused (SPEC §3).
REQUIRED_WRITE_META: Final[tuple[str, ...]] = ("operator_id", "terminal_id", "update_seq")

#: Personal data encrypted at rest (AES-256-GCM, record id as associated data).
ENCRYPTED_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "name_kanji",
        "name_kana",
        "former_surname",
        "former_surname_kana",
        "birth_date",
        "address",
        "previous_address",
        "postal_code",
        "my_number",
    }
)

#: Searchable through keyed hashes (HMAC of the normalised value), never plaintext indexes.
HASHED_SEARCH_KEYS: Final[tuple[str, ...]] = (
    "juminhyo_code",
    "my_number",
    "name_kana_seion",
    "name_kanji",
    "birth_date",
    "address",
)

#: The whole 本人確認情報 record as kept and shown (view, exports): every field but the derived
#: search key 清音化かな氏名.
RECORD_ITEMS: Final[tuple[str, ...]] = tuple(f for f in LABELS if f != "name_kana_seion")

#: F2: exactly these 8 items go to the 都道府県サーバ (seed 002 §2).
F2_ITEMS: Final[tuple[str, ...]] = (
    "juminhyo_code",
    "name_kanji",
    "birth_date",
    "sex",
    "address",
    "my_number",
    "change_reason",
    "changed_on",
)

#: 附票本人確認情報: like F2 but never with 個人番号 (seed 004).
FUHYO_ITEMS: Final[tuple[str, ...]] = tuple(f for f in F2_ITEMS if f != "my_number")

#: F10 card lifecycle event (既存住基 → CS → 個人番号カード管理システム): exactly these items.
CARD_EVENT_ITEMS: Final[tuple[str, ...]] = ("juminhyo_code", "kind", "event_on", "card_id")
#: Its kinds (SPEC §2 F10): code -> Japanese name.
CARD_EVENT_KINDS: Final[dict[str, str]] = {"kofu": "交付", "haishi": "廃止", "kaishu": "回収",
                                           "teishi_kaijo": "一時停止解除", "henkan": "返還"}

#: F6 特例転入: the 転出証明書情報 a 転出地 CS sends (through the prefecture) to the 転入地 CS.
TENSHUTSU_CERT_ITEMS: Final[tuple[str, ...]] = (
    "cert_id", "juminhyo_code", "name_kanji", "name_kana", "birth_date", "sex", "my_number",
    "address",  # 転出前の住所
    "destination_address",  # 転出先 (予定)
    "planned_move_on",  # 転出の予定年月日
    "from_municipality_code", "to_municipality_code",
)
#: F6: the 転入通知情報 the 転入地 CS sends back to the 転出地 when the 特例転入 is registered.
TENNYU_NOTICE_ITEMS: Final[tuple[str, ...]] = (
    "cert_id", "juminhyo_code", "from_municipality_code", "to_municipality_code", "moved_in_on", "address",
)
