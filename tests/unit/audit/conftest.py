"""Audit tests on SQLite (a temporary file per test). tests/postgres runs them on PostgreSQL too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_support import *  # noqa: F403 - shared fixtures (engine, store, keystore, clock, register, audit)


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'jukics.sqlite'}"
