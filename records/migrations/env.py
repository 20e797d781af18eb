"""Alembic environment of the ledger: the target is the sqlmodel metadata of records.models.

:func:`records.db.migrate` hands over an open connection in ``config.attributes["connection"]``
(which also serves an in-memory SQLite engine). Run from the ``alembic`` command line instead,
the URL comes from ``sqlalchemy.url`` in the ini file or else from the settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from records.db import ensure_database_folder, make_engine
from records.models import metadata
from records.settings import load_settings

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or load_settings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Print the migration SQL for the configured URL's dialect instead of running it."""
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = _url()
    ensure_database_folder(url)
    engine = make_engine(url)
    try:
        with engine.begin() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
