"""Schema upgrades: idempotent, complete, and the migration matches the schema module."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from jukics.store.db import current_revision, head_revision, make_engine, upgrade
from jukics.store.schema import audit_head, metadata, outbox_head


def test_upgrade_is_idempotent(db_url):
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        with engine.connect() as conn:
            heads_before = conn.execute(select(outbox_head)).all()
        assert upgrade(engine) == head_revision()  # second run: nothing to do, nothing duplicated
        with engine.connect() as conn:
            assert conn.execute(select(outbox_head)).all() == heads_before
            assert len(conn.execute(select(audit_head)).all()) == 1
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_schema_module(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    names = set(inspect(engine).get_table_names())
    assert {t.name for t in metadata.sorted_tables} <= names


def test_search_indexes_are_on_keyed_hashes_only(engine):
    # Unique constraints count too: PostgreSQL backs them with an index (SQLite's inspector does
    # not list those as indexes, so both kinds are collected for the same answer on both).
    insp = inspect(engine)
    indexed = {
        col
        for table in insp.get_table_names()
        for ix in [*insp.get_indexes(table), *insp.get_unique_constraints(table)]
        for col in ix["column_names"]
    }
    # request_id / cert_id are message ids chosen by 既存住基 and the 転出地 CS, not resident data
    assert indexed <= {"my_number_hash", "name_seion_hash", "birth_date_hash", "deleted_at", "recorded_at",
                       "delete_on", "code_hash", "request_id", "cert_id"}
