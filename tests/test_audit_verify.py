"""``disclosure audit verify``: the whole record verified, and every kind of tampering found.

A synthetic history (:mod:`records.synthetic_history`) is written once per backend. Each tamper test
changes it the way someone with rights on the database would — the append-only triggers (and the
foreign keys) switched off, rows changed with plain SQL — verifies inside that transaction, and
rolls everything back, so the next test starts from the untouched history. The command line is
tested on a ledger of its own, tampered for good.

tests/test_chain.py covers the hash chain on its own (every way to break a link); this file covers
the record: the chain inside a real history, the table snapshots, and every row of the record held
against the event that recorded it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TEST_CHAIN_KEYS,
    _postgres_engine,
    keyed_body_hash,
    ledger_on,
    sealed_for,
)
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlmodel import Session

from cli.main import main
from flows.audit.verification import (
    ARTIFACT_KEY,
    BROKEN,
    CHECKPOINT_ARTIFACT_KEY,
    VERIFIED,
    verify_record_flow,
)
from flows.runtime import open_ledger
from legal_bases.accountability import load_accountability
from legal_bases.table import GroundTable, canonical_json, sha256
from records.chain import NewEvent, append_events, event_hash
from records.chain_keys import new_key_entry
from records.data_keys import DATA_KEYS
from records.data_keys import MOTIVATION as MOTIVATION_FIELD
from records.db import open_ledger as records_open_ledger
from records.errors import ChainKeyError
from records.ledger import raw_body_of
from records.models import (
    AuditEvent,
    DecisionRow,
    DeliveryRow,
    RequestRow,
    RequestStatus,
    RequestSubject,
    TableSnapshot,
)
from records.pseudonym import Pseudonymizer
from records.retention import Due, shred
from records.reviews import ReviewAnswerRow
from records.settings import load_settings
from records.synthetic_history import History, write_history
from records.verification import verify_record
from records.verification_report import PROBLEM_CODES, RecordReport

EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
REQUESTS = RequestRow.__table__  # type: ignore[attr-defined]
SUBJECTS = RequestSubject.__table__  # type: ignore[attr-defined]
DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]
DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
ANSWERS = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
SNAPSHOTS = TableSnapshot.__table__  # type: ignore[attr-defined]
STATUS = RequestStatus.__table__  # type: ignore[attr-defined]

KEY = bytes(range(32))
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
END = datetime(2026, 4, 30, 17, 0, tzinfo=UTC)
HEX64 = re.compile(r"^[0-9a-f]{64}$")

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@dataclass(frozen=True)
class Ledger:
    engine: Engine
    history: History


def history_of(engine: Engine, table: GroundTable, requests: int, seed: int) -> History:
    return write_history(engine=engine, pseudonymizer=Pseudonymizer(KEY),
                         tables=[(START - timedelta(days=365), table)], requests=requests,
                         seed=seed, start=START, end=END)


@pytest.fixture(scope="module", params=BACKENDS)
def ledger(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           shipped_table: GroundTable) -> Iterator[Ledger]:
    """A history of 40 requests: every outcome, reviews (four eyes too), deliveries."""
    with ledger_on(request.param, request, tmp_path_factory.mktemp("verify")) as engine:
        history = history_of(engine, shipped_table, requests=40, seed=12)
        assert any(t.reviewed for t in history.truths)
        assert any(t.delivered for t in history.truths)
        assert any(not t.valid for t in history.truths)
        yield Ledger(engine, history)


@contextmanager
def tampering(engine: Engine) -> Iterator[Connection]:
    """A transaction with the guards off, rolled back afterwards: what an attacker with rights
    on the database can do (SQLite: drop the triggers; PostgreSQL: fire no triggers, which
    includes the foreign keys' — the test user is a superuser)."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
                triggers = connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger'").scalars().all()
                for name in triggers:
                    connection.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield connection
        finally:
            transaction.rollback()


def verify(connection: Connection, **options: Any) -> RecordReport:
    with Session(bind=connection) as session:
        report = verify_record(session=session, **options)
    assert {p.code for p in report.problems} <= PROBLEM_CODES.keys()  # each one explained
    return report


def codes(report: RecordReport) -> list[tuple[str, str | None, int | None]]:
    return [(p.code, p.row_id, p.seq) for p in report.problems]


def event_rows(connection: Connection, kind: str | None = None) -> list[dict[str, Any]]:
    query = select(EVENTS).order_by(EVENTS.c.seq)
    if kind is not None:
        query = query.where(EVENTS.c.kind == kind)
    return [dict(row) for row in connection.execute(query).mappings()]


def event_of(connection: Connection, kind: str, key: str, value: str) -> dict[str, Any]:
    (found,) = [e for e in event_rows(connection, kind) if e["payload"].get(key) == value]
    return found


def rehash(row: dict[str, Any]) -> str:
    """The seal of an event as an insider holding the chain key computes it (a forged event
    without a ``key_id`` gets the current key's, as the engine would give it)."""
    row.setdefault("key_id", TEST_CHAIN_KEYS.current.key_id)
    return event_hash(**{k: v for k, v in row.items() if k != "hash"},
                      key=TEST_CHAIN_KEYS.current)


def renumber(connection: Connection, *, from_seq: int, by: int) -> None:
    """Shift the seq of every event from ``from_seq`` on (in two steps: seq is the key)."""
    connection.execute(update(EVENTS).where(EVENTS.c.seq >= from_seq)
                       .values(seq=EVENTS.c.seq + 1_000_000))
    connection.execute(update(EVENTS).where(EVENTS.c.seq >= 1_000_000)
                       .values(seq=EVENTS.c.seq - 1_000_000 + by))


def delivered_decision(ledger: Ledger) -> tuple[str, str]:
    """A request whose decision was delivered, and that decision's id (from the truths)."""
    truth = next(t for t in ledger.history.truths if t.delivered and t.released)
    with ledger.engine.connect() as connection:
        decision_id = connection.execute(
            select(DELIVERIES.c.decision_id)
            .where(DELIVERIES.c.request_id == truth.request_id)).scalar_one()
    return truth.request_id, decision_id


def broken_on(report: RecordReport, code: str) -> list[tuple[str | None, int | None]]:
    return [(p.row_id, p.seq) for p in report.problems if p.code == code]


# --- the untouched record --------------------------------------------------------------------

def test_an_empty_ledger_is_intact_and_its_head_is_the_genesis(ledger_engine: Engine) -> None:
    with ledger_engine.connect() as connection:
        report = verify(connection)
        anchored = verify(connection, expect_head=(1, "a" * 64))
    assert report.ok
    assert (report.head_seq, report.head_hash) == (None, "0" * 64)
    assert set(report.counts.to_dict().values()) == {0}
    assert not anchored.ok
    assert [(p.code, p.seq) for p in anchored.problems] == [("anchor_missing", 1)]


def test_an_untouched_history_verifies_intact_and_everything_is_counted(ledger: Ledger) -> None:
    truths = ledger.history.truths
    with ledger.engine.connect() as connection:
        report = verify(connection)
        last = connection.execute(
            select(EVENTS.c.seq, EVENTS.c.hash).order_by(EVENTS.c.seq.desc()).limit(1)).one()
        answers = connection.execute(select(func.count()).select_from(ANSWERS)).scalar_one()
    assert report.ok
    assert report.chain_ok
    assert (report.breaks, report.warnings, report.problems) == (0, 0, ())
    assert (report.head_seq, report.head_hash) == (last.seq, last.hash)
    counts = report.counts
    assert counts.audit_events == last.seq
    assert counts.requests == counts.request_status == len(truths)
    assert counts.request_subjects == sum(len(t.subjects) for t in truths)
    assert counts.decisions == len(truths) + sum(t.reviewed for t in truths)
    assert counts.deliveries == sum(t.delivered for t in truths)
    assert counts.review_answers == answers >= sum(t.reviewed for t in truths)
    assert counts.table_snapshots == 1
    # a small batch size reads the same in many batches
    with ledger.engine.connect() as connection:
        assert verify(connection, batch_size=7) == report


def test_an_anchor_written_down_earlier_verifies(ledger: Ledger) -> None:
    with ledger.engine.connect() as connection:
        head = verify(connection)
        middle = event_rows(connection)[10]
        for anchor in [(head.head_seq, head.head_hash), (middle["seq"], middle["hash"])]:
            report = verify(connection, expect_head=anchor)
            assert (report.ok, report.anchor_ok) == (True, True), report.problems


# --- the chain inside the record -------------------------------------------------------------

def test_an_altered_event_payload_is_found(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        event = event_of(db, "decision_recorded", "decision_id", decision_id)
        payload = {**event["payload"], "released": [*event["payload"]["released"], "gezondheid"]}
        db.execute(update(EVENTS).where(EVENTS.c.seq == event["seq"]).values(payload=payload))
        report = verify(db)
    assert not report.ok
    assert not report.chain_ok
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("hash_mismatch", event["seq"])
    # the row still says what was decided, and now disagrees with the altered event
    [mismatch] = [p for p in report.problems if p.code == "decision_mismatch"]
    assert (mismatch.row_id, mismatch.seq) == (decision_id, event["seq"])
    assert "released" in mismatch.detail
    assert "gezondheid" in mismatch.detail


def test_an_altered_event_with_a_recomputed_hash_breaks_the_next_link(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        event = event_of(db, "decision_recorded", "decision_id", decision_id)
        forged = {**event, "payload": {**event["payload"], "outcome": "rejected"}}
        forged["hash"] = rehash(forged)
        db.execute(update(EVENTS).where(EVENTS.c.seq == event["seq"])
                   .values(payload=forged["payload"], hash=forged["hash"]))
        report = verify(db)
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == (
        "prev_hash_mismatch", event["seq"] + 1)
    assert (decision_id, event["seq"]) in broken_on(report, "decision_mismatch")
    assert not any(p.code == "hash_mismatch" for p in report.problems)  # the event looks fine


def test_a_deleted_event_in_the_middle_is_found(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        event = event_of(db, "decision_recorded", "decision_id", decision_id)
        db.execute(delete(EVENTS).where(EVENTS.c.seq == event["seq"]))
        report = verify(db)
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("seq_gap", event["seq"] + 1)
    assert broken_on(report, "decision_without_event") == [(decision_id, None)]


def test_a_cut_off_tail_is_found_only_against_the_anchor(ledger: Ledger) -> None:
    truth = ledger.history.truths[-1]
    with tampering(ledger.engine) as db:
        # one more event without a row of its own (a review marked overdue), anchored...
        [*_, last] = event_rows(db)
        overdue: dict[str, Any] = {
            "seq": last["seq"] + 1, "id": str(uuid.uuid4()), "occurred_at": END,
            "kind": "review_overdue", "request_id": truth.request_id, "actor": "engine",
            "flow_run_id": None, "payload": {"deadline": "2026-05-30"},
            "prev_hash": last["hash"]}
        overdue["hash"] = rehash(overdue)
        db.execute(insert(EVENTS), [overdue])
        anchored = verify(db)
        assert anchored.ok
        assert (anchored.head_seq, anchored.head_hash) == (overdue["seq"], overdue["hash"])
        anchor = (overdue["seq"], overdue["hash"])
        # ... then cut off: what remains is a valid chain, every row has its event
        db.execute(delete(EVENTS).where(EVENTS.c.seq == overdue["seq"]))
        unanchored = verify(db)
        assert unanchored.ok
        assert (unanchored.head_seq, unanchored.head_hash) == (last["seq"], last["hash"])
        # only the anchor tells
        report = verify(db, expect_head=anchor)
    assert not report.ok
    assert report.anchor_ok is False
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("anchor_missing", anchor[0])


def test_a_rewritten_tail_is_found_against_the_anchor(ledger: Ledger) -> None:
    with tampering(ledger.engine) as db:
        [*_, before, last] = event_rows(db)
        anchor = (last["seq"], last["hash"])
        # the last event replaced by another that links and hashes correctly
        forged = {**last, "id": str(uuid.uuid4())}
        forged["hash"] = rehash(forged)
        db.execute(update(EVENTS).where(EVENTS.c.seq == last["seq"])
                   .values(id=forged["id"], hash=forged["hash"]))
        assert forged["prev_hash"] == before["hash"]
        assert verify(db).chain_ok
        report = verify(db, expect_head=anchor)
    assert not report.ok
    assert report.anchor_ok is False
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("anchor_mismatch", anchor[0])


def test_two_swapped_events_are_found(ledger: Ledger) -> None:
    with tampering(ledger.engine) as db:
        middle = len(event_rows(db)) // 2
        db.execute(update(EVENTS).where(EVENTS.c.seq == middle).values(seq=1_000_000))
        db.execute(update(EVENTS).where(EVENTS.c.seq == middle + 1).values(seq=middle))
        db.execute(update(EVENTS).where(EVENTS.c.seq == 1_000_000).values(seq=middle + 1))
        report = verify(db)
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("prev_hash_mismatch", middle)


def test_a_forged_event_inserted_in_the_middle_is_found(ledger: Ledger) -> None:
    request_id = ledger.history.truths[0].request_id
    with tampering(ledger.engine) as db:
        rows = event_rows(db)
        at = len(rows) // 2
        before, after = rows[at - 2], rows[at - 1]  # seqs at - 1 and at
        forged: dict[str, Any] = {
            "seq": at, "id": str(uuid.uuid4()), "occurred_at": after["occurred_at"],
            "kind": "decision_recorded", "request_id": request_id, "actor": "engine",
            "flow_run_id": None, "prev_hash": before["hash"],
            "payload": {"decision_id": str(uuid.uuid4()), "outcome": "approved",
                        "released": ["gezondheid"]}}
        forged["hash"] = rehash(forged)
        # the event it pushes aside must now name the forged one as its predecessor (prev_hash
        # is unique), and everything after it moves up one
        db.execute(update(EVENTS).where(EVENTS.c.seq == at).values(prev_hash=forged["hash"]))
        renumber(db, from_seq=at, by=1)
        db.execute(insert(EVENTS), [forged])
        report = verify(db)
    assert report.first_break is not None
    assert (report.first_break.code, report.first_break.seq) == ("hash_mismatch", at + 1)
    assert (None, at) in broken_on(report, "event_without_decision")


def test_a_forged_event_appended_with_a_valid_link_is_found_by_its_missing_row(
        ledger: Ledger) -> None:
    request_id = ledger.history.truths[0].request_id
    with tampering(ledger.engine) as db:
        [*_, last] = event_rows(db)
        forged: dict[str, Any] = {
            "seq": last["seq"] + 1, "id": str(uuid.uuid4()), "occurred_at": END,
            "kind": "decision_recorded", "request_id": request_id, "actor": "engine",
            "flow_run_id": None, "prev_hash": last["hash"],
            "payload": {"decision_id": str(uuid.uuid4()), "outcome": "approved",
                        "released": ["gezondheid"], "state": "decided"}}
        forged["hash"] = rehash(forged)
        db.execute(insert(EVENTS), [forged])
        report = verify(db)
    assert report.chain_ok  # the key's holder can seal a link: the chain alone cannot tell
    assert not report.ok
    assert broken_on(report, "event_without_decision") == [(None, forged["seq"])]
    assert [p.code for p in report.problems if p.warning] == ["status_mismatch"]


# --- rows against their events ---------------------------------------------------------------

def test_a_decision_row_with_widened_categories_is_found(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        released = db.execute(select(DECISIONS.c.released)
                              .where(DECISIONS.c.id == decision_id)).scalar_one()
        db.execute(update(DECISIONS).where(DECISIONS.c.id == decision_id)
                   .values(released=[*released, "gezondheid", "nationaliteit"]))
        report = verify(db)
    assert report.chain_ok
    assert not report.ok
    problem, delivered = report.problems  # the row against its event, and what was delivered
    assert (problem.code, problem.table, problem.row_id) == (
        "decision_mismatch", "decisions", decision_id)
    assert problem.detail.startswith("disagrees with its event on released (row [")
    assert "gezondheid, nationaliteit" in problem.detail
    assert (delivered.code, delivered.table) == ("delivery_categories_differ", "deliveries")
    assert "gezondheid" not in delivered.detail.split("released")[0]  # carried: not widened


def test_a_deleted_decision_and_its_delivery_are_found(ledger: Ledger) -> None:
    request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        decision_event = event_of(db, "decision_recorded", "decision_id", decision_id)
        delivery_event = event_of(db, "delivery_recorded", "decision_id", decision_id)
        db.execute(delete(DELIVERIES).where(DELIVERIES.c.decision_id == decision_id))
        db.execute(delete(DECISIONS).where(DECISIONS.c.id == decision_id))
        report = verify(db)
    assert report.chain_ok
    assert not report.ok
    assert sorted(codes(report)) == sorted([
        ("event_without_decision", None, decision_event["seq"]),
        ("event_without_delivery", None, delivery_event["seq"])])
    assert request_id  # the request itself is untouched


def test_a_decision_row_inserted_without_its_event_is_found(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    new_id = str(uuid.uuid4())
    with tampering(ledger.engine) as db:
        row = dict(db.execute(select(DECISIONS).where(DECISIONS.c.id == decision_id))
                   .mappings().one())
        db.execute(insert(DECISIONS), [{**row, "id": new_id, "sequence": row["sequence"] + 1,
                                        "supersedes": decision_id, "decided_by": "jurist-x",
                                        "released": ["gezondheid"]}])
        report = verify(db)
    assert report.chain_ok
    assert not report.ok
    # the forged decision has no event, and the delivery carried out the one it claims to replace
    assert sorted(codes(report)) == [("decision_without_event", new_id, None),
                                     ("delivery_of_superseded_decision",
                                      delivery_of(ledger, decision_id), None)]


@pytest.mark.parametrize("hash_too", [False, True], ids=["raw-body", "raw-body-and-hash"])
@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "resealed"])
def test_an_altered_raw_body_is_found(ledger: Ledger, hash_too: bool, sealed: bool) -> None:
    """A raw body replaced in clear text, or sealed again under the request's own data key (an
    insider holding the KEK), with or without a body hash to match."""
    truth = next(t for t in ledger.history.truths if t.valid)
    with tampering(ledger.engine) as db:
        raw = db.execute(select(REQUESTS.c.raw_body)
                         .where(REQUESTS.c.id == truth.request_id)).scalar_one()
        with Session(bind=db) as session:
            row = session.get(RequestRow, truth.request_id)
            assert row is not None
            opened = raw_body_of(session=session, row=row)
        assert raw.startswith("enc1:")
        assert opened is not None
        body = json.loads(opened)
        body["categories"] = [*body["categories"], "gezondheid"]
        forged = json.dumps(body)
        changed: dict[str, Any] = {
            "raw_body": sealed_for(db, truth.request_id, forged) if sealed else forged}
        if hash_too:
            changed["body_hash"] = (keyed_body_hash(db, truth.request_id, forged) if sealed
                                    else sha256(canonical_json(body)))
        db.execute(update(REQUESTS).where(REQUESTS.c.id == truth.request_id).values(**changed))
        report = verify(db)
    assert report.chain_ok
    assert not report.ok
    assert {(p.table, p.row_id) for p in report.problems} == {("requests", truth.request_id)}
    found = {p.code: p.detail for p in report.problems}
    # the event commits to the sealed text: any other text in the column disagrees with it
    mismatch = ("disagrees with its event on body_hash, sealed_body_sha256" if hash_too
                else "disagrees with its event on sealed_body_sha256")
    if hash_too and sealed:
        assert found == {"request_mismatch": mismatch}  # opens, hashes as its hash says
    else:
        assert found["raw_body_altered"]  # in clear, or not hashing to its body hash
        assert found["request_mismatch"] == mismatch


def test_a_data_key_gone_or_unusable_and_an_incomplete_shredding_are_found(
        ledger: Ledger) -> None:
    """A data key deleted without a shredding, one that does not unwrap (another request's), and
    a shredded request whose key or subjects were put back."""
    gone, unusable, shredded = [t.request_id for t in ledger.history.truths
                                if t.valid and t.subjects and t.delivered][:3]
    term = load_accountability().retention_for(None)
    day = END.date()
    with tampering(ledger.engine) as db:
        keys = {r["request_id"]: dict(r) for r in db.execute(
            select(DATA_KEYS).where(DATA_KEYS.c.request_id.in_([unusable, shredded])))
            .mappings()}
        subjects = [dict(r) for r in db.execute(
            select(SUBJECTS).where(SUBJECTS.c.request_id == shredded)).mappings()]
        assert subjects
        with Session(bind=db) as session:
            assert shred(session=session, due=[Due(shredded, None, term, day, day, END)],
                         now=datetime.now(UTC))[0] == 1
            session.flush()
        assert verify(db).ok  # shredded under retention: nothing is missing
        db.execute(delete(DATA_KEYS).where(DATA_KEYS.c.request_id == gone))
        db.execute(update(DATA_KEYS).where(DATA_KEYS.c.request_id == unusable)
                   .values(wrapped=keys[shredded]["wrapped"]))
        broken = verify(db)
        db.execute(insert(DATA_KEYS), [keys[shredded]])
        db.execute(insert(SUBJECTS), subjects)
        restored = verify(db)
    # (the gone key's subjects can no longer be checked against their keyed digest: only the
    # missing key is reported, not a subjects_mismatch they may not have)
    assert broken.chain_ok
    assert {(c, r) for c, r, _ in codes(broken)} == {
        ("data_key_missing", gone), ("data_key_unusable", unusable)}
    assert {(c, r) for c, r, _ in codes(restored)} == {
        ("data_key_missing", gone), ("data_key_unusable", unusable),
        ("shredding_incomplete", shredded), ("subjects_after_shredding", shredded)}


def test_a_subject_swapped_or_removed_is_found(ledger: Ledger) -> None:
    truth = next(t for t in ledger.history.truths if len(t.subjects) > 1)
    with tampering(ledger.engine) as db:
        db.execute(update(SUBJECTS).where(SUBJECTS.c.request_id == truth.request_id,
                                          SUBJECTS.c.position == 0)
                   .values(pseudonym=Pseudonymizer(KEY).subject("bsn", "111222333")))
        swapped = verify(db)
        db.execute(delete(SUBJECTS).where(SUBJECTS.c.request_id == truth.request_id,
                                          SUBJECTS.c.position == 1))
        removed = verify(db)
    assert codes(swapped) == [("subjects_mismatch", truth.request_id, None)]
    assert "subjects_digest" in swapped.problems[0].detail
    assert codes(removed) == [("subjects_mismatch", truth.request_id, None)]
    assert removed.problems[0].detail.startswith(
        f"{len(truth.subjects) - 1} subject row(s); the request's event")


def test_an_altered_table_snapshot_is_found(ledger: Ledger) -> None:
    with tampering(ledger.engine) as db:
        table_hash, content = db.execute(select(SNAPSHOTS.c.hash, SNAPSHOTS.c.content)).one()
        db.execute(update(SNAPSHOTS).where(SNAPSHOTS.c.hash == table_hash)
                   .values(content=content.replace('"gezondheid"', '"nationaliteit"', 1)))
        report = verify(db)
    assert report.chain_ok
    assert not report.ok
    assert codes(report) == [("snapshot_altered", table_hash, None)]


def test_a_deleted_table_snapshot_is_found_for_every_decision_read_from_it(
        ledger: Ledger) -> None:
    truths = ledger.history.truths
    decisions = len(truths) + sum(t.reviewed for t in truths)
    with tampering(ledger.engine) as db:
        table_hash = db.execute(select(SNAPSHOTS.c.hash)).scalar_one()
        db.execute(delete(SNAPSHOTS))
        report = verify(db, problems_listed=5)
    assert report.chain_ok
    assert not report.ok
    assert report.breaks == decisions + 1  # every decision, and the snapshot's own event
    assert len(report.problems) == 5
    assert report.problems_left_out == decisions - 4
    assert report.problems[0].code == "event_without_snapshot"
    assert table_hash in report.problems[0].detail
    assert {p.code for p in report.problems[1:]} == {"snapshot_missing"}
    assert report.to_dict()["problems_left_out"] == decisions - 4


def test_an_altered_delivery_is_found(ledger: Ledger) -> None:
    _request_id, decision_id = delivered_decision(ledger)
    with tampering(ledger.engine) as db:
        delivery_id = db.execute(select(DELIVERIES.c.id)
                                 .where(DELIVERIES.c.decision_id == decision_id)).scalar_one()
        db.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id)
                   .values(destination="https://elsewhere.example/inbox"))
        report = verify(db)
    assert [(p.code, p.row_id, p.detail) for p in report.problems] == [
        ("delivery_mismatch", delivery_id, "disagrees with its event on destination")]


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "resealed"])
def test_an_altered_review_motivation_is_found(ledger: Ledger, sealed: bool) -> None:
    """A motivation replaced in clear text, or sealed under the request's own data key."""
    forged = "Achteraf anders gemotiveerd dan destijds vastgelegd."
    with tampering(ledger.engine) as db:
        request_id, seq, stored = db.execute(
            select(ANSWERS.c.request_id, ANSWERS.c.seq, ANSWERS.c.motivation).limit(1)).one()
        assert stored.startswith("enc1:")
        db.execute(update(ANSWERS).where(ANSWERS.c.request_id == request_id,
                                         ANSWERS.c.seq == seq)
                   .values(motivation=sealed_for(db, request_id, forged, MOTIVATION_FIELD)
                           if sealed else forged))
        report = verify(db)
    assert [(p.code, p.row_id, p.detail) for p in report.problems] == [
        ("review_answer_mismatch", f"{request_id}#{seq}",
         "disagrees with its event on motivation")]


