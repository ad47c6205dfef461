"""The store and audit tests of tests/unit, re-run against a real PostgreSQL server (conftest.py).

The test functions are the same objects; only ``db_url`` (and ``raw_storage_files``) differ. Tests
that touch no database (rules, crypto) or only SQLite specifics are not repeated here.
"""

from __future__ import annotations

import pytest
import test_audit_chain
import test_store_migrations
import test_store_plaintext
import test_store_repository
import test_store_retention
from sqlalchemy import text

pytestmark = pytest.mark.postgres

_DB_FREE = {"test_rule_examples", "test_cutoff_matches_the_rule"}
_FIXTURES = {"filled"}

for _module in (test_store_repository, test_store_retention, test_store_migrations, test_store_plaintext,
                test_audit_chain):
    for _name, _obj in vars(_module).items():
        if (_name.startswith("test_") and _name not in _DB_FREE) or _name in _FIXTURES:
            globals()[_name] = _obj


def test_server_listens_on_the_unix_socket_only(engine):
    with engine.connect() as conn:
        assert conn.execute(text("SHOW listen_addresses")).scalar() == ""
        assert conn.execute(text("SELECT inet_server_addr()")).scalar() is None  # connected over the socket


def test_audit_log_refuses_truncate(filled, engine):
    with pytest.raises(Exception, match="E_IMMUTABLE"), engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_log"))
