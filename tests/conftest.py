"""Fixtures shared by the whole suite: the shipped table of grounds and real ledger engines.

``ledger_engine`` is a migrated ledger on each backend: a SQLite file, an in-memory SQLite
(``StaticPool``) and PostgreSQL, each PostgreSQL test in a schema of its own that is dropped
afterwards. PostgreSQL comes from ``DISCLOSURE_TEST_POSTGRES_URL``; if it cannot be reached the
PostgreSQL cases skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from legal_bases.table import GroundTable, load_table
from records.chain_keys import ChainKey, ChainKeys
from records.db import database_url, make_engine, migrate

POSTGRES_URL = os.environ.get("DISCLOSURE_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: The key ring that seals the test ledgers' audit chains (a fixed key: tests that tamper with a
#: ledger as an insider holding the key use it too).
TEST_CHAIN_KEYS = ChainKeys(current=ChainKey("test-key-1", bytes(range(32))))
#: The KEK ring of the tests' ledgers (records/data_keys.py): never a key of a real ledger.
TEST_DATA_KEKS = ChainKeys(current=ChainKey("test-kek-1", bytes(range(32, 64))))
#: The same ring as ``DISCLOSURE_CHAIN_KEY`` takes it, for the commands a test runs on such a
#: ledger.
TEST_CHAIN_KEY_RING = f"test-key-1:{bytes(range(32)).hex()}"

#: Parameters of ``ledger_engine``; pass a subset with ``indirect=True`` to narrow a test.
LEDGER_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("sqlite-memory", id="sqlite-memory"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def shipped_table() -> GroundTable:
    """The table of grounds the product ships."""
    return load_table()


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    """A Prefect test server (a real API in a subprocess) for one test module.

    Heartbeats off (each sync flow run would cost a second more), analytics off (they lock the
    harness's SQLite at start-up). Module-scoped, not session-scoped: the harness sets
    ``PREFECT_API_URL`` process-wide while it runs, which the modules that start their own
    Prefect servers must not inherit.
    """
    settings = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}
    with temporary_settings(updates=settings), prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def postgres_server() -> URL:
    """The test PostgreSQL server's URL, once it answered; skips (fails under CI) if it does not."""
    url = database_url(POSTGRES_URL)
    engine = make_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = (f"PostgreSQL at {url.render_as_string(hide_password=True)} is unreachable "
                  f"(set DISCLOSURE_TEST_POSTGRES_URL): {exc.orig}")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


@contextmanager
def _postgres_engine(server: URL) -> Iterator[Engine]:
    """An engine whose connections live in a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = make_engine(server)
    try:
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(server.update_query_dict({"options": f"-csearch_path={schema}"}),
                             chain_keys=TEST_CHAIN_KEYS, data_keks=TEST_DATA_KEKS)
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


@contextmanager
def ledger_on(backend: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[Engine]:
    """A migrated, empty ledger on ``backend``: ``sqlite`` (a file in ``folder``),
    ``sqlite-memory`` or ``postgresql`` (a schema of its own, dropped afterwards)."""
    with ExitStack() as stack:
        if backend == "postgresql":
            engine = stack.enter_context(
                _postgres_engine(request.getfixturevalue("postgres_server")))
        elif backend == "sqlite":
            engine = make_engine(f"sqlite:///{folder / 'ledger.db'}", chain_keys=TEST_CHAIN_KEYS,
                                 data_keks=TEST_DATA_KEKS)
            stack.callback(engine.dispose)
        elif backend == "sqlite-memory":
            engine = make_engine("sqlite://", chain_keys=TEST_CHAIN_KEYS,
                                 data_keks=TEST_DATA_KEKS)
            stack.callback(engine.dispose)
        else:
            raise ValueError(f"unknown ledger backend {backend!r}")
        migrate(engine)
        yield engine


@pytest.fixture(params=LEDGER_BACKENDS)
def ledger_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty ledger on each backend."""
    with ledger_on(request.param, request, tmp_path) as engine:
        yield engine


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's totals (tests/faults/fault_support.py), when it ran."""
    support = sys.modules.get("fault_support")
    line = support.summary() if support is not None else None
    if line is not None:
        terminalreporter.write_line(line)


# --- data keys (helper C)
# Reading and tampering with what a ledger seals under a request's data key
# (records/data_keys.py), for tests that check the stored record itself.

import json  # noqa: E402
from collections.abc import Iterable  # noqa: E402

from sqlalchemy.engine import Connection  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from legal_bases.table import canonical_json  # noqa: E402
from records.data_keys import RAW_BODY, DataKey, body_digest, key_for  # noqa: E402
from records.data_keys import subjects_digest as keyed_subjects  # noqa: E402
from records.ledger import raw_body_of  # noqa: E402
from records.models import RequestRow  # noqa: E402

#: ``TEST_DATA_KEKS`` as ``DISCLOSURE_DATA_KEK`` takes it, for the commands a test runs on a
#: ledger of ``ledger_on``.
TEST_DATA_KEK_RING = f"test-kek-1:{bytes(range(32, 64)).hex()}"


def _request_key(ledger: Engine | Session | Connection, request_id: str) -> DataKey:
    """The data key of ``request_id`` (it must not have been shredded)."""
    if isinstance(ledger, Engine):
        with ledger.connect() as connection:
            return _request_key(connection, request_id)
    key = key_for(ledger, request_id)
    assert key is not None, f"request {request_id} has no data key (shredded?)"
    return key


def body_basis(raw: str) -> str:
    """What a body hash is taken over: the canonical JSON of ``raw``, or ``raw`` if not JSON."""
    try:
        return canonical_json(json.loads(raw))
    except (ValueError, RecursionError):
        return raw


def keyed_body_hash(ledger: Engine | Session | Connection, request_id: str, raw: str) -> str:
    """The body hash a submission of ``raw`` has when recorded as ``request_id``: an HMAC under
    the request's data key."""
    return body_digest(_request_key(ledger, request_id), body_basis(raw))


def keyed_subjects_digest(ledger: Engine | Session | Connection, request_id: str,
                          pseudonyms: Iterable[str]) -> str:
    """The ``subjects_digest`` of ``request_id``'s ``request_received`` event for ``pseudonyms``."""
    return keyed_subjects(_request_key(ledger, request_id), pseudonyms)


def sealed_for(ledger: Engine | Session | Connection, request_id: str, text_: str,
               field: str = RAW_BODY) -> str:
    """``text_`` sealed under ``request_id``'s data key as ``field``: a stored value that opens,
    as an insider holding the KEK could write it."""
    return _request_key(ledger, request_id).seal(field, text_)


def opened_raw_body(ledger: Engine | Session, request_id: str) -> str | None:
    """The raw body of ``request_id`` as received (opened with its data key)."""
    if isinstance(ledger, Engine):
        with Session(ledger) as session:
            return opened_raw_body(session, request_id)
    row = ledger.get(RequestRow, request_id)
    assert row is not None, f"no request {request_id}"
    return raw_body_of(session=ledger, row=row)
