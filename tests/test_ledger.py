"""The ledger: what is received, decided and audited, on every backend.

Requests are real submissions read with ``read_request`` and decided with ``assess`` against the
shipped table (the ``participatiewet-64`` ground: gemeente, bijstand, auto limit 1000, 28 days).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import keyed_body_hash, keyed_subjects_digest, opened_raw_body
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from legal_bases.assessment import assess
from legal_bases.decision import Decision
from legal_bases.errors import DisclosureError
from legal_bases.identifiers import is_valid_onderwijsnummer
from legal_bases.request import DisclosureRequest, read_request
from legal_bases.table import GroundTable, load_table
from legal_bases.vocabulary import Body, Outcome
from records import chain
from records.chain import verify_chain
from records.data_keys import is_sealed
from records.decisions import DecisionItem, compute_deadline, record_decision, record_decisions
from records.errors import (
    LedgerError,
    ReferenceConflictError,
    RequestNotFoundError,
    SnapshotMissingError,
)
from records.ledger import (
    audit_events_for,
    body_hash,
    decisions_for,
    derived_state,
    get_request,
    latest_decision,
    raw_body_of,
    received_on,
    record_submission,
    requests_by_pseudonym,
    status_of,
    subjects_for,
)
from records.models import LEDGER_TABLES, DecisionRow, RequestRow, metadata
from records.pseudonym import Pseudonymizer
from records.snapshots import load_table_snapshot, store_table_snapshot
from records.vocabulary import RequestState

KEY = bytes(range(32))
PSEUDONYMS = Pseudonymizer(KEY)
RECEIVED = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DECIDED = RECEIVED + timedelta(minutes=5)
PARTNER = "gemeente-utrecht"
BSNS = ("111222333", "123456782")
ONDERWIJSNUMMER = "100000016"
NINE_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{9}(?![0-9A-Za-z])")

FILE_BACKED = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def valid_bsns(count: int) -> list[str]:
    """``count`` distinct numbers that pass the elfproef."""
    weights = (9, 8, 7, 6, 5, 4, 3, 2)
    out: list[str] = []
    stem = 10_000_000
    while len(out) < count:
        digits = f"{stem:08d}"
        check = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
        if check < 10:
            out.append(digits + str(check))
        stem += 1
    return out


def request_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reference": "GEM-2026-0001",
        "legal_basis": "participatiewet-64",
        "purpose": "bijstand",
        "subjects": [{"bsn": bsn} for bsn in BSNS],
        "categories": ["personalia", "opleidingsgegevens"],
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session, session.begin():
        yield session


def submit(session: Session, raw: dict[str, Any] | str, *, partner: str = PARTNER,
           received_at: datetime = RECEIVED, correlation_id: str | None = None) -> RequestRow:
    text_ = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        data: object = json.loads(text_)
    except ValueError:
        data = text_
    parsed = read_request(data, received_on=received_on(received_at))
    return record_submission(session=session, partner_id=partner, requester_body=Body.GEMEENTE,
                             channel="api", raw_body=text_, parsed=parsed,
                             received_at=received_at, pseudonymizer=PSEUDONYMS,
                             correlation_id=correlation_id)


def assessed(session: Session, request_id: str, table: GroundTable) -> Decision:
    row = get_request(session=session, request_id=request_id)
    assert row is not None
    raw = raw_body_of(session=session, row=row)
    assert raw is not None
    parsed = read_request(json.loads(raw), received_on=received_on(row.received_at))
    return assess(parsed, Body(row.requester_body), table)


def decide(session: Session, request_id: str, table: GroundTable, **options: Any) -> DecisionRow:
    decision = assessed(session, request_id, table)
    options.setdefault("decided_at", DECIDED)
    return record_decision(session=session, request_id=request_id, decision=decision,
                           table=table, **options)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {name: connection.execute(
                    select(func.count()).select_from(metadata.tables[name])).scalar_one()
                for name in LEDGER_TABLES}


def all_rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(metadata.tables[table])).mappings()]


def assert_status(session: Session, request_id: str, state: RequestState,
                  since: datetime | None = None) -> None:
    status = status_of(session=session, request_id=request_id)
    assert status is not None
    assert status.state == state
    if since is not None:
        assert status.updated_at == since
    assert derived_state(session=session, request_id=request_id) == state


# --- submissions ------------------------------------------------------------------------------

def test_a_valid_submission_is_recorded_with_its_raw_body_subjects_status_and_event(
        ledger_engine: Engine) -> None:
    raw = json.dumps(request_body(due_date="2026-12-10"), indent=2)
    with transaction(ledger_engine) as session:
        request_id = submit(session, raw, correlation_id="corr-1").id
    with transaction(ledger_engine) as session:
        row = get_request(session=session, request_id=request_id)
        assert row is not None
        assert is_sealed(row.raw_body)
        assert "GEM-2026-0001" not in row.raw_body
        assert raw_body_of(session=session, row=row) == raw
        assert row.valid
        assert row.validation_errors == []
        assert (row.partner_id, row.requester_body, row.channel) == (PARTNER, "gemeente", "api")
        assert (row.reference, row.legal_basis, row.purpose) == (
            "GEM-2026-0001", "participatiewet-64", "bijstand")
        assert row.reference_date == date(2026, 11, 28)
        assert row.due_date == date(2026, 12, 10)
        assert row.subject_count == 2
        assert row.received_at == RECEIVED
        assert row.body_hash == keyed_body_hash(session, request_id, raw)
        assert row.body_hash != body_hash(raw)
        assert row.correlation_id == "corr-1"
        subjects = subjects_for(session=session, request_id=request_id)
        assert [(s.position, s.id_type) for s in subjects] == [(0, "bsn"), (1, "bsn")]
        assert [s.pseudonym for s in subjects] == [PSEUDONYMS.subject("bsn", b) for b in BSNS]
        assert_status(session, request_id, RequestState.RECEIVED, since=RECEIVED)
        (event,) = audit_events_for(session=session, request_id=request_id)
        assert event.kind == "request_received"
        assert event.actor == PARTNER
        assert event.occurred_at == RECEIVED
        assert event.payload["subject_count"] == 2
        assert event.payload["subjects_by_type"] == {"bsn": 2}
        assert event.payload["subjects_digest"] == keyed_subjects_digest(
            session, request_id, (s.pseudonym for s in subjects))
        assert event.payload["body_hash"] == row.body_hash
        assert event.payload["categories"] == ["opleidingsgegevens", "personalia"]
        assert event.payload["reference"] == "GEM-2026-0001"
        assert verify_chain(session=session).ok


def test_an_invalid_submission_is_kept_as_received_with_its_errors(ledger_engine: Engine) -> None:
    body = request_body(subjects=[{"bsn": "111222334"}], purpose="belastingheffing_plus")
    with transaction(ledger_engine) as session:
        request_id = submit(session, body).id
    with transaction(ledger_engine) as session:
        row = get_request(session=session, request_id=request_id)
        assert row is not None
        assert not row.valid
        assert is_sealed(row.raw_body)
        assert json.loads(opened_raw_body(session, request_id) or "null") == body
        assert {(e["path"], e["code"]) for e in row.validation_errors} == {
            ("subjects.0.bsn", "invalid_bsn"), ("purpose", "unknown_value")}
        assert all(set(e) == {"path", "code", "message"} for e in row.validation_errors)
        assert row.reference == "GEM-2026-0001"
        assert row.legal_basis == "participatiewet-64"
        assert row.subject_count is None
        assert subjects_for(session=session, request_id=request_id) == []
        assert_status(session, request_id, RequestState.INVALID)
        (event,) = audit_events_for(session=session, request_id=request_id)
        assert event.kind == "request_invalid"
        assert event.payload["error_count"] == 2
        assert event.payload["error_codes"] == ["invalid_bsn", "unknown_value"]
        assert "111222334" not in json.dumps(event.payload)


@pytest.mark.parametrize("raw", ["this is not JSON {", "[1, 2, 3]", "", '{"reference": 7}'])
def test_a_submission_that_is_not_a_request_at_all_is_still_kept(ledger_engine: Engine,
                                                                 raw: str) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, raw).id
    with transaction(ledger_engine) as session:
        row = get_request(session=session, request_id=request_id)
        assert row is not None
        assert (row.valid, row.reference) == (False, None)
        assert is_sealed(row.raw_body)
        assert not raw or raw not in row.raw_body
        assert raw_body_of(session=session, row=row) == raw
        assert row.validation_errors
        assert row.body_hash == keyed_body_hash(session, request_id, raw)
        assert_status(session, request_id, RequestState.INVALID)


def test_the_body_hash_ignores_key_order_and_spacing_but_not_content() -> None:
    body = request_body()
    same = json.dumps(dict(reversed(list(body.items()))), indent=4)
    assert body_hash(json.dumps(body)) == body_hash(same)
    assert body_hash(json.dumps(body)) != body_hash(json.dumps(request_body(purpose="x")))
    assert len(body_hash("not json")) == 64


def test_the_same_request_sent_again_returns_the_first_and_writes_nothing(
        ledger_engine: Engine) -> None:
    body = request_body()
    with transaction(ledger_engine) as session:
        first_id = submit(session, body).id
    before = counts(ledger_engine)
    with transaction(ledger_engine) as session:
        again = submit(session, json.dumps(dict(reversed(list(body.items()))), indent=1),
                       received_at=RECEIVED + timedelta(hours=1))
        assert again.id == first_id
        assert again.received_at == RECEIVED
    assert counts(ledger_engine) == before


def test_the_same_reference_with_a_different_body_is_a_conflict(ledger_engine: Engine) -> None:
    with transaction(ledger_engine) as session:
        first_id = submit(session, request_body()).id
    before = counts(ledger_engine)
    with transaction(ledger_engine) as session, pytest.raises(ReferenceConflictError) as caught:
        submit(session, request_body(categories=["personalia"]))
    assert isinstance(caught.value, DisclosureError)
    assert caught.value.existing_request_id == first_id
    assert (caught.value.partner_id, caught.value.reference) == (PARTNER, "GEM-2026-0001")
    assert counts(ledger_engine) == before


def test_invalid_attempts_may_repeat_a_reference_and_never_conflict(
        ledger_engine: Engine) -> None:
    invalid = request_body(categories=["onbekend"])
    with transaction(ledger_engine) as session:
        one = submit(session, invalid).id
        two = submit(session, invalid).id
        accepted = submit(session, request_body()).id
        three = submit(session, invalid).id
    assert len({one, two, accepted, three}) == 4
    assert counts(ledger_engine)["requests"] == 4


def test_another_partner_may_use_the_same_reference(ledger_engine: Engine) -> None:
    with transaction(ledger_engine) as session:
        one = submit(session, request_body()).id
        two = submit(session, request_body(categories=["personalia"]),
                     partner="gemeente-zwolle").id
    assert one != two


def test_the_database_allows_one_accepted_request_per_partner_and_reference(
        ledger_engine: Engine) -> None:
    requests = metadata.tables["requests"]
    row: dict[str, Any] = {
        "partner_id": PARTNER, "requester_body": "gemeente", "channel": "api",
        "reference": "R-1", "received_at": RECEIVED, "raw_body": "{}", "body_hash": "0" * 64,
        "validation_errors": []}
    with ledger_engine.begin() as connection:
        connection.execute(insert(requests), [
            {**row, "id": f"00000000-0000-4000-8000-00000000000{n}", "valid": False}
            for n in range(3)])
        connection.execute(insert(requests), [
            {**row, "id": "00000000-0000-4000-8000-000000000010", "valid": True}])
    with pytest.raises(IntegrityError), ledger_engine.begin() as connection:
        connection.execute(insert(requests), [
            {**row, "id": "00000000-0000-4000-8000-000000000011", "valid": True}])


@pytest.mark.parametrize("ledger_engine", FILE_BACKED, indirect=True)
def test_two_simultaneous_submissions_of_one_request_make_one_row(ledger_engine: Engine) -> None:
    body = request_body()
    ids: dict[str, str] = {}
    failures: list[BaseException] = []
    second_started = threading.Event()

    def first() -> None:
        try:
            with transaction(ledger_engine) as session:
                ids["first"] = submit(session, body).id
                second_started.wait(timeout=10)
                time.sleep(0.3)  # let the second wait on our uncommitted row
        except BaseException as exc:
            failures.append(exc)

    def second() -> None:
        try:
            second_started.set()
            with transaction(ledger_engine) as session:
                ids["second"] = submit(session, body).id
        except BaseException as exc:
            failures.append(exc)

    one = threading.Thread(target=first)
    one.start()
    while "first" not in ids and one.is_alive():
        time.sleep(0.01)
    two = threading.Thread(target=second)
    two.start()
    one.join(timeout=60)
    two.join(timeout=60)
    assert not failures, failures
    assert ids["first"] == ids["second"]
    assert counts(ledger_engine)["requests"] == 1
    with transaction(ledger_engine) as session:
        assert verify_chain(session=session).ok


def test_a_naive_receipt_time_is_refused(ledger_engine: Engine) -> None:
    with transaction(ledger_engine) as session, pytest.raises(LedgerError, match="aware"):
        submit(session, request_body(), received_at=datetime(2026, 11, 28, 10))  # noqa: DTZ001


def test_receipt_times_are_stored_in_utc(ledger_engine: Engine) -> None:
    winter = timezone(timedelta(hours=1))
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body(),
                            received_at=datetime(2026, 11, 28, 11, 0, tzinfo=winter)).id
    with transaction(ledger_engine) as session:
        row = get_request(session=session, request_id=request_id)
        assert row is not None
        assert row.received_at == RECEIVED
        assert row.received_at.tzinfo == UTC


def test_the_day_of_receipt_is_the_dutch_calendar_day() -> None:
    assert received_on(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == date(2027, 1, 1)
    assert received_on(datetime(2026, 7, 1, 21, 59, tzinfo=UTC)) == date(2026, 7, 1)
    assert received_on(datetime(2026, 7, 1, 22, 0, tzinfo=UTC)) == date(2026, 7, 2)


def test_an_unknown_channel_or_body_is_refused(ledger_engine: Engine) -> None:
    parsed = read_request(request_body(), received_on=RECEIVED.date())
    with transaction(ledger_engine) as session:
        for channel, body in (("fax", "gemeente"), ("api", "bakkerij")):
            with pytest.raises(LedgerError):
                record_submission(session=session, partner_id=PARTNER, requester_body=body,
                                  channel=channel, raw_body="{}", parsed=parsed,
                                  received_at=RECEIVED, pseudonymizer=PSEUDONYMS)


def test_no_bsn_is_stored_in_the_audit_trail_or_the_subjects(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    assert is_valid_onderwijsnummer(ONDERWIJSNUMMER)
    subjects = [*({"bsn": b} for b in BSNS), {"onderwijsnummer": ONDERWIJSNUMMER}]
    with transaction(ledger_engine) as session:
        valid = submit(session, request_body(subjects=subjects)).id
        submit(session, request_body(reference="GEM-BAD", subjects=[{"bsn": "111222334"}]))
        decide(session, valid, shipped_table)
    assert counts(ledger_engine)["request_subjects"] == 3
    for table in ("audit_events", "request_subjects", "decisions",
                  "request_status"):
        dumped = json.dumps(all_rows(ledger_engine, table), default=str)
        for number in (*BSNS, "111222334", ONDERWIJSNUMMER):
            assert number not in dumped, (table, number)
        assert not NINE_DIGITS.search(dumped), (table, NINE_DIGITS.findall(dumped))
    # the submissions themselves name them, but only sealed under their requests' data keys
    dumped = json.dumps(all_rows(ledger_engine, "requests"), default=str)
    for number in (*BSNS, "111222334", ONDERWIJSNUMMER):
        assert number not in dumped, ("requests", number)


def test_a_subject_is_found_in_every_request_that_named_them(ledger_engine: Engine) -> None:
    with transaction(ledger_engine) as session:
        both = submit(session, request_body(reference="A")).id
        later = submit(session, request_body(reference="B", subjects=[{"bsn": BSNS[0]}]),
                       received_at=RECEIVED + timedelta(days=1)).id
        submit(session, request_body(reference="C", subjects=[{"bsn": BSNS[1]}]))
    with transaction(ledger_engine) as session:
        found = requests_by_pseudonym(session=session,
                                      pseudonym=PSEUDONYMS.subject("bsn", BSNS[0]))
        assert [r.id for r in found] == [both, later]
        assert requests_by_pseudonym(session=session, pseudonym="0" * 64) == []


@pytest.mark.parametrize("ledger_engine", FILE_BACKED, indirect=True)
def test_a_request_for_100000_subjects_is_recorded_in_seconds(ledger_engine: Engine) -> None:
    numbers = valid_bsns(100_000)
    raw = json.dumps(request_body(reference="GEM-BULK", subjects=[{"bsn": n} for n in numbers]))
    parsed = read_request(json.loads(raw), received_on=RECEIVED.date())
    assert isinstance(parsed, DisclosureRequest)
    started = time.perf_counter()
    with transaction(ledger_engine) as session:
        request_id = record_submission(
            session=session, partner_id=PARTNER, requester_body="gemeente", channel="dropoff",
            raw_body=raw, parsed=parsed, received_at=RECEIVED, pseudonymizer=PSEUDONYMS).id
    elapsed = time.perf_counter() - started
    print(f"recorded 100,000 subjects on {ledger_engine.dialect.name} in {elapsed:.2f} s")
    assert elapsed < 60
    assert counts(ledger_engine)["request_subjects"] == 100_000
    with transaction(ledger_engine) as session:
        (event,) = audit_events_for(session=session, request_id=request_id)
        assert event.payload["subject_count"] == 100_000
        assert event.payload["subjects_digest"] == keyed_subjects_digest(
            session, request_id, (PSEUDONYMS.subject("bsn", n) for n in numbers))


# --- decisions --------------------------------------------------------------------------------

def test_a_decision_is_recorded_with_its_ground_version_table_and_deadline(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body(
            categories=["personalia", "gezondheid"])).id
    with transaction(ledger_engine) as session:
        decision = assessed(session, request_id, shipped_table)
        decision_id = record_decision(session=session, request_id=request_id, decision=decision,
                                      table=shipped_table, decided_at=DECIDED,
                                      flow_run_id="run-1").id
    with transaction(ledger_engine) as session:
        row = latest_decision(session=session, request_id=request_id)
        assert row is not None
        assert row.id == decision_id
        assert (row.sequence, row.supersedes, row.decided_by) == (1, None, "engine")
        assert row.outcome == Outcome.PARTIALLY_APPROVED
        assert (row.released, row.withheld) == (["personalia"], ["gezondheid"])
        assert row.reasons == [r.to_dict() for r in decision.reasons]
        assert [r["code"] for r in row.reasons] == ["ground_applies",
                                                    "special_category_not_allowed"]
        assert row.review_triggers == []
        assert row.proposal is None
        assert (row.ground_id, row.ground_version) == ("participatiewet-64",
                                                       decision.ground_version)
        assert row.table_hash == shipped_table.hash
        assert row.decided_at == DECIDED
        assert row.flow_run_id == "run-1"
        assert row.deadline == date(2026, 12, 26)  # 28 days after 28 November
        assert_status(session, request_id, RequestState.DECIDED, since=DECIDED)
        event = audit_events_for(session=session, request_id=request_id)[-1]
        assert event.kind == "decision_recorded"
        assert event.flow_run_id == "run-1"
        assert {k: event.payload[k] for k in ("outcome", "released", "withheld",
                                              "reason_codes", "review_triggers",
                                              "ground_version", "table_hash", "decided_by")} == {
            "outcome": "partially_approved", "released": ["personalia"],
            "withheld": ["gezondheid"],
            "reason_codes": ["ground_applies", "special_category_not_allowed"],
            "review_triggers": [], "ground_version": decision.ground_version,
            "table_hash": shipped_table.hash, "decided_by": "engine"}
        assert verify_chain(session=session).ok


def test_the_deadline_is_the_due_date_asked_for_if_that_is_earlier(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        early = submit(session, request_body(reference="E", due_date="2026-12-10")).id
        late = submit(session, request_body(reference="L", due_date="2027-02-01")).id
        given = submit(session, request_body(reference="G")).id
        assert decide(session, early, shipped_table).deadline == date(2026, 12, 10)
        assert decide(session, late, shipped_table).deadline == date(2026, 12, 26)
        assert decide(session, given, shipped_table,
                      deadline=date(2026, 12, 1)).deadline == date(2026, 12, 1)


def test_compute_deadline() -> None:
    assert compute_deadline(received_on=date(2026, 11, 28), response_days=28,
                            due_date=None) == date(2026, 12, 26)
    assert compute_deadline(received_on=date(2026, 11, 28), response_days=28,
                            due_date=date(2026, 12, 1)) == date(2026, 12, 1)
    assert compute_deadline(received_on=date(2026, 11, 28), response_days=28,
                            due_date=date(2027, 1, 1)) == date(2026, 12, 26)


def test_a_decision_that_needs_review_awaits_it_and_a_reviewer_supersedes_it(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    many = [{"bsn": n} for n in valid_bsns(1001)]  # one above the automatic limit
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body(subjects=many)).id
        engine_decision = assessed(session, request_id, shipped_table)
        assert engine_decision.outcome is Outcome.NEEDS_REVIEW
        first = record_decision(session=session, request_id=request_id,
                                decision=engine_decision, table=shipped_table,
                                decided_at=DECIDED)
        first_id, first_deadline = first.id, first.deadline
        assert first.proposal == {"released": ["opleidingsgegevens", "personalia"],
                                  "withheld": []}
        assert [t["code"] for t in first.review_triggers] == ["above_auto_limit"]
        assert first.released == []
        assert_status(session, request_id, RequestState.AWAITING_REVIEW)
    assert engine_decision.proposal is not None
    reviewed = dataclasses.replace(engine_decision, outcome=Outcome.APPROVED,
                                   released=engine_decision.proposal.released,
                                   review_triggers=(), proposal=None)
    with transaction(ledger_engine) as session:
        second = record_decision(session=session, request_id=request_id, decision=reviewed,
                                 table=shipped_table, decided_by="reviewer:j.jansen",
                                 decided_at=DECIDED + timedelta(days=2))
        assert (second.sequence, second.supersedes) == (2, first_id)
        assert second.deadline == first_deadline
    with transaction(ledger_engine) as session:
        assert [d.sequence for d in decisions_for(session=session, request_id=request_id)] == [
            1, 2]
        latest = latest_decision(session=session, request_id=request_id)
        assert latest is not None
        assert (latest.outcome, latest.decided_by) == ("approved", "reviewer:j.jansen")
        assert_status(session, request_id, RequestState.DECIDED)
        kinds = [e.kind for e in audit_events_for(session=session, request_id=request_id)]
        assert kinds == ["request_received", "decision_recorded", "decision_recorded"]


def test_an_invalid_request_is_rejected_on_the_record_without_a_deadline(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    raw = request_body(subjects=[{"bsn": "111222334"}])
    with transaction(ledger_engine) as session:
        request_id = submit(session, raw).id
        decision = assess(read_request(raw, received_on=RECEIVED.date()), Body.GEMEENTE,
                          shipped_table)
        row = record_decision(session=session, request_id=request_id, decision=decision,
                              table=shipped_table, decided_at=DECIDED)
        assert (row.outcome, row.deadline, row.ground_version) == ("rejected", None, None)
        assert [r["code"] for r in row.reasons] == ["invalid_request"]
        assert_status(session, request_id, RequestState.REJECTED)


def test_a_table_is_stored_once_however_many_decisions_are_read_from_it(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        first = submit(session, request_body(reference="ONE")).id
        second = submit(session, request_body(reference="TWO")).id
        decide(session, first, shipped_table)
    with transaction(ledger_engine) as session:
        decide(session, second, shipped_table)
        assert store_table_snapshot(session=session, table=shipped_table) == shipped_table.hash
    assert counts(ledger_engine)["table_snapshots"] == 1
    (stored,) = all_rows(ledger_engine, "table_snapshots")
    assert stored["content"] == shipped_table.snapshot
    assert stored["first_used_at"] == DECIDED
    events = [e for e in all_rows(ledger_engine, "audit_events")
              if e["kind"] == "table_snapshot_stored"]
    assert len(events) == 1
    assert events[0]["payload"]["table_hash"] == shipped_table.hash
    assert events[0]["request_id"] is None


def test_a_decision_is_replayed_identically_from_the_stored_snapshot(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body(categories=["personalia", "gezondheid"])).id
        original = assessed(session, request_id, shipped_table)
        record_decision(session=session, request_id=request_id, decision=original,
                        table=shipped_table, decided_at=DECIDED)
    with transaction(ledger_engine) as session:
        row = latest_decision(session=session, request_id=request_id)
        assert row is not None
        table = load_table_snapshot(session=session, table_hash=row.table_hash)
        assert table.hash == shipped_table.hash
        assert assessed(session, request_id, table) == original


def test_a_missing_snapshot_is_a_named_error(ledger_engine: Engine) -> None:
    with transaction(ledger_engine) as session, pytest.raises(SnapshotMissingError) as caught:
        load_table_snapshot(session=session, table_hash="a" * 64)
    assert isinstance(caught.value, DisclosureError)
    assert caught.value.table_hash == "a" * 64


def test_decisions_from_another_version_of_the_table_store_that_table_too(
        ledger_engine: Engine, shipped_table: GroundTable, tmp_path: Path) -> None:
    shipped = Path(shipped_table.source) / "participatiewet-64.yaml"
    amended = tmp_path / "grounds"
    amended.mkdir()
    shutil.copy(shipped, amended / shipped.name)
    content = (amended / shipped.name).read_text()
    assert "response_days: 28" in content
    (amended / shipped.name).write_text(content.replace("response_days: 28",
                                                        "response_days: 14"))
    short_term = load_table(amended)
    with transaction(ledger_engine) as session:
        one = submit(session, request_body(reference="ONE")).id
        two = submit(session, request_body(reference="TWO")).id
        assert decide(session, one, shipped_table).deadline == date(2026, 12, 26)
        assert decide(session, two, short_term).deadline == date(2026, 12, 12)
    assert counts(ledger_engine)["table_snapshots"] == 2


def test_a_decision_read_from_another_table_than_the_one_given_is_refused(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body()).id
        decision = dataclasses.replace(assessed(session, request_id, shipped_table),
                                       table_hash="b" * 64)
        with pytest.raises(LedgerError, match="not from the table"):
            record_decision(session=session, request_id=request_id, decision=decision,
                            table=shipped_table, decided_at=DECIDED)


def test_a_decision_on_an_unknown_request_is_refused_and_nothing_is_written(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body()).id
        decision = assessed(session, request_id, shipped_table)
    before = counts(ledger_engine)
    with transaction(ledger_engine) as session, pytest.raises(RequestNotFoundError):
        record_decision(session=session, request_id="no-such-request", decision=decision,
                        table=shipped_table, decided_at=DECIDED)
    assert counts(ledger_engine) == before


def test_a_batch_of_decisions_is_one_chain_append(ledger_engine: Engine,
                                                  shipped_table: GroundTable) -> None:
    with transaction(ledger_engine) as session:
        ids = [submit(session, request_body(reference=f"B-{n}")).id for n in range(3)]
    with transaction(ledger_engine) as session:
        items = [DecisionItem(request_id=i, decision=assessed(session, i, shipped_table),
                              decided_at=DECIDED, flow_run_id="run-batch") for i in ids]
        rows = record_decisions(session=session, table=shipped_table, items=items)
        assert [r.request_id for r in rows] == ids
        assert {r.sequence for r in rows} == {1}
        for request_id in ids:
            assert_status(session, request_id, RequestState.DECIDED)
        assert verify_chain(session=session).ok
        assert record_decisions(session=session, table=shipped_table, items=[]) == []
    events = sorted(all_rows(ledger_engine, "audit_events"), key=lambda e: e["seq"])
    assert [e["kind"] for e in events[3:]] == ["table_snapshot_stored", *["decision_recorded"] * 3]


# --- fail closed ------------------------------------------------------------------------------

def _fail_decision_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    real = chain.append_events

    def failing(*, session: Session, events: list[chain.NewEvent]) -> list[Any]:
        if any(e.kind == "decision_recorded" for e in events):
            raise RuntimeError("the audit store is unavailable")
        return real(session=session, events=events)

    monkeypatch.setattr(chain, "append_events", failing)


def _refuse_decision_events_in_the_database(engine: Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text(
                "CREATE TRIGGER audit_store_full BEFORE INSERT ON audit_events "
                "WHEN NEW.kind = 'decision_recorded' "
                "BEGIN SELECT RAISE(ABORT, 'audit store full'); END"))
        else:
            connection.execute(text(
                "CREATE FUNCTION audit_store_full() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.kind = 'decision_recorded' THEN "
                "RAISE EXCEPTION 'audit store full'; END IF; RETURN NEW; END $$"))
            connection.execute(text(
                "CREATE TRIGGER audit_store_full BEFORE INSERT ON audit_events "
                "FOR EACH ROW EXECUTE FUNCTION audit_store_full()"))


@pytest.mark.parametrize("failure", ["chain append raises", "database refuses the event"])
def test_if_the_audit_event_cannot_be_written_no_decision_is_written(
        ledger_engine: Engine, shipped_table: GroundTable, monkeypatch: pytest.MonkeyPatch,
        failure: str) -> None:
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body()).id
    before = counts(ledger_engine)
    if failure == "chain append raises":
        _fail_decision_audit(monkeypatch)
    else:
        _refuse_decision_events_in_the_database(ledger_engine)
    # The caller even swallows the error and commits: the ledger must still have written nothing.
    with transaction(ledger_engine) as session, pytest.raises(Exception, match="audit store"):
        decide(session, request_id, shipped_table)
    assert counts(ledger_engine) == before
    with transaction(ledger_engine) as session:
        assert latest_decision(session=session, request_id=request_id) is None
        assert_status(session, request_id, RequestState.RECEIVED)
        assert verify_chain(session=session).ok


def test_if_the_audit_event_cannot_be_written_no_submission_is_written(
        ledger_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(**_: object) -> list[Any]:
        raise RuntimeError("the audit store is unavailable")

    monkeypatch.setattr(chain, "append_events", failing)
    with transaction(ledger_engine) as session, pytest.raises(RuntimeError):
        submit(session, request_body())
    assert set(counts(ledger_engine).values()) == {0}