def test_a_stale_request_status_is_a_warning_only(ledger: Ledger) -> None:
    truth = next(t for t in ledger.history.truths if t.delivered)
    with tampering(ledger.engine) as db:
        db.execute(update(STATUS).where(STATUS.c.request_id == truth.request_id)
                   .values(state="received"))
        report = verify(db)
    assert report.ok
    assert report.chain_ok
    assert (report.breaks, report.warnings) == (0, 1)
    [problem] = report.problems
    assert (problem.code, problem.row_id, problem.warning) == (
        "status_mismatch", truth.request_id, True)
    assert problem.detail == "state received, the chain says delivered"


def test_a_report_names_no_person(ledger: Ledger) -> None:
    numbers = {s.number for t in ledger.history.truths for s in t.subjects}
    references = set()
    with tampering(ledger.engine) as db:
        for row in db.execute(select(REQUESTS.c.id, REQUESTS.c.reference)):
            references.add(row.reference)
        db.execute(update(REQUESTS).values(raw_body='{"subjects": [{"bsn": "111222333"}]}',
                                           body_hash="0" * 64,
                                           reference=REQUESTS.c.reference + "X"))
        db.execute(update(SUBJECTS).values(pseudonym="f" * 64))
        report = verify(db, problems_listed=10_000)
    text = json.dumps(report.to_dict())
    assert report.breaks > len(ledger.history.truths)
    assert not [n for n in numbers | {"111222333"} if n in text]
    assert not [r for r in references if r and r in text]


