"""Prefectures (都道府県, JIS X 0401 order: code 01 北海道 ... 47 沖縄県) and where an address is.

The CS routes F7/F8 searches by where a resident lives (SPEC §2): its own residents locally, the same
prefecture at the 都道府県サーバ, others at the 全国サーバ. The first two digits of a 全国地方公共団体
コード are the prefecture's code.
"""

from __future__ import annotations

from typing import Final

PREFECTURES: Final[tuple[str, ...]] = (
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県", "茨城県", "栃木県", "群馬県",
    "埼玉県", "千葉県", "東京都", "神奈川県", "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県",
    "岐阜県", "静岡県", "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県", "奈良県", "和歌山県",
    "鳥取県", "島根県", "岡山県", "広島県", "山口県", "徳島県", "香川県", "愛媛県", "高知県", "福岡県",
    "佐賀県", "長崎県", "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
)


def prefecture_of_code(municipality_code: str) -> str | None:
    """The prefecture of a 全国地方公共団体コード ("142140" -> "神奈川県"), None when out of range."""
    index = int(municipality_code[:2]) - 1 if municipality_code[:2].isdigit() else -1
    return PREFECTURES[index] if 0 <= index < len(PREFECTURES) else None


def prefecture_of_address(address: str) -> str | None:
    """The prefecture an address names at its start, None when it names none (a partial address)."""
    text = address.strip()
    # 4-character names first: no shorter name is a prefix of one (京都府 vs 東京都 differ at once).
    for name in sorted(PREFECTURES, key=len, reverse=True):
        if text.startswith(name):
            return name
    return None
