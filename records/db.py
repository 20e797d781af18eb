"""Engines for the ledger, and its schema migrations (Alembic, run programmatically).

SQLite (the embedded default): WAL journal, foreign keys on, a busy timeout, and every
transaction begins ``IMMEDIATE``, taking the write lock up front, so concurrent appenders queue
behind each other instead of failing to upgrade a read lock into a write lock half-way. A session
that only reads may use :func:`read_only` to begin ``DEFERRED`` instead. PostgreSQL is served by
psycopg 3; plain ``postgresql://`` URLs are mapped to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from records import legacy_sealing
from records.chain import CHAIN_KEYS_OPTION, check_head_key, last_unkeyed
from records.chain_keys import ChainKeys
from records.data_keys import DATA_KEKS_OPTION, Vault
from records.settings import Settings

PACKAGE_DIR = Path(__file__).parent
ALEMBIC_INI = PACKAGE_DIR / "alembic.ini"
MIGRATIONS_DIR = PACKAGE_DIR / "migrations"

#: Seconds a SQLite connection waits for the write lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30
#: Execution option that makes a SQLite transaction begin DEFERRED (for read-only work).
READ_ONLY_OPTION = "ledger_read_only"
#: PostgreSQL advisory lock taken while migrating, so two processes never migrate at once.
MIGRATION_LOCK_KEY = 0x4C454447_00000002


def database_url(url: str | URL) -> URL:
    """``url`` as SQLAlchemy will use it: ``postgresql://`` and ``postgres://`` mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory(url: URL) -> bool:
    return url.database in {None, "", ":memory:"} or url.query.get("mode") == "memory"


def make_engine(url: str | URL, *, chain_keys: ChainKeys | None = None,
                data_keks: ChainKeys | None = None, **engine_options: Any) -> Engine:
    """An engine for the ledger at ``url`` (SQLite or PostgreSQL), set up as described above.

    ``chain_keys`` is the key ring that seals the audit chain; an engine without one can read
    and verify unkeyed events but cannot append. ``data_keks`` is the ring of key-encryption keys
    that wrap the requests' data keys (:mod:`records.data_keys`); without it the engine cannot
    record a submission nor read a sealed one. An in-memory SQLite URL (``sqlite://``) gets one
    shared connection (``StaticPool``), so the database lives as long as the engine; use it from
    one thread at a time.
    """
    if chain_keys is not None:
        engine_options["execution_options"] = {
            **engine_options.get("execution_options", {}), CHAIN_KEYS_OPTION: chain_keys}
    if data_keks is not None:
        engine_options["execution_options"] = {
            **engine_options.get("execution_options", {}), DATA_KEKS_OPTION: Vault(data_keks)}
    parsed = database_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        if _is_memory(parsed):
            engine_options.setdefault("poolclass", StaticPool)
        engine = create_engine(parsed, connect_args=connect_args, **engine_options)
        _configure_sqlite(engine)
        return engine
    if backend == "postgresql":
        engine_options.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **engine_options)
    raise ValueError(f"the ledger runs on SQLite or PostgreSQL, not {backend!r}")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # what is deleted (a shredded request's data key and subjects) is overwritten
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


def read_only(engine: Engine) -> Engine:
    """The same engine for sessions that only read: on SQLite they begin DEFERRED.

    Never append to the ledger through it: a DEFERRED transaction that later writes can fail
    with "database is locked" instead of waiting its turn.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def alembic_config() -> Config:
    """The Alembic configuration of the ledger's migrations (``records/alembic.ini``)."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine) -> None:
    """Bring the ledger's schema to the newest migration (``alembic upgrade head``).

    The migration runs on one connection of ``engine`` handed to Alembic, so it works for an
    in-memory SQLite engine too. On PostgreSQL an advisory lock keeps concurrent starters from
    migrating at the same time; on SQLite the IMMEDIATE transaction does.
    """
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def ensure_database_folder(url: str | URL) -> None:
    """Create the folder a SQLite database file will live in (nothing to do for other URLs)."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite" and not _is_memory(parsed) and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def open_ledger(settings: Settings, *, chain_keys: ChainKeys | None = None,
                data_keks: ChainKeys | None = None) -> Engine:
    """The ledger's engine, with its data folder created, its schema migrated, its chain key
    ring bound (``chain_keys``, else the settings' own: :meth:`Settings.chain_keys`) and its KEK
    ring (``data_keks``, else :meth:`Settings.data_keks`).

    Raises :class:`~records.errors.ChainKeyError` if the key that sealed the chain's last event
    is not in the ring: the engine would stop at its first write otherwise.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url(settings.resolved_database_url)
    ensure_database_folder(url)
    new_ring = chain_keys is None and settings.makes_chain_key_file
    keys = chain_keys or settings.chain_keys()
    keks = data_keks or settings.data_keks()
    engine = make_engine(url, chain_keys=keys, data_keks=keks)
    migrate(engine)
    with Session(engine) as session:
        unkeyed = last_unkeyed(session=session) if new_ring else 0
        check_head_key(session=session, keys=keys)
    if unkeyed:
        # The key file is made now, for a ledger written before the chain was keyed: it says
        # which events may carry no key (only when made: never later, for an unkeyed tail).
        keys = settings.note_unkeyed_until(unkeyed)
        engine.dispose()
        engine = make_engine(url, chain_keys=keys, data_keks=keks)
    if legacy_sealing.pending(engine):
        # submissions recorded in clear before 0.8.0: sealed now, with the KEK (migration 0007)
        legacy_sealing.seal_pending(engine)
    return engine