# --- the command line ------------------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def cli_ledger(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               shipped_table: GroundTable) -> Iterator[Ledger]:
    """A small ledger where ``disclosure`` finds it (DISCLOSURE_DATA_DIR / _DATABASE_URL)."""
    for name in ("DISCLOSURE_DATABASE_URL", "DISCLOSURE_PSEUDONYM_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
    with ExitStack() as stack:
        if request.param == "postgresql":
            schema = stack.enter_context(
                _postgres_engine(request.getfixturevalue("postgres_server")))
            monkeypatch.setenv("DISCLOSURE_DATABASE_URL",
                               schema.url.render_as_string(hide_password=False))
        engine = open_ledger(load_settings())
        stack.callback(engine.dispose)
        history = history_of(engine, shipped_table, requests=12, seed=3)
        with contextlib.redirect_stdout(io.StringIO()):  # as the nightly run leaves it
            assert main(["audit", "checkpoint"]) == 0
        yield Ledger(engine, history)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["audit", "verify", *argv])
    return code, capsys.readouterr().out


def head_of(engine: Engine) -> tuple[int, str]:
    with engine.connect() as connection:
        row = connection.execute(
            select(EVENTS.c.seq, EVENTS.c.hash).order_by(EVENTS.c.seq.desc()).limit(1)).one()
    return int(row.seq), str(row.hash)


