"""Shared fixtures and synthetic data for the store and audit tests (SQLite here, PostgreSQL in
tests/postgres, which imports this module). Every resident is synthetic: random 住民票コード, a
個人番号 with a valid check digit, made-up names and addresses."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from jukics.audit.chain import AuditLog
from jukics.keystore.dev import DevKeyStore
from jukics.store.db import make_engine, upgrade
from jukics.store.repository import ResidentStore

SURNAMES = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("渡辺", "ワタナベ"),
            ("伊藤", "イトウ"), ("中村", "ナカムラ"), ("小林", "コバヤシ"), ("加藤", "カトウ"), ("吉田", "ヨシダ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("一郎", "イチロウ"), ("美咲", "ミサキ"), ("健太", "ケンタ"),
         ("陽菜", "ヒナ"), ("翔", "ショウ"), ("結衣", "ユイ"), ("大輔", "ダイスケ"), ("葵", "アオイ")]
TOWNS = ["霞が関", "丸の内", "大手町", "永田町", "内幸町", "有楽町", "日比谷公園", "神田駿河台"]


def my_number_check_digit(first11: str) -> str:
    """総務省令第85号 第5条: 11 − (Σ Pn×Qn mod 11); 0 when the remainder ≤ 1 (n from the lowest digit)."""
    digits = [int(d) for d in reversed(first11)]  # P1 is the lowest digit of the 11
    total = sum(p * (n + 1 if n <= 6 else n - 5) for n, p in enumerate(digits, start=1))
    remainder = total % 11
    return "0" if remainder <= 1 else str(11 - remainder)


def make_my_number(rng: random.Random) -> str:
    first = f"{rng.randrange(10**10, 10**11):011d}"
    return first + my_number_check_digit(first)


class SyntheticRegister:
    """Generates distinct synthetic residents and the updates that create, change and delete them."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.codes: set[str] = set()
        self.numbers: set[str] = set()
        self.request = 0

    def _unique(self, pool: set[str], make: Any) -> str:
        while True:
            value = make()
            if value not in pool:
                pool.add(value)
                return value

    def resident(self) -> dict[str, Any]:
        rng = self.rng
        (sk, skana), (gk, gkana) = rng.choice(SURNAMES), rng.choice(GIVEN)
        code = self._unique(self.codes, lambda: f"{rng.randrange(10**10, 10**11):011d}")
        return {
            "juminhyo_code": code,
            "name_kanji": f"{sk}　{gk}{rng.randrange(1000, 9999)}",  # numbered so every name is distinct
            "name_kana": f"{skana} {gkana}",
            "birth_date": f"{rng.randrange(1930, 2020)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "sex": rng.choice(["1", "2"]),
            "municipality_code": "131016",
            "postal_code": f"100-{rng.randrange(0, 9999):04d}",
            "address": f"東京都千代田区{rng.choice(TOWNS)}{rng.randrange(1, 9)}丁目{rng.randrange(1, 99)}番"
                       f"{rng.randrange(1, 99)}号{rng.randrange(100, 999)}",
            "my_number": self._unique(self.numbers, lambda: make_my_number(rng)),
            "change_reason": "転入",
            "changed_on": "2026-04-01",
        }

    def update(self, kind: str, record: dict[str, Any], seq: int, request_id: str | None = None) -> dict[str, Any]:
        self.request += 1
        return {
            "kind": kind,
            "juminhyo_code": record["juminhyo_code"],
            "record": dict(record),
            "meta": {
                "request_id": request_id or f"REQ{self.request:08d}",
                "operator_id": "op-0001",
                "terminal_id": "term-01",
                "update_seq": seq,
            },
        }


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 4, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def make_immutable_tables_writable(engine: Engine) -> None:
    """What an attacker with direct database access does first: remove the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for trigger in ("audit_log_no_update", "audit_log_no_delete", "resident_versions_no_update"):
                conn.execute(text(f"DROP TRIGGER {trigger}"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE resident_versions DISABLE TRIGGER USER"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keystore(tmp_path: Any) -> DevKeyStore:
    return DevKeyStore(tmp_path / "keys" / "secret")


@pytest.fixture
def engine(db_url: str) -> Any:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine, keystore: DevKeyStore, clock: FakeClock) -> ResidentStore:
    return ResidentStore.from_keystore(engine, keystore, clock)


@pytest.fixture
def audit(engine: Engine, keystore: DevKeyStore, clock: FakeClock) -> AuditLog:
    return AuditLog.from_keystore(engine, keystore, clock)


@pytest.fixture
def register() -> SyntheticRegister:
    return SyntheticRegister()
