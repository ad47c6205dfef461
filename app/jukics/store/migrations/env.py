"""Alembic environment for the jukics store.

The service runs migrations programmatically (:func:`jukics.store.db.upgrade`) and hands over its
connection in ``config.attributes["connection"]``. From a shell (developers), ``alembic -c
app/jukics/store/migrations/alembic.ini upgrade head`` uses ``$JUKICS_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from jukics.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE needs batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from jukics.store.db import make_engine, write_transaction

    url = config.get_main_option("sqlalchemy.url") or os.environ.get("JUKICS_DATABASE_URL")
    if not url:
        raise SystemExit("set JUKICS_DATABASE_URL (or sqlalchemy.url) to run alembic by hand")
    engine = make_engine(url)
    try:
        with write_transaction(engine) as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run `jukics db upgrade`")
run_migrations_online()