def test_the_command_says_intact_and_prints_the_head_to_write_down(
        cli_ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    seq, digest = head_of(cli_ledger.engine)
    code, out = run(capsys)
    assert code == 0
    assert "Record intact." in out
    assert f"chain head  seq {seq} {digest}" in out
    assert "write this down outside the database" in out
    assert f"disclosure audit verify --expect-head {seq}:{digest}" in out
    assert f" {len(cli_ledger.history.truths)} requests" in out
    assert "BROKEN" not in out


def test_the_command_prints_json(cli_ledger: Ledger,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    seq, digest = head_of(cli_ledger.engine)
    code, out = run(capsys, "--json")
    data = json.loads(out)
    assert code == 0
    assert data["ok"] is True
    assert data["chain_ok"] is True
    assert data["head"] == {"seq": seq, "hash": digest}
    assert data["checked"]["requests"] == len(cli_ledger.history.truths)
    assert data["checked"]["audit_events"] == seq
    assert data["problems"] == []
    assert data["breaks"] == 0


def test_the_command_checks_an_anchor(cli_ledger: Ledger,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    seq, digest = head_of(cli_ledger.engine)
    code, out = run(capsys, "--expect-head", f"{seq}:{digest}")
    assert code == 0
    assert "still in the chain, unchanged" in out
    other = "0" * 64
    code, out = run(capsys, "--expect-head", f"{seq}:{other}")
    assert code == 1
    assert "Record BROKEN" in out
    assert "anchor_mismatch" in out
    code, out = run(capsys, "--expect-head", f"{seq + 5}:{digest}", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["anchor_ok"] is False
    assert data["first_break"]["code"] == "anchor_missing"
    assert data["first_break"]["seq"] == seq + 5


@pytest.mark.parametrize("anchor", ["12", "x:" + "0" * 64, "3:abc", "0:" + "0" * 64])
def test_a_malformed_anchor_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                             anchor: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "verify", "--expect-head", anchor])
    assert exit_.value.code == 2
    assert "SEQ:HASH" in capsys.readouterr().err


def delivery_of(ledger: Ledger, decision_id: str) -> str:
    with ledger.engine.connect() as connection:
        return str(connection.execute(select(DELIVERIES.c.id).where(
            DELIVERIES.c.decision_id == decision_id)).scalar_one())


def widen_a_decision_for_good(ledger: Ledger) -> str:
    """Commit what an attacker with rights on the database does: switch off the guard on
    ``decisions`` and widen a delivered decision to a special category; returns its id."""
    engine = ledger.engine
    truth = next(t for t in ledger.history.truths if t.released and t.delivered)
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER decisions_no_update")
        else:
            connection.exec_driver_sql("ALTER TABLE decisions DISABLE TRIGGER USER")
        decision_id = connection.execute(
            select(DECISIONS.c.id).where(DECISIONS.c.request_id == truth.request_id)
            .order_by(DECISIONS.c.sequence.desc()).limit(1)).scalar_one()
        connection.execute(update(DECISIONS).where(DECISIONS.c.id == decision_id)
                           .values(released=["gezondheid"]))
    return str(decision_id)


def test_the_command_says_broken_and_exits_1(cli_ledger: Ledger,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    decision_id = widen_a_decision_for_good(cli_ledger)
    code, out = run(capsys)
    assert code == 1
    # the row against its event, and the delivery against the (widened) decision
    assert "Record BROKEN: 2 problem(s); the hash chain itself is unbroken." in out
    [line, meaning] = [line for line in out.splitlines() if "decision_mismatch" in line]
    assert meaning.split() == ["decision_mismatch", *PROBLEM_CODES["decision_mismatch"].split()]
    assert decision_id in line
    assert "released" in line
    assert "gezondheid" in line
    data = json.loads(run(capsys, "--json")[1])
    assert data["ok"] is False
    assert data["chain_ok"] is True
    assert [p["code"] for p in data["problems"]] == ["decision_mismatch",
                                                     "delivery_categories_differ"]
    assert data["problems"][0]["row_id"] == decision_id
    assert HEX64.match(data["head"]["hash"])


# --- the nightly flow ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect(prefect_harness: None) -> None:
    """The Prefect test server (tests/conftest.py)."""


def published(flow_run_id: Any) -> tuple[str, list[Any]]:
    """The verification artifact of a run, and the disclosure.record events emitted so far."""
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        events = client.read_events(filter=EventFilter(
            any_resource=EventAnyResourceFilter(id=["disclosure.ledger"])), limit=50).events
    return str(artifact.data), list(events)


def wait_for_event(name: str, head_hash: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=EventFilter(
                event=EventNameFilter(name=[name]),
                any_resource=EventAnyResourceFilter(id=["disclosure.ledger"])), limit=50).events
        found = [e for e in events if e.payload.get("head_hash") == head_hash]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no {name} event for head {head_hash}")


def test_the_nightly_flow_publishes_the_head_and_fails_on_a_broken_record(
        cli_ledger: Ledger, prefect: None) -> None:
    seq, digest = head_of(cli_ledger.engine)
    state = verify_record_flow(return_state=True)
    assert state.is_completed()
    result = state.result()
    folder = Path(os.environ["DISCLOSURE_DATA_DIR"]) / "checkpoints"
    written = sorted(p.name for p in folder.glob("checkpoint-*.json"))
    assert result == {"ok": True, "breaks": 0, "warnings": 0, "head_seq": seq,
                      "head_hash": digest, "events_checked": seq, "checkpoints_checked": 1,
                      "checkpoint_written": written[-1]}
    assert len(written) == 2  # the fixture's, and this run's
    assert json.loads((folder / written[-1]).read_text())["hash"] == digest
    markdown, _ = published(state.state_details.flow_run_id)
    assert "**Intact**: 0 problem(s)" in markdown
    assert f"Chain head: seq {seq}, `{digest}`" in markdown
    with get_client(sync_client=True) as client:
        [copy] = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[CHECKPOINT_ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert json.loads(str(copy.data).split("```json\n")[1].split("```")[0]) == json.loads(
        (folder / written[-1]).read_text())
    event = wait_for_event(VERIFIED, digest)
    assert event.payload["events_checked"] == seq

    decision_id = widen_a_decision_for_good(cli_ledger)
    state = verify_record_flow(return_state=True)
    assert state.is_failed()
    assert len(list(folder.glob("checkpoint-*.json"))) == 2  # none of a broken record
    markdown, _ = published(state.state_details.flow_run_id)
    assert "**BROKEN**: 2 problem(s)" in markdown
    assert f"| broken | decision_mismatch | decisions {decision_id}" in markdown
    broken = wait_for_event(BROKEN, digest)
    assert broken.payload["breaks"] == 2
    for number in (s.number for t in cli_ledger.history.truths for s in t.subjects):
        assert number not in markdown


def test_the_chain_key_ring_can_live_in_a_prefect_secret_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect: None) -> None:
    """DISCLOSURE_CHAIN_KEY_BLOCK names a Secret block: the flows read the ring from Prefect,
    the ledger never holds it, and without the flows it is not silently replaced by a file."""
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        if name != "DISCLOSURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    entry = new_key_entry()
    Secret(value=entry).save("disclosure-chain-test", overwrite=True)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY_BLOCK", "disclosure-chain-test")
    settings = load_settings()
    with pytest.raises(ChainKeyError, match="Prefect Secret block"):
        records_open_ledger(settings)
    engine = open_ledger(settings)
    with Session(engine) as session, session.begin():
        append_events(session=session, events=[NewEvent("test_event", END, "tester")])
    with engine.connect() as connection:
        key_ids = connection.execute(select(EVENTS.c.key_id)).scalars().all()
    assert key_ids == [entry.partition(":")[0]]
    assert not (tmp_path / "chain.keys").exists()
    with Session(engine) as session:
        assert verify_record(session=session).ok
    engine.dispose()
