"""The schema: migrations agree with the models, and the database itself keeps the record
append-only, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Engine, event, insert, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from legal_bases.assessment import assess
from legal_bases.request import read_request
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body
from records import totp
from records.db import (
    alembic_config,
    database_url,
    make_engine,
    migrate,
    open_ledger,
    read_only,
)
from records.decisions import record_decision
from records.ledger import record_submission
from records.models import (
    APPEND_ONLY_TABLES,
    LEDGER_TABLES,
    SHREDDABLE_TABLES,
    DeliveryRow,
    metadata,
)
from records.pseudonym import Pseudonymizer
from records.reviews import (
    ReviewAnswerRow,
    enroll_reviewer,
    record_answer,
    remove_reviewer,
    verify_code,
)
from records.settings import load_settings
from records.totp import SecretSeal

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
BODY = {"reference": "GEM-1", "legal_basis": "participatiewet-64", "purpose": "bijstand",
        "subjects": [{"bsn": "111222333"}], "categories": ["personalia"]}


def one_of_everything(engine: Engine, table: GroundTable) -> str:
    """A request with a decision and a delivery, so every record table holds a row."""
    with Session(engine) as session, session.begin():
        parsed = read_request(BODY, received_on=NOW.date())
        request = record_submission(session=session, partner_id="gemeente-utrecht",
                                    requester_body="gemeente", channel="api",
                                    raw_body=json.dumps(BODY), parsed=parsed, received_at=NOW,
                                    pseudonymizer=Pseudonymizer(bytes(32)))
        decision = record_decision(session=session, request_id=request.id,
                                   decision=assess(parsed, Body.GEMEENTE, table), table=table,
                                   decided_at=NOW)
        session.execute(insert(DeliveryRow.__table__), [{  # type: ignore[attr-defined]
            "id": "00000000-0000-4000-8000-00000000d001", "request_id": request.id,
            "decision_id": decision.id, "partner_id": "gemeente-utrecht",
            "destination": "file:///tmp/out", "idempotency_key": "k-1", "status": "delivered",
            "receipt": {"bytes": 10}, "delivered_at": NOW, "flow_run_id": None}])
        seal = SecretSeal(bytes(32))
        secret = enroll_reviewer(session=session, reviewer_id="anna", name="Anna", role="jurist",
                                 seal=seal, now=NOW)
        enroll_reviewer(session=session, reviewer_id="bram", name="Bram", role="jurist",
                        seal=seal, now=NOW)
        remove_reviewer(session=session, reviewer_id="bram", now=NOW)
        code = totp.code_at(secret, totp.step_of(NOW.timestamp()))
        assert verify_code(session=session, reviewer_id="anna", code=code, seal=seal, now=NOW)
        record_answer(session=session, answer=ReviewAnswerRow(
            request_id=request.id, seq=0, reviewer_id="anna", role="jurist", verdict="reject",
            categories=[], motivation="Niet noodzakelijk voor de taak.", accepted=True,
            step="single", answered_at=NOW))
        return request.id


# --- models and migrations agree --------------------------------------------------------------

def test_the_migrated_schema_matches_the_models(ledger_engine: Engine) -> None:
    with ledger_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_the_migrated_schema_has_every_check_constraint_of_the_models(
        ledger_engine: Engine) -> None:
    inspector = inspect(ledger_engine)
    for name in LEDGER_TABLES:
        declared = {c.name for c in metadata.tables[name].constraints
                    if isinstance(c, CheckConstraint)}
        reflected = {c["name"] for c in inspector.get_check_constraints(name)}
        assert declared, name
        assert reflected == declared, name


def test_migrating_twice_changes_nothing(ledger_engine: Engine) -> None:
    migrate(ledger_engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0007"
    with ledger_engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_the_migration_goes_down_and_up_again(ledger_engine: Engine) -> None:
    config = alembic_config()
    with ledger_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(ledger_engine).get_table_names()) <= {"alembic_version"}
    migrate(ledger_engine)
    assert set(LEDGER_TABLES) <= set(inspect(ledger_engine).get_table_names())


def test_one_accepted_request_per_partner_and_reference_is_a_partial_unique_index(
        ledger_engine: Engine) -> None:
    (index,) = [i for i in inspect(ledger_engine).get_indexes("requests")
                if i["name"] == "uq_requests_partner_reference"]
    assert index["unique"]
    assert index["column_names"] == ["partner_id", "reference"]
    where = index["dialect_options"][f"{ledger_engine.dialect.name}_where"]
    assert str(where).strip("() ") == "valid"


# --- append-only, enforced by the database ----------------------------------------------------

@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
def test_the_database_refuses_to_update_or_delete_a_record_row(
        ledger_engine: Engine, shipped_table: GroundTable, table: str) -> None:
    one_of_everything(ledger_engine, shipped_table)
    column = inspect(ledger_engine).get_pk_constraint(table)["constrained_columns"][0]
    with ledger_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0
    for statement in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"):
        with pytest.raises(IntegrityError, match="append-only"), \
                ledger_engine.begin() as connection:
            connection.execute(text(statement))
    with ledger_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0


@pytest.mark.parametrize("table", SHREDDABLE_TABLES)
def test_the_database_refuses_to_update_a_shreddable_row_but_lets_shredding_delete_it(
        ledger_engine: Engine, shipped_table: GroundTable, table: str) -> None:
    """A request's subjects and data key are deleted when it is
    shredded under retention (``audit verify`` tells that from a deletion); never changed."""
    assert table not in APPEND_ONLY_TABLES
    one_of_everything(ledger_engine, shipped_table)
    column = inspect(ledger_engine).get_pk_constraint(table)["constrained_columns"][0]
    with ledger_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0
    with pytest.raises(IntegrityError, match="UPDATE refused"), \
            ledger_engine.begin() as connection:
        connection.execute(text(f"UPDATE {table} SET {column} = {column}"))
    with ledger_engine.begin() as connection:
        connection.execute(text(f"DELETE FROM {table}"))
    with ledger_engine.connect() as connection:
        assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_engine", [
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_postgresql_refuses_to_truncate_a_record_table(ledger_engine: Engine) -> None:
    for table in APPEND_ONLY_TABLES:
        with pytest.raises(IntegrityError, match="append-only"), \
                ledger_engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {table} CASCADE"))


def test_the_status_projection_may_change(ledger_engine: Engine,
                                          shipped_table: GroundTable) -> None:
    request_id = one_of_everything(ledger_engine, shipped_table)
    with ledger_engine.begin() as connection:
        changed = connection.execute(
            text("UPDATE request_status SET claimed_by = 'worker-1' WHERE request_id = :id"),
            {"id": request_id})
        assert changed.rowcount == 1


@pytest.mark.parametrize(("column", "limit"), [("partner_id", 64), ("reference", 64),
                                               ("correlation_id", 128)])
def test_a_string_longer_than_its_column_is_refused_on_every_backend(
        ledger_engine: Engine, column: str, limit: int) -> None:
    row: dict[str, object] = {
        "id": "00000000-0000-4000-8000-000000000001", "partner_id": "p", "requester_body": "cbs",
        "channel": "api", "reference": "R", "received_at": NOW, "raw_body": "{}",
        "body_hash": "0" * 64, "valid": False, "validation_errors": [], "correlation_id": None}
    requests = metadata.tables["requests"]
    with ledger_engine.begin() as connection:
        connection.execute(insert(requests), [{**row, column: "x" * limit}])
    with pytest.raises(DBAPIError), ledger_engine.begin() as connection:
        connection.execute(insert(requests), [
            {**row, "id": "00000000-0000-4000-8000-000000000002", column: "x" * (limit + 1)}])


def test_an_unknown_channel_is_refused_by_the_database(ledger_engine: Engine) -> None:
    row = {"id": "00000000-0000-4000-8000-000000000001", "partner_id": "p",
           "requester_body": "cbs", "channel": "fax", "received_at": NOW, "raw_body": "{}",
           "body_hash": "0" * 64, "valid": False, "validation_errors": []}
    with pytest.raises(IntegrityError), ledger_engine.begin() as connection:
        connection.execute(insert(metadata.tables["requests"]), [row])


# --- engines and opening the ledger -----------------------------------------------------------

def test_plain_postgresql_urls_are_served_by_psycopg() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"):
        assert database_url(url).drivername == "postgresql+psycopg"
    assert database_url("sqlite:///x.db").drivername == "sqlite"


def test_only_sqlite_and_postgresql_are_supported() -> None:
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        make_engine("mysql://u@h/db")


def test_a_sqlite_ledger_uses_wal_foreign_keys_a_busy_timeout_and_immediate_writes(
        tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    statements: list[str] = []
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 5000
        @event.listens_for(engine, "before_cursor_execute")
        def _seen(_c: object, _cur: object, statement: str, *_args: object) -> None:
            statements.append(statement)

        with engine.begin() as connection:
            connection.exec_driver_sql("SELECT 1")
        assert statements[-2:] == ["BEGIN IMMEDIATE", "SELECT 1"]
        with read_only(engine).begin() as connection:
            connection.exec_driver_sql("SELECT 2")
        assert statements[-2:] == ["BEGIN DEFERRED", "SELECT 2"]
    finally:
        engine.dispose()


def test_open_ledger_makes_the_data_folder_and_a_migrated_sqlite_ledger(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var" / "disclosure")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path}/var/disclosure/ledger.db"
    engine = open_ledger(settings)
    try:
        assert (tmp_path / "var" / "disclosure" / "ledger.db").is_file()
        assert set(LEDGER_TABLES) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_configured_database_url_wins(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, database_url="sqlite://")
    assert settings.resolved_database_url == "sqlite://"
    engine = open_ledger(settings)
    try:
        assert "audit_events" in inspect(engine).get_table_names()
        assert not (tmp_path / "ledger.db").exists()
    finally:
        engine.dispose()
