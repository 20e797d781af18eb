"""The audit hash chain: appended in order, and every kind of tampering found by verification.

Tampering is done as an attacker with database rights would: the append-only trigger is switched
off inside the test and the rows are changed with plain SQL.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import TEST_CHAIN_KEYS
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from records.chain import (
    GENESIS_HASH,
    ChainReport,
    NewEvent,
    append_events,
    event_hash,
    verify_chain,
)
from records.errors import LedgerError
from records.models import AuditEvent

EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

FILE_BACKED = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def new_event(n: int, actor: str = "tester") -> NewEvent:
    return NewEvent(kind="test_event", occurred_at=T0 + timedelta(seconds=n), actor=actor,
                    payload={"n": n, "categories": ["personalia"]})


def append(engine: Engine, count: int, *, start: int = 0) -> list[AuditEvent]:
    with Session(engine) as session, session.begin():
        return append_events(session=session,
                             events=[new_event(n) for n in range(start, start + count)])


def verify(engine: Engine) -> ChainReport:
    with Session(engine) as session, session.begin():
        return verify_chain(session=session)


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in
                connection.execute(select(EVENTS).order_by(EVENTS.c.seq)).mappings()]


def tamper(engine: Engine, change: Callable[[Connection], object]) -> None:
    """Switch off the append-only guard on audit_events, then change rows directly."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
            connection.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
        else:
            connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
        change(connection)


def renumber(connection: Connection, *, from_seq: int, by: int) -> None:
    """Shift the seq of every event from ``from_seq`` on (in two steps: seq is the key)."""
    connection.execute(update(EVENTS).where(EVENTS.c.seq >= from_seq)
                       .values(seq=EVENTS.c.seq + 1_000_000))
    connection.execute(update(EVENTS).where(EVENTS.c.seq >= 1_000_000)
                       .values(seq=EVENTS.c.seq - 1_000_000 + by))


# --- appending --------------------------------------------------------------------------------

def test_an_empty_chain_verifies_and_its_head_is_the_genesis(ledger_engine: Engine) -> None:
    report = verify(ledger_engine)
    assert report.ok
    assert report.events_checked == 0
    assert report.head_seq is None
    assert report.head_hash == GENESIS_HASH == "0" * 64


def test_events_are_numbered_from_one_and_each_links_to_the_one_before(
        ledger_engine: Engine) -> None:
    returned = append(ledger_engine, 3) + append(ledger_engine, 2, start=3)
    rows = stored(ledger_engine)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    for row in rows:
        fields = {k: v for k, v in row.items() if k != "hash"}
        assert event_hash(**fields, key=TEST_CHAIN_KEYS.current) == row["hash"]
    assert [e.hash for e in returned] == [r["hash"] for r in rows]
    assert [e.payload["n"] for e in returned] == [0, 1, 2, 3, 4]
    report = verify(ledger_engine)
    assert report.ok
    assert report.events_checked == 5
    assert report.head_seq == 5
    assert report.head_hash == rows[-1]["hash"]


def test_stored_events_read_back_as_utc_whatever_zone_they_were_given_in(
        ledger_engine: Engine) -> None:
    amsterdam_winter = timezone(timedelta(hours=1))
    with Session(ledger_engine) as session, session.begin():
        append_events(session=session, events=[NewEvent(
            kind="test_event", occurred_at=datetime(2026, 11, 28, 10, 30, 0, 123456,
                                                    tzinfo=amsterdam_winter),
            actor="tester")])
    (row,) = stored(ledger_engine)
    assert row["occurred_at"] == datetime(2026, 11, 28, 9, 30, 0, 123456, tzinfo=UTC)
    assert row["occurred_at"].tzinfo == UTC
    assert verify(ledger_engine).ok


def test_an_empty_batch_appends_nothing(ledger_engine: Engine) -> None:
    with Session(ledger_engine) as session, session.begin():
        assert append_events(session=session, events=[]) == []
    assert stored(ledger_engine) == []


def test_a_payload_that_is_not_plain_json_is_refused(ledger_engine: Engine) -> None:
    event = NewEvent(kind="test_event", occurred_at=T0, actor="tester",
                     payload={"day": date(2026, 11, 28)})
    with Session(ledger_engine) as session, session.begin(), pytest.raises(
            LedgerError, match="plain JSON"):
        append_events(session=session, events=[event])
    assert stored(ledger_engine) == []


def test_a_naive_timestamp_is_refused(ledger_engine: Engine) -> None:
    event = NewEvent(kind="test_event", occurred_at=datetime(2026, 11, 28, 9, 0),  # noqa: DTZ001
                     actor="tester")
    with Session(ledger_engine) as session, session.begin(), pytest.raises(
            LedgerError, match="timezone-aware"):
        append_events(session=session, events=[event])


def test_the_database_refuses_a_second_event_after_the_same_predecessor(
        ledger_engine: Engine) -> None:
    append(ledger_engine, 2)
    first = stored(ledger_engine)[0]
    fork = {**first, "seq": 3, "id": "00000000-0000-4000-8000-000000000000", "hash": "f" * 64}
    with pytest.raises(IntegrityError), ledger_engine.begin() as connection:
        connection.execute(insert(EVENTS), [fork])
    assert verify(ledger_engine).ok


