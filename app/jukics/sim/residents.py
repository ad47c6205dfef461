"""SYNTHETIC residents and updates for tests, the lab and benchmarks. NEVER real data.

Every value here is made up: names are drawn from tables of common Japanese surnames and given
names, addresses are synthetic 丁目/番/号 in made-up town names, 個人番号 and 住民票コード are
generated numbers that merely pass the check-digit rules (a generated 個人番号 may by chance equal
a real person's number, but it is never associated with that person's attributes). Prefecture and
municipality names and codes are public codes, not personal data.

- ``generate_residents`` yields stored-record dicts, exactly what ``validate_update(...).record``
  produces (every name of ``validate.RECORD_FIELDS``): current residents and some 消除者.
- ``resident_intake_items`` gives the intake items (出生/転入, maybe 転居, maybe 死亡/転出) that,
  replayed through ``validate_update`` from an empty store, produce that record exactly: this is
  the resident's history, and the way to load residents through the intake API.
- ``generate_updates`` yields further valid intake items (転居, 出生, 死亡, 転入, 転出, 氏名の変更),
  in 更新順番号 order per resident, with unique 依頼管理番号.
- ``make_invalid_variants`` yields broken copies of a valid item with the error code each must get.

Deterministic for a given seed. Fast: one ``random.Random`` stream, table look-ups and string
formatting per record, no per-record validation (about 1M residents in 20-30 s on one core).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, NamedTuple

from jukics.domain.identifiers import (
    DigitsOnlyJuminhyoCodeValidator,
    JuminhyoCodeValidator,
    get_juminhyo_validator,
    is_valid_municipality_code,
    my_number_check_digit,
)
from jukics.domain.places import PREFECTURES
from jukics.domain.reasons import REASONS
from jukics.domain.text import MAX_LENGTHS, seion_kana
from jukics.domain.validate import ITEM_REQUIRED, RECORD_FIELDS, Validators

# --- tables (public names; the people are made up) -----------------------------------------------

#: Common surnames (kanji, hiragana).
SURNAMES: Final[tuple[tuple[str, str], ...]] = (
    ("佐藤", "さとう"), ("鈴木", "すずき"), ("高橋", "たかはし"), ("田中", "たなか"), ("伊藤", "いとう"),
    ("渡辺", "わたなべ"), ("山本", "やまもと"), ("中村", "なかむら"), ("小林", "こばやし"), ("加藤", "かとう"),
    ("吉田", "よしだ"), ("山田", "やまだ"), ("佐々木", "ささき"), ("山口", "やまぐち"), ("松本", "まつもと"),
    ("井上", "いのうえ"), ("木村", "きむら"), ("林", "はやし"), ("斎藤", "さいとう"), ("清水", "しみず"),
    ("山崎", "やまざき"), ("森", "もり"), ("池田", "いけだ"), ("橋本", "はしもと"), ("阿部", "あべ"),
    ("石川", "いしかわ"), ("山下", "やました"), ("中島", "なかじま"), ("石井", "いしい"), ("小川", "おがわ"),
    ("前田", "まえだ"), ("岡田", "おかだ"), ("長谷川", "はせがわ"), ("藤田", "ふじた"), ("後藤", "ごとう"),
    ("近藤", "こんどう"), ("村上", "むらかみ"), ("遠藤", "えんどう"), ("青木", "あおき"), ("坂本", "さかもと"),
    ("福田", "ふくだ"), ("太田", "おおた"), ("西村", "にしむら"), ("藤井", "ふじい"), ("金子", "かねこ"),
    ("岡本", "おかもと"), ("藤原", "ふじわら"), ("中野", "なかの"), ("三浦", "みうら"), ("原田", "はらだ"),
    ("中川", "なかがわ"), ("松田", "まつだ"), ("竹内", "たけうち"), ("小野", "おの"), ("田村", "たむら"),
    ("中山", "なかやま"), ("和田", "わだ"), ("石田", "いしだ"), ("森田", "もりた"), ("上田", "うえだ"),
    ("原", "はら"), ("内田", "うちだ"), ("柴田", "しばた"), ("酒井", "さかい"), ("宮崎", "みやざき"),
    ("横山", "よこやま"), ("高木", "たかぎ"), ("安藤", "あんどう"), ("宮本", "みやもと"), ("大野", "おおの"),
    ("小島", "こじま"), ("工藤", "くどう"), ("谷口", "たにぐち"), ("今井", "いまい"), ("高田", "たかだ"),
    ("丸山", "まるやま"), ("増田", "ますだ"), ("杉山", "すぎやま"), ("村田", "むらた"), ("大塚", "おおつか"),
    ("小山", "こやま"), ("平野", "ひらの"), ("藤本", "ふじもと"), ("河野", "こうの"), ("上野", "うえの"),
    ("野口", "のぐち"), ("武田", "たけだ"), ("松井", "まつい"), ("千葉", "ちば"), ("岩崎", "いわさき"),
    ("菅原", "すがわら"), ("木下", "きのした"), ("久保", "くぼ"), ("佐野", "さの"), ("野村", "のむら"),
    ("松尾", "まつお"), ("市川", "いちかわ"), ("菊地", "きくち"), ("杉本", "すぎもと"), ("渋谷", "しぶや"),
)
#: Given names by 性別 code: "1" 男, "2" 女 (kanji, hiragana).
GIVEN_NAMES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "1": (
        ("翔", "しょう"), ("大翔", "ひろと"), ("蓮", "れん"), ("悠真", "ゆうま"), ("陽翔", "はると"),
        ("湊", "みなと"), ("健太", "けんた"), ("大輔", "だいすけ"), ("拓也", "たくや"), ("翔太", "しょうた"),
        ("直樹", "なおき"), ("和也", "かずや"), ("誠", "まこと"), ("浩", "ひろし"), ("隆", "たかし"),
        ("茂", "しげる"), ("清", "きよし"), ("勇", "いさむ"), ("進", "すすむ"), ("修", "おさむ"),
        ("明", "あきら"), ("学", "まなぶ"), ("聡", "さとし"), ("健一", "けんいち"), ("一郎", "いちろう"),
        ("正雄", "まさお"), ("和夫", "かずお"), ("誠一", "せいいち"), ("達也", "たつや"), ("亮", "りょう"),
        ("大樹", "だいき"), ("颯太", "そうた"), ("悠人", "ゆうと"), ("樹", "いつき"), ("陸", "りく"),
        ("海斗", "かいと"), ("拓海", "たくみ"), ("蒼", "あおい"), ("純一", "じゅんいち"), ("秀樹", "ひでき"),
    ),
    "2": (
        ("陽葵", "ひまり"), ("結菜", "ゆいな"), ("葵", "あおい"), ("芽依", "めい"), ("凛", "りん"),
        ("美咲", "みさき"), ("愛", "あい"), ("陽子", "ようこ"), ("恵子", "けいこ"), ("幸子", "さちこ"),
        ("洋子", "ようこ"), ("和子", "かずこ"), ("京子", "きょうこ"), ("節子", "せつこ"), ("久美子", "くみこ"),
        ("由美子", "ゆみこ"), ("真由美", "まゆみ"), ("裕子", "ゆうこ"), ("智子", "ともこ"), ("直美", "なおみ"),
        ("明美", "あけみ"), ("恵", "めぐみ"), ("彩", "あや"), ("舞", "まい"), ("香織", "かおり"),
        ("麻衣", "まい"), ("愛子", "あいこ"), ("さくら", "さくら"), ("花子", "はなこ"), ("結衣", "ゆい"),
        ("美月", "みづき"), ("莉子", "りこ"), ("紬", "つむぎ"), ("杏", "あん"), ("千尋", "ちひろ"),
        ("奈々", "なな"), ("七海", "ななみ"), ("静香", "しずか"), ("純子", "じゅんこ"), ("優子", "ゆうこ"),
    ),
}
#: Made-up town names (町・字) for synthetic addresses.
TOWNS: Final[tuple[str, ...]] = (
    "本町", "中央", "栄町", "緑町", "旭町", "若葉", "桜台", "南町", "北町", "東町", "西町", "新町", "寿町",
    "幸町", "青葉台", "富士見", "宮前", "松原", "泉町", "大和町", "日の出町", "朝日ケ丘", "つつじが丘", "水源",
    "光ケ丘", "柳町", "梅が丘", "見晴台", "川原町", "港町",
)
BUILDINGS: Final[tuple[str, ...]] = ("コーポ", "ハイツ", "メゾン", "レジデンス", "パレス", "グランコート")
#: Public 全国地方公共団体コード -> municipality name, for nicer synthetic addresses.
MUNICIPALITIES: Final[dict[str, str]] = {
    "011002": "札幌市", "011011": "札幌市中央区", "131016": "千代田区", "131041": "新宿区",
    "141003": "横浜市", "142140": "伊勢原市", "151009": "新潟市", "271004": "大阪市", "231002": "名古屋市",
    "401307": "福岡市",
}
#: Where 転入 residents came from (転入前住所): other public municipality names.
ELSEWHERE: Final[tuple[str, ...]] = (
    "東京都新宿区", "大阪府大阪市北区", "北海道札幌市中央区", "福岡県福岡市博多区", "愛知県名古屋市中区",
    "宮城県仙台市青葉区", "広島県広島市中区", "京都府京都市左京区", "埼玉県さいたま市浦和区", "沖縄県那覇市",
)
_KANJI_DIGITS: Final = "一二三四五六七八九"
_OPERATORS: Final = tuple(f"op{n:04d}" for n in range(1, 21))
_TERMINALS: Final = tuple(f"term-{n:02d}" for n in range(1, 9))
_IDEOGRAPHIC_SPACE: Final = "\u3000"

# Precomputed per name: the search-key part (清音化 of the reading).
_SURNAME_SEION: Final = tuple(seion_kana(k) for _, k in SURNAMES)
_GIVEN_SEION: Final = {sex: tuple(seion_kana(k) for _, k in names) for sex, names in GIVEN_NAMES.items()}


def municipality_name(code: str) -> str:
    """Prefecture + municipality name for a public code; a clearly fictional city when unknown."""
    pref_index = int(code[:2]) - 1
    pref = PREFECTURES[pref_index] if 0 <= pref_index < len(PREFECTURES) else ""
    return pref + MUNICIPALITIES.get(code, "架空市")


def _meta(code: str, seq: int) -> dict[str, object]:
    # Deterministic from (code, seq), so a resident's history can be rebuilt and request ids are unique.
    n = int(code[-4:]) + seq
    return {
        "request_id": f"sim-{code}-{seq}",
        "operator_id": _OPERATORS[n % len(_OPERATORS)],
        "terminal_id": _TERMINALS[n % len(_TERMINALS)],
        "update_seq": seq,
    }


class _Addresses:
    """Synthetic addresses within one municipality."""

    def __init__(self, municipality_code: str) -> None:
        self.prefix = municipality_name(municipality_code)
        self.postal3 = f"{100 + int(municipality_code[:5]) % 900:03d}"

    def draw(self, r: random.Random) -> tuple[str, str]:
        """(address, postal_code)."""
        rand = r.random
        town = int(rand() * len(TOWNS))
        chome = int(rand() * 9)
        block, house = int(rand() * 30) + 1, int(rand() * 20) + 1
        address = f"{self.prefix}{TOWNS[town]}{_KANJI_DIGITS[chome]}丁目{block}番{house}号"
        if rand() < 0.12:
            # 方書: a building name and room number after a full-width space
            building = BUILDINGS[int(rand() * len(BUILDINGS))]
            address += f"{_IDEOGRAPHIC_SPACE}{building}{TOWNS[town]}{int(rand() * 8) + 1}0{int(rand() * 9) + 1}号室"
        return address, f"{self.postal3}{town:02d}{chome + 1:02d}"


def _elsewhere(r: random.Random) -> str:
    return (f"{ELSEWHERE[int(r.random() * len(ELSEWHERE))]}{TOWNS[int(r.random() * len(TOWNS))]}"
            f"{int(r.random() * 5) + 1}丁目{int(r.random() * 30) + 1}番{int(r.random() * 20) + 1}号")


def _affine(r: random.Random, modulus: int) -> tuple[int, int]:
    # a·i + b mod 10^k is a bijection when gcd(a, 10) = 1: unique codes without a "seen" set.
    while True:
        a = r.randrange(modulus // 10, modulus)
        if a % 2 and a % 5:
            return a, r.randrange(modulus)


class _IsoDates(dict[int, str]):
    """ordinal -> ISO date, memoised: a million records share a few tens of thousands of days."""

    def __missing__(self, ordinal: int) -> str:
        text = self[ordinal] = dt.date.fromordinal(ordinal).isoformat()
        return text


_ISO_DATES: Final = _IsoDates()
_iso = _ISO_DATES.__getitem__


def _empty_record() -> dict[str, object]:
    return dict.fromkeys(RECORD_FIELDS)


def generate_residents(
    n: int,
    *,
    seed: int,
    municipality_code: str,
    today: dt.date,
    deleted_ratio: float = 0.02,
    juminhyo_validator: JuminhyoCodeValidator | None = None,
) -> Iterator[dict[str, object]]:
    """Yield ``n`` SYNTHETIC stored records (never real data), deterministic for ``seed``.

    Each record has every name of ``validate.RECORD_FIELDS``: kanji and hiragana names with a
    full-width space, 清音化 key, birth date 0-105 years before ``today``, 性別 "1"/"2", a synthetic
    address and 郵便番号 in ``municipality_code``, a valid 個人番号 and a 住民票コード valid under
    ``juminhyo_validator`` (default digits-only, whose codes also pass the provisional check),
    about 3 % with 旧氏. About 35 % were born here (出生), the rest moved in (転入, with 転入前住所);
    about 30 % moved within the town since (転居); ``deleted_ratio`` are 消除者 (転出 or 死亡).
    ``update_seq`` counts those events; ``resident_intake_items`` replays them.
    """
    if not is_valid_municipality_code(municipality_code):
        raise ValueError("municipality_code must be a valid 6-digit 全国地方公共団体コード")
    validator = juminhyo_validator or DigitsOnlyJuminhyoCodeValidator()
    r = random.Random(seed)  # noqa: S311 -- deterministic synthetic data, not a secret
    rand = r.random
    code_a, code_b = _affine(r, 10**10)
    number_a, number_b = _affine(r, 10**11)
    addresses = _Addresses(municipality_code)
    today_ord = today.toordinal()
    max_age_days = 105 * 365 + 25
    n_surnames = len(SURNAMES)

    for i in range(n):
        code = validator.complete(f"{(code_a * i + code_b) % 10**10:010d}")
        body = f"{(number_a * i + number_b) % 10**11:011d}"
        sex = "1" if rand() < 0.5 else "2"
        given = GIVEN_NAMES[sex]
        s_idx = int(rand() * n_surnames)
        g_idx = int(rand() * len(given))
        birth = today_ord - int(rand() * max_age_days)
        address, postal = addresses.draw(r)

        rec = _empty_record()
        rec.update(
            juminhyo_code=code,
            name_kanji=f"{SURNAMES[s_idx][0]}{_IDEOGRAPHIC_SPACE}{given[g_idx][0]}",
            name_kana=f"{SURNAMES[s_idx][1]}{_IDEOGRAPHIC_SPACE}{given[g_idx][1]}",
            name_kana_seion=_SURNAME_SEION[s_idx] + _GIVEN_SEION[sex][g_idx],
            birth_date=_iso(birth),
            sex=sex,
            municipality_code=municipality_code,
            postal_code=postal,
            address=address,
            my_number=body + str(my_number_check_digit(body)),
            update_locked=False,
            record_status="current",
        )
        if sex == "2" and today_ord - birth > 25 * 365 and rand() < 0.06:
            former = SURNAMES[(s_idx + 1 + int(rand() * (n_surnames - 1))) % n_surnames]
            rec["former_surname"], rec["former_surname_kana"] = former

        if rand() < 0.35:
            came = birth
            reason = "shussei"
        else:
            came = birth + int(rand() * (today_ord - birth + 1))
            reason = "tennyu"
            rec["previous_address"] = _elsewhere(r)
        last = came
        seq = 1
        rec["became_resident_on"] = rec["address_set_on"] = _iso(came)
        if today_ord > came and rand() < 0.3:
            last = came + 1 + int(rand() * (today_ord - came))
            reason = "tenkyo"
            seq = 2
            rec["address_set_on"] = _iso(last)
        notified = min(last + int(rand() * 14), today_ord)
        if rand() < deleted_ratio:
            last = last + int(rand() * (today_ord - last + 1))
            reason = "shibou" if today_ord - birth > 60 * 365 and rand() < 0.7 else "tenshutsu"
            notified = min(last + int(rand() * 7), today_ord) if reason == "shibou" else last
            seq += 1
            rec["record_status"] = "deleted"
        rec["change_reason"] = reason
        rec["changed_on"] = _iso(last)
        rec["notified_on"] = _iso(notified)
        rec.update(_meta(code, seq))
        yield rec


def _earlier_address(resident: Mapping[str, Any]) -> tuple[str, str]:
    # The address before a 転居, derived from the resident so the history can be rebuilt exactly.
    r = random.Random(f"earlier-{resident['juminhyo_code']}")  # noqa: S311 -- not a secret
    address, postal = _Addresses(str(resident["municipality_code"])).draw(r)
    if address == resident["address"]:
        address += f"{_IDEOGRAPHIC_SPACE}別棟"
    return address, postal


_PERSON_FIELDS: Final = ("name_kanji", "name_kana", "former_surname", "former_surname_kana", "birth_date", "sex",
                         "municipality_code", "my_number")


def resident_intake_items(resident: Mapping[str, Any]) -> list[dict[str, object]]:
    """The SYNTHETIC intake items that build ``resident`` (from ``generate_residents``) from nothing.

    出生 or 転入 first, then 転居 if the resident moved (address_set_on > became_resident_on), then
    死亡/転出 for a 消除者. Replayed in order through ``validate_update`` from an empty store, they
    produce exactly ``resident`` as the current record.
    """
    code = str(resident["juminhyo_code"])
    moved = resident["address_set_on"] != resident["became_resident_on"]
    deleted = resident["record_status"] == "deleted"
    items: list[dict[str, object]] = []

    create: dict[str, object] = {"juminhyo_code": code}
    create.update({f: resident[f] for f in _PERSON_FIELDS if resident[f] is not None})
    create["change_reason"] = "tennyu" if resident["previous_address"] is not None else "shussei"
    if resident["previous_address"] is not None:
        create["previous_address"] = resident["previous_address"]
    create["became_resident_on"] = create["address_set_on"] = create["changed_on"] = resident["became_resident_on"]
    if moved:
        create["address"], create["postal_code"] = _earlier_address(resident)
    else:
        create["address"], create["postal_code"] = resident["address"], resident["postal_code"]
    items.append(create)

    if moved:
        items.append({
            "juminhyo_code": code, "change_reason": "tenkyo", "changed_on": resident["address_set_on"],
            "address": resident["address"], "postal_code": resident["postal_code"],
            "address_set_on": resident["address_set_on"],
        })
    if deleted:
        items.append({"juminhyo_code": code, "change_reason": resident["change_reason"],
                      "changed_on": resident["changed_on"]})
    for seq, item in enumerate(items, start=1):
        item.update(_meta(code, seq))
    # 届出の年月日 of the last event is the one stored; earlier events were notified on their day.
    for item in items[:-1]:
        item["notified_on"] = item["changed_on"]
    items[-1]["notified_on"] = resident["notified_on"]
    return items


# --- further updates ----------------------------------------------------------------------------

_EVENT_WEIGHTS: Final[tuple[tuple[str, float], ...]] = (
    ("tenkyo", 0.38), ("shussei", 0.14), ("tennyu", 0.16), ("tenshutsu", 0.14), ("shibou", 0.12),
    ("shimei_henko", 0.06),
)


def _latest_date(residents: list[dict[str, Any]]) -> dt.date:
    latest = "1873-01-01"
    for rec in residents:
        for f in ("birth_date", "became_resident_on", "address_set_on", "changed_on", "notified_on"):
            value = rec.get(f)
            if value is not None and str(value) > latest:
                latest = str(value)
    return dt.date.fromisoformat(latest)


def generate_updates(
    residents: Iterable[Mapping[str, Any]],
    n: int,
    *,
    seed: int,
    today: dt.date | None = None,
    juminhyo_validator: JuminhyoCodeValidator | None = None,
) -> Iterator[dict[str, object]]:
    """Yield ``n`` SYNTHETIC valid intake items following ``residents`` (never real data).

    Mix: 転居 (partial items), 出生 (a child at a parent's address), 転入 (a new person, or a 消除者
    who left by 転出 coming back with the same 住民票コード), 転出 and 死亡 (partial), 氏名の変更.
    Per resident the 更新順番号 continue from the stored one (new residents start at 1) and the
    異動年月日 never go back; 依頼管理番号 are unique. Every date is ≤ ``today`` (default: the
    latest date found in ``residents``). New 住民票コード and 個人番号 never collide with existing ones.
    """
    r = random.Random(seed)  # noqa: S311 -- deterministic synthetic data, not a secret
    rand = r.random
    validator = juminhyo_validator or DigitsOnlyJuminhyoCodeValidator()
    people: list[dict[str, Any]] = [dict(rec) for rec in residents]
    if not people:
        raise ValueError("generate_updates needs at least one resident")
    today = today or _latest_date(people)
    today_ord = today.toordinal()
    codes = {p["juminhyo_code"] for p in people}
    numbers = {p["my_number"] for p in people if p.get("my_number")}
    addresses = _Addresses(str(people[0]["municipality_code"]))
    kinds = [k for k, _ in _EVENT_WEIGHTS]
    weights = [w for _, w in _EVENT_WEIGHTS]

    def new_code() -> str:
        while True:
            code = validator.complete(f"{r.randrange(10**10):010d}")
            if code not in codes:
                codes.add(code)
                return code

    def new_number() -> str:
        while True:
            body = f"{r.randrange(10**11):011d}"
            number = body + str(my_number_check_digit(body))
            if number not in numbers:
                numbers.add(number)
                return number

    def pick(pred: Any) -> dict[str, Any] | None:
        for _ in range(50):
            p = people[int(rand() * len(people))]
            if pred(p):
                return p
        return None

    def event_day(p: Mapping[str, Any]) -> int:
        last = dt.date.fromisoformat(str(p["changed_on"])).toordinal()
        return max(last, today_ord - 60) + int(rand() * (today_ord - max(last, today_ord - 60) + 1))

    def current(p: Mapping[str, Any]) -> bool:
        return p["record_status"] == "current" and not p.get("update_locked")

    produced = 0
    while produced < n:
        kind = r.choices(kinds, weights)[0]
        item: dict[str, object] | None = None
        if kind in ("tenkyo", "tenshutsu", "shibou", "shimei_henko"):
            p = pick(current)
            if p is None:
                continue
            day = event_day(p)
            item = {"juminhyo_code": p["juminhyo_code"], "change_reason": kind, "changed_on": _iso(day)}
            if kind == "tenkyo":
                address, postal = addresses.draw(r)
                if address == p["address"]:
                    continue
                item.update(address=address, postal_code=postal, address_set_on=_iso(day))
                item["notified_on"] = _iso(min(day + int(rand() * 14), today_ord))
            elif kind == "shibou":
                item["notified_on"] = _iso(min(day + int(rand() * 7), today_ord))
            elif kind == "tenshutsu":
                item["notified_on"] = _iso(day)
            else:  # 氏名の変更: a new surname, same given name
                surname = SURNAMES[int(rand() * len(SURNAMES))]
                given_kanji = str(p["name_kanji"]).split(_IDEOGRAPHIC_SPACE, 1)[-1]
                given_kana = str(p["name_kana"]).split(_IDEOGRAPHIC_SPACE, 1)[-1]
                name_kanji = f"{surname[0]}{_IDEOGRAPHIC_SPACE}{given_kanji}"
                if name_kanji == p["name_kanji"]:
                    continue
                item.update(name_kanji=name_kanji, name_kana=f"{surname[1]}{_IDEOGRAPHIC_SPACE}{given_kana}",
                            notified_on=_iso(day))
            seq = int(p["update_seq"]) + 1
            if kind in ("tenshutsu", "shibou"):
                p["record_status"] = "deleted"
            for f in ("address", "postal_code", "address_set_on", "name_kanji", "name_kana"):
                if f in item:
                    p[f] = item[f]
        elif kind == "shussei":
            parent = pick(lambda p: current(p) and 18 * 365 <= today_ord - _ord(p["birth_date"]) <= 50 * 365)
            if parent is None:
                continue
            day = max(today_ord - 60, _ord(parent["changed_on"])) + int(rand() * 61)
            day = min(day, today_ord)
            sex = "1" if rand() < 0.5 else "2"
            given = GIVEN_NAMES[sex][int(rand() * len(GIVEN_NAMES[sex]))]
            surname_kanji = str(parent["name_kanji"]).split(_IDEOGRAPHIC_SPACE, 1)[0]
            surname_kana = str(parent["name_kana"]).split(_IDEOGRAPHIC_SPACE, 1)[0]
            p = {
                "juminhyo_code": new_code(), "change_reason": "shussei", "changed_on": _iso(day),
                "name_kanji": f"{surname_kanji}{_IDEOGRAPHIC_SPACE}{given[0]}",
                "name_kana": f"{surname_kana}{_IDEOGRAPHIC_SPACE}{given[1]}",
                "birth_date": _iso(day), "sex": sex, "municipality_code": parent["municipality_code"],
                "postal_code": parent["postal_code"], "address": parent["address"], "my_number": new_number(),
                "became_resident_on": _iso(day), "address_set_on": _iso(day),
                "notified_on": _iso(min(day + int(rand() * 14), today_ord)),
            }
            item = dict(p)
            seq = 1
            p.update(record_status="current", update_locked=False)
            people.append(p)
        else:  # 転入: a former resident coming back, or someone new
            back = pick(lambda p: p["record_status"] == "deleted" and p["change_reason"] == "tenshutsu"
                        and not p.get("update_locked")) if rand() < 0.3 else None
            address, postal = addresses.draw(r)
            if back is not None:
                day = event_day(back)
                p = back
                seq = int(p["update_seq"]) + 1
                person = {f: p[f] for f in _PERSON_FIELDS if p.get(f) is not None}
            else:
                day = today_ord - int(rand() * 60)
                sex = "1" if rand() < 0.5 else "2"
                surname = SURNAMES[int(rand() * len(SURNAMES))]
                given = GIVEN_NAMES[sex][int(rand() * len(GIVEN_NAMES[sex]))]
                person = {
                    "name_kanji": f"{surname[0]}{_IDEOGRAPHIC_SPACE}{given[0]}",
                    "name_kana": f"{surname[1]}{_IDEOGRAPHIC_SPACE}{given[1]}",
                    "birth_date": _iso(day - int(rand() * 90 * 365)), "sex": sex,
                    "municipality_code": people[0]["municipality_code"], "my_number": new_number(),
                }
                p = {"juminhyo_code": new_code(), "update_locked": False}
                people.append(p)
                seq = 1
            item = {"juminhyo_code": p["juminhyo_code"], "change_reason": "tennyu", "changed_on": _iso(day),
                    **person, "address": address, "postal_code": postal, "previous_address": _elsewhere(r),
                    "became_resident_on": _iso(day), "address_set_on": _iso(day),
                    "notified_on": _iso(min(day + int(rand() * 14), today_ord))}
            p.update(item, record_status="current")
        item.update(_meta(str(item["juminhyo_code"]), seq))
        p["update_seq"] = seq
        p["change_reason"] = item["change_reason"]
        p["changed_on"] = item["changed_on"]
        produced += 1
        yield item


def _ord(iso: object) -> int:
    return dt.date.fromisoformat(str(iso)).toordinal()


# --- invalid variants ---------------------------------------------------------------------------


class InvalidVariant(NamedTuple):
    """A broken copy of a valid item, the code ``validate_update`` must give it, and the field."""

    item: dict[str, object]
    code: str
    field: str | None


def make_invalid_variants(
    item: Mapping[str, object], *, validators: Validators | None = None
) -> Iterator[InvalidVariant]:
    """Yield SYNTHETIC invalid variants of the valid intake ``item``, one defect each.

    Each variant fails an item-only check, so it gets its code whatever the stored record is
    (validate with the same ``current`` the valid item would have). Fields the item does not carry
    are not mutated.
    """
    v = validators or Validators()

    def variant(code: str, field: str | None, **changes: object) -> InvalidVariant:
        bad = dict(item)
        for k, val in changes.items():
            if val is _DROP:
                bad.pop(k, None)
            else:
                bad[k] = val
        return InvalidVariant(bad, code, field)

    def extra(key: str) -> InvalidVariant:
        bad = dict(item)
        bad[key] = "x"
        return InvalidVariant(bad, "E_FIELD_NOT_ALLOWED", key if key.isascii() else None)

    for key in ("honseki", "setainushi", "zokugara", "name_kana_seion", "record_status", "timestamp"):
        yield extra(key)
    for key in ("本籍", "世帯主"):
        yield extra(key)
    for name in ("operator_id", "terminal_id", "update_seq"):
        yield variant("E_META_MISSING", name, **{name: _DROP})
        yield variant("E_META_MISSING", name, **{name: None})
    for name in ITEM_REQUIRED:
        yield variant("E_MISSING_FIELD", name, **{name: _DROP})
    for bad_seq, code in (("1", "E_TYPE"), (True, "E_TYPE"), (1.0, "E_TYPE"), (0, "E_UPDATE_SEQ_INVALID"),
                          (-3, "E_UPDATE_SEQ_INVALID"), (2**63, "E_UPDATE_SEQ_INVALID")):
        yield variant(code, "update_seq", update_seq=bad_seq)
    for name in ("operator_id", "terminal_id", "request_id"):
        for bad in ("", "op 1", "x" * 65, "オペレータ"):
            yield variant("E_META_INVALID", name, **{name: bad})
        yield variant("E_TYPE", name, **{name: 17})

    for name in ("juminhyo_code", "previous_juminhyo_code"):
        value = item.get(name)
        if not isinstance(value, str):
            continue
        code = value
        for bad in (code[:10], code + "0", "１" * 11, code[:5] + "-" + code[5:]):
            yield variant("E_JUMINHYO_CODE_FORMAT", name, **{name: bad})
        yield variant("E_TYPE", name, **{name: int(code)})
        wrong = code[:10] + str((int(code[10]) + 1) % 10)
        if not v.juminhyo.is_valid(wrong):
            yield variant("E_JUMINHYO_CODE_CHECK_DIGIT", name, **{name: wrong})

    number = item.get("my_number")
    if isinstance(number, str):
        for k in (1, 5):
            yield variant("E_MY_NUMBER_CHECK_DIGIT", "my_number",
                          my_number=number[:11] + str((int(number[11]) + k) % 10))
        for bad in (number[:11], number + "1", "１" * 12, f"{number[:4]}-{number[4:8]}-{number[8:]}"):
            yield variant("E_MY_NUMBER_FORMAT", "my_number", my_number=bad)
        yield variant("E_TYPE", "my_number", my_number=int(number))

    muni = item.get("municipality_code")
    if isinstance(muni, str):
        yield variant("E_MUNICIPALITY_CODE_CHECK_DIGIT", "municipality_code",
                      municipality_code=muni[:5] + str((int(muni[5]) + 1) % 10))
        yield variant("E_MUNICIPALITY_CODE_FORMAT", "municipality_code", municipality_code=muni[:5])
    if isinstance(item.get("postal_code"), str):
        postal = str(item["postal_code"])
        for bad in (f"{postal[:3]}-{postal[3:]}", postal[:6], "１" * 7):
            yield variant("E_POSTAL_CODE_INVALID", "postal_code", postal_code=bad)
    if "sex" in item:
        for bad in ("0", "3", "9", "男"):
            yield variant("E_SEX_INVALID", "sex", sex=bad)
        yield variant("E_TYPE", "sex", sex=1)

    for name in ("birth_date", "became_resident_on", "address_set_on", "notified_on", "changed_on"):
        if name not in item:
            continue
        for bad in ("2023-02-29", "2024-13-01", "2024/04/01", "平成31年5月1日", "令和元年4月30日", "昭和0年1月1日",
                    "1872-12-31", "明治5年12月31日", "yesterday"):
            yield variant("E_DATE_INVALID", name, **{name: bad})
        yield variant("E_TYPE", name, **{name: 20240401})
        yield variant("E_DATE_FUTURE", name, **{name: "9999-12-31"})

    for name in ("name_kanji", "name_kana", "former_surname", "former_surname_kana", "address", "previous_address"):
        value = item.get(name)
        if not isinstance(value, str):
            continue
        for ch in ("\x00", "\x07", "\t", "\n", "\x7f", "\x85", "\u202e", "\u2066", "\u200b", "\ufeff", "\u2028"):
            yield variant("E_TEXT_CONTROL_CHAR", name, **{name: value[:1] + ch + value[1:]})
        for ch in ("\ue000", "\udc80"):
            yield variant("E_TEXT_CHAR_NOT_ALLOWED", name, **{name: value + ch})
        filler = "あ" if "kana" in name else "亜"
        yield variant("E_TEXT_TOO_LONG", name, **{name: filler * (MAX_LENGTHS[name] + 1)})
        yield variant("E_TYPE", name, **{name: ["list"]})
        if "kana" in name:
            yield variant("E_KANA_INVALID", name, **{name: value + "山"})
            yield variant("E_KANA_INVALID", name, **{name: value + "A"})
        if name in ("name_kanji", "name_kana", "address"):
            yield variant("E_MISSING_FIELD", name, **{name: "\u3000 "})
            yield variant("E_MISSING_FIELD", name, **{name: None})

    for bad in ("moving", "転入", "TENNYU", ""):
        yield variant("E_REASON_UNKNOWN", "change_reason", change_reason=bad)
    yield variant("E_TYPE", "change_reason", change_reason=3)
    yield variant("E_TYPE", "update_locked", update_locked="true")
    yield variant("E_TYPE", "update_locked", update_locked=1)

    reason = REASONS.get(str(item.get("change_reason")))
    if reason is not None:
        for name in sorted(reason.requires):
            yield variant("E_MISSING_FIELD", name, **{name: _DROP})
        if reason.kind == "create":
            for name in ("name_kanji", "my_number", "birth_date", "sex", "address"):
                yield variant("E_MISSING_FIELD", name, **{name: _DROP})


class _Drop:
    """Marker: remove the key."""


_DROP: Final = _Drop()


# --- command line: JSON lines for the lab's 既存住基 client ---------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Print SYNTHETIC intake items as JSON lines: the residents' histories, then further updates."""
    parser = argparse.ArgumentParser(prog="python -m jukics.sim.residents", description=main.__doc__)
    parser.add_argument("--residents", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--municipality-code", default="142140")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today())
    parser.add_argument("--juminhyo-validator", default="digits-only")
    args = parser.parse_args(argv)
    validator = get_juminhyo_validator(args.juminhyo_validator)
    residents = list(generate_residents(args.residents, seed=args.seed, municipality_code=args.municipality_code,
                                        today=args.today, juminhyo_validator=validator))
    out = sys.stdout
    for rec in residents:
        for item in resident_intake_items(rec):
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    if args.updates:
        for item in generate_updates(residents, args.updates, seed=args.seed + 1, today=args.today,
                                     juminhyo_validator=validator):
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