# --- tampering --------------------------------------------------------------------------------

def test_an_altered_payload_is_found(ledger_engine: Engine) -> None:
    append(ledger_engine, 5)
    tamper(ledger_engine, lambda c: c.execute(
        update(EVENTS).where(EVENTS.c.seq == 3).values(payload={"n": 999})))
    report = verify(ledger_engine)
    assert not report.ok
    assert (report.broken_seq, report.problem) == (3, "hash_mismatch")
    assert report.events_checked == 2


def test_an_altered_event_with_a_recomputed_hash_breaks_the_next_link(
        ledger_engine: Engine) -> None:
    append(ledger_engine, 5)
    row = stored(ledger_engine)[2]
    forged = {**row, "actor": "someone else"}
    forged_hash = event_hash(**{k: v for k, v in forged.items() if k != "hash"},
                             key=TEST_CHAIN_KEYS.current)
    tamper(ledger_engine, lambda c: c.execute(
        update(EVENTS).where(EVENTS.c.seq == 3).values(actor="someone else", hash=forged_hash)))
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 4, "prev_hash_mismatch")


def test_a_deleted_event_is_found(ledger_engine: Engine) -> None:
    append(ledger_engine, 5)
    tamper(ledger_engine, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.seq == 3)))
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 4, "seq_gap")


def test_a_deleted_event_is_found_even_when_the_rest_is_renumbered(
        ledger_engine: Engine) -> None:
    append(ledger_engine, 5)

    def delete_and_close_the_gap(connection: Connection) -> None:
        connection.execute(delete(EVENTS).where(EVENTS.c.seq == 3))
        renumber(connection, from_seq=4, by=-1)

    tamper(ledger_engine, delete_and_close_the_gap)
    assert [r["seq"] for r in stored(ledger_engine)] == [1, 2, 3, 4]
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 3, "prev_hash_mismatch")


def test_a_deleted_first_event_is_found(ledger_engine: Engine) -> None:
    append(ledger_engine, 3)
    tamper(ledger_engine, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.seq == 1)))
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 2, "seq_gap")


def test_two_swapped_events_are_found(ledger_engine: Engine) -> None:
    append(ledger_engine, 5)

    def swap(connection: Connection) -> None:
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 3).values(seq=1_000_003))
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 4).values(seq=3))
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 1_000_003).values(seq=4))

    tamper(ledger_engine, swap)
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 3, "prev_hash_mismatch")


def test_an_inserted_event_is_found_even_when_it_links_correctly(ledger_engine: Engine) -> None:
    append(ledger_engine, 5)
    rows = stored(ledger_engine)
    forged: dict[str, Any] = {
        "seq": 3, "id": "00000000-0000-4000-8000-000000000001", "occurred_at": T0,
        "kind": "decision_recorded", "request_id": None, "actor": "engine", "flow_run_id": None,
        "payload": {"outcome": "approved"}, "prev_hash": rows[1]["hash"],
        "key_id": TEST_CHAIN_KEYS.current.key_id}
    forged["hash"] = event_hash(**forged, key=TEST_CHAIN_KEYS.current)

    def insert_after_second(connection: Connection) -> None:
        # the original third event now claims the forged one as its predecessor
        connection.execute(update(EVENTS).where(EVENTS.c.seq == 3)
                           .values(prev_hash=forged["hash"]))
        renumber(connection, from_seq=3, by=1)
        connection.execute(insert(EVENTS), [forged])

    tamper(ledger_engine, insert_after_second)
    assert len(stored(ledger_engine)) == 6
    report = verify(ledger_engine)
    assert (report.ok, report.broken_seq, report.problem) == (False, 4, "hash_mismatch")


def test_a_cut_off_tail_is_seen_only_against_an_anchored_head(ledger_engine: Engine) -> None:
    append(ledger_engine, 5)
    anchored = verify(ledger_engine)
    tamper(ledger_engine, lambda c: c.execute(delete(EVENTS).where(EVENTS.c.seq >= 4)))
    report = verify(ledger_engine)
    assert report.ok  # what remains is a valid chain...
    assert (report.head_seq, report.head_hash) != (anchored.head_seq, anchored.head_hash)


# --- concurrency ------------------------------------------------------------------------------

@pytest.mark.parametrize("ledger_engine", FILE_BACKED, indirect=True)
def test_concurrent_appenders_make_one_unbroken_chain(ledger_engine: Engine) -> None:
    per_thread = 50
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def appender(name: str) -> None:
        try:
            start.wait(timeout=10)
            for n in range(per_thread):
                with Session(ledger_engine) as session, session.begin():
                    append_events(session=session, events=[new_event(n, actor=name)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    rows = stored(ledger_engine)
    assert [r["seq"] for r in rows] == list(range(1, 2 * per_thread + 1))
    assert sorted(r["actor"] for r in rows) == ["one"] * per_thread + ["two"] * per_thread
    for name in ("one", "two"):
        assert [r["payload"]["n"] for r in rows
                if r["actor"] == name] == list(range(per_thread))
    report = verify(ledger_engine)
    assert report.ok, report
    assert report.events_checked == 2 * per_thread
