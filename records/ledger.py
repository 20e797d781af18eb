"""Data access for the ledger: record submissions and decisions, read them back.

Every function takes keyword arguments and works in the caller's session and transaction; none
commits. Each writing function does its work inside a SAVEPOINT, so if any part of it fails —
the row, the status, the audit event — none of it stays, even if the caller carries on and
commits (fail closed, DESIGN.md section 10).

Personal data: a request's raw body is kept exactly as received (the record of what the partner
sent); subjects are otherwise stored and audited only by their keyed pseudonym.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, defer
from sqlmodel import col

from legal_bases.decision import Decision
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.table import GroundTable, canonical_json, sha256, table_from_snapshot
from legal_bases.vocabulary import Body, Outcome
from records import chain
from records.chain import NewEvent
from records.errors import (
    LedgerError,
    ReferenceConflictError,
    RequestNotFoundError,
    SnapshotMissingError,
    ValueTooLongError,
)
from records.models import (
    REFERENCE_LENGTH,
    SLUG_LENGTH,
    AuditEvent,
    DecisionRow,
    RequestRow,
    RequestStatus,
    RequestSubject,
    TableSnapshot,
    overlong,
)
from records.pseudonym import Pseudonymizer, subjects_digest
from records.timestamps import utc
from records.vocabulary import Channel, EventKind, RequestState

#: Whose calendar day a request is received on: DUO's, for the statutory response term.
RECEIPT_TIMEZONE = ZoneInfo("Europe/Amsterdam")
#: ``decided_by`` of the engine's own decisions.
ENGINE = "engine"

_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
_SNAPSHOTS: Table = TableSnapshot.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_IN_CHUNK = 500  # ids per IN (...) list
#: Where a decision leaves its request in the work queue.
_STATE_AFTER = {
    Outcome.APPROVED: RequestState.DECIDED,
    Outcome.PARTIALLY_APPROVED: RequestState.DECIDED,
    Outcome.REJECTED: RequestState.REJECTED,
    Outcome.NEEDS_REVIEW: RequestState.AWAITING_REVIEW,
}
_V = TypeVar("_V", Body, Channel)


# --- submissions -------------------------------------------------------------------------------

def body_hash(raw_body: str) -> str:
    """sha256 of the canonical JSON of a submission, or of its text if it is not JSON.

    Two submissions with the same hash say the same thing, whatever their key order or spacing.
    """
    is_json, data = _loads(raw_body)
    return sha256(canonical_json(data)) if is_json else sha256(raw_body)


def received_on(received_at: datetime) -> date:
    """The calendar day in the Netherlands of ``received_at`` (the day of receipt in law)."""
    return utc(received_at, name="received_at").astimezone(RECEIPT_TIMEZONE).date()


def local_midnight(day: date) -> datetime:
    """The start of ``day`` in the Netherlands, in UTC (midnight is never skipped by DST there)."""
    return datetime.combine(day, time(), tzinfo=RECEIPT_TIMEZONE).astimezone(UTC)


def local_days(first: date, last: date) -> tuple[datetime, datetime]:
    """The instants (UTC) from the start of day ``first`` up to, not including, the start of the
    day after ``last``, days as calendared in the Netherlands (audit periods)."""
    return local_midnight(first), local_midnight(last + timedelta(days=1))


def record_submission(*, session: Session, partner_id: str, requester_body: Body | str,
                      channel: Channel | str, raw_body: str,
                      parsed: DisclosureRequest | InvalidRequest, received_at: datetime,
                      pseudonymizer: Pseudonymizer,
                      correlation_id: str | None = None,
                      intake_key: str | None = None,
                      flow_run_id: str | None = None) -> RequestRow:
    """Record a submission as received, valid or not, and return its row.

    Writes the request (with the raw body exactly as received), its subjects by pseudonym, its
    status (``received`` or ``invalid``) and the audit event (``request_received`` or
    ``request_invalid``). A valid request whose partner and reference match an accepted one is a
    repeat: with the same body the existing row is returned and nothing is written; with a
    different body :class:`ReferenceConflictError` is raised. Invalid submissions never conflict.

    ``intake_key`` is the source's own key for the submission (a drop-off file's line): a
    submission whose key was recorded before returns that row, valid or not, and writes nothing.
    """
    received_at = utc(received_at, name="received_at")
    body, via = _vocabulary(Body, requester_body, "requester_body"), _vocabulary(
        Channel, channel, "channel")
    is_json, data = _loads(raw_body)
    digest = sha256(canonical_json(data)) if is_json else sha256(raw_body)
    request = parsed if isinstance(parsed, DisclosureRequest) else None
    if intake_key is not None:
        seen = session.execute(select(RequestRow).where(
            col(RequestRow.intake_key) == intake_key)).scalar_one_or_none()
        if seen is not None:
            return seen
    if request is not None:
        existing = _accepted(session, partner_id, request.reference)
        if existing is not None:
            return _repeat_or_conflict(existing, digest, partner_id)
    row = RequestRow(**request_values(
        partner_id=partner_id, body=body, channel=via, raw_body=raw_body,
        data=data if is_json else None, digest=digest, parsed=parsed, received_at=received_at,
        correlation_id=correlation_id) | {"intake_key": intake_key})
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            pseudonyms = _record_subjects(session, row.id, request, pseudonymizer)
            state = RequestState.RECEIVED if request is not None else RequestState.INVALID
            session.execute(insert(_STATUS), [{"request_id": row.id, "state": state.value,
                                               "updated_at": received_at}])
            chain.append_events(session=session, events=[submission_event(
                row, request, parsed, state, pseudonyms, flow_run_id=flow_run_id)])
    except IntegrityError:
        # Another transaction accepted the same reference first (PostgreSQL: it committed
        # while we waited on the unique index). Answer as if we had seen it before inserting.
        existing = _accepted(session, partner_id, request.reference) if request else None
        if existing is None:
            raise
        return _repeat_or_conflict(existing, digest, partner_id)
    return row


def _loads(raw_body: str) -> tuple[bool, Any]:
    """The body as JSON data, if it reads as JSON at all (leniently: only its hash depends on
    this); text nested too deeply to read counts as text, like text that is not JSON."""
    try:
        return True, json.loads(raw_body)
    except (ValueError, RecursionError):
        return False, None


def _vocabulary(kind: type[_V], value: _V | str, name: str) -> _V:
    try:
        return kind(value)
    except ValueError:
        raise LedgerError(f"{name} {value!r} is not one of {[v.value for v in kind]}") from None


def _accepted(session: Session, partner_id: str, reference: str) -> RequestRow | None:
    # `requests.valid` as the partial index's own predicate (not `valid = 1`), so SQLite
    # answers from uq_requests_partner_reference instead of scanning every request.
    return session.scalars(
        select(RequestRow).where(col(RequestRow.partner_id) == partner_id,
                                 col(RequestRow.reference) == reference,
                                 text("requests.valid"))).first()


def _repeat_or_conflict(existing: RequestRow, digest: str, partner_id: str) -> RequestRow:
    if existing.body_hash == digest:
        return existing
    raise ReferenceConflictError(partner_id=partner_id, reference=existing.reference or "",
                                 existing_request_id=existing.id)


def _short_str(data: Any, key: str, limit: int) -> str | None:
    """What an invalid submission claimed for ``key``, where it is printable text that fits its
    column (a reference of escape codes would reach an operator's terminal); the raw body keeps
    whatever it was."""
    value = data.get(key) if isinstance(data, dict) else None
    return (value if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()
            else None)


def request_values(*, partner_id: str, body: Body, channel: Channel, raw_body: str, data: Any,
                   digest: str, parsed: DisclosureRequest | InvalidRequest,
                   received_at: datetime, correlation_id: str | None) -> dict[str, Any]:
    """The values of a submission's ``requests`` row (a new id; every column named, so that a
    batch of them inserts as one statement)."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()), "partner_id": partner_id, "requester_body": body.value,
        "channel": channel.value, "received_at": received_at, "raw_body": raw_body,
        "body_hash": digest, "correlation_id": correlation_id, "intake_key": None}
    if isinstance(parsed, DisclosureRequest):
        return values | {
            "reference": parsed.reference, "valid": True, "validation_errors": [],
            "legal_basis": parsed.legal_basis, "purpose": parsed.purpose.value,
            "reference_date": parsed.reference_date, "due_date": parsed.due_date,
            "subject_count": len(parsed.subjects)}
    # What an invalid submission claimed, where it fits; the raw body keeps all of it.
    legal_basis = parsed.legal_basis if parsed.legal_basis and len(
        parsed.legal_basis) <= SLUG_LENGTH else None
    return values | {
        "reference": _short_str(data, "reference", REFERENCE_LENGTH), "valid": False,
        "validation_errors": [e.to_dict() for e in parsed.errors], "legal_basis": legal_basis,
        "purpose": None, "reference_date": None, "due_date": None, "subject_count": None}


def _record_subjects(session: Session, request_id: str, request: DisclosureRequest | None,
                     pseudonymizer: Pseudonymizer) -> list[str]:
    if request is None:
        return []
    pseudonyms = [pseudonymizer.of(s) for s in request.subjects]
    rows = [{"request_id": request_id, "position": position, "id_type": s.id_type.value,
             "pseudonym": pseudonym}
            for position, (s, pseudonym) in enumerate(zip(request.subjects, pseudonyms,
                                                          strict=True))]
    if rows:
        session.execute(insert(_SUBJECTS), rows)
    return pseudonyms


def submission_event(row: RequestRow, request: DisclosureRequest | None,
                      parsed: DisclosureRequest | InvalidRequest, state: RequestState,
                      pseudonyms: list[str], *, flow_run_id: str | None = None) -> NewEvent:
    """The audit event of a recorded submission: ``request_received`` with what was asked (by
    pseudonym and count), or ``request_invalid`` with the error codes only."""
    payload: dict[str, Any] = {
        "state": state.value,
        "partner_id": row.partner_id,
        "requester_body": row.requester_body,
        "channel": row.channel,
        "reference": row.reference,
        "legal_basis": row.legal_basis,
        "body_hash": row.body_hash,
        "correlation_id": row.correlation_id,
    }
    if request is not None:
        by_type: dict[str, int] = {}
        for subject in request.subjects:
            by_type[subject.id_type.value] = by_type.get(subject.id_type.value, 0) + 1
        payload |= {
            "purpose": request.purpose.value,
            "reference_date": request.reference_date.isoformat(),
            "due_date": request.due_date.isoformat() if request.due_date else None,
            "categories": [c.value for c in request.categories],
            "subject_count": len(pseudonyms),
            "subjects_by_type": by_type,
            "subjects_digest": subjects_digest(pseudonyms),
        }
        kind = EventKind.REQUEST_RECEIVED
    else:
        # Paths and messages of validation errors can echo what was sent: codes only here.
        errors = parsed.errors if isinstance(parsed, InvalidRequest) else ()
        payload |= {"error_count": len(errors),
                    "error_codes": sorted({e.code for e in errors})}
        kind = EventKind.REQUEST_INVALID
    return NewEvent(kind=kind.value, occurred_at=row.received_at, actor=row.partner_id,
                    request_id=row.id, flow_run_id=flow_run_id, payload=payload)


# --- table snapshots ---------------------------------------------------------------------------

def store_table_snapshot(*, session: Session, table: GroundTable, used_at: datetime | None = None,
                         actor: str = ENGINE) -> str:
    """Store the table's canonical snapshot unless the ledger has it; return its hash.

    The first time a table is stored, the audit event ``table_snapshot_stored`` records it.
    ``used_at`` (default now) becomes the snapshot's ``first_used_at``.
    """
    if _snapshot_exists(session, table.hash):
        return table.hash
    at = utc(used_at, name="used_at") if used_at is not None else datetime.now(UTC)
    insert_ = postgresql.insert if session.get_bind().dialect.name == "postgresql" else (
        sqlite.insert)
    statement = (insert_(_SNAPSHOTS)
                 .values(hash=table.hash, content=table.snapshot, first_used_at=at)
                 .on_conflict_do_nothing(index_elements=["hash"])
                 .returning(_SNAPSHOTS.c.hash))
    with session.begin_nested():
        if session.execute(statement).scalar_one_or_none() is not None:
            chain.append_events(session=session, events=[NewEvent(
                kind=EventKind.TABLE_SNAPSHOT_STORED.value, occurred_at=at, actor=actor,
                payload={"table_hash": table.hash,
                         "grounds": sorted(table.grounds),
                         "ground_versions": sorted(v.id for g in table for v in g.versions)})])
    return table.hash


def _snapshot_exists(session: Session, table_hash: str) -> bool:
    found = session.execute(
        select(_SNAPSHOTS.c.hash).where(_SNAPSHOTS.c.hash == table_hash)).first()
    return found is not None


def load_table_snapshot(*, session: Session, table_hash: str) -> GroundTable:
    """The table of grounds a decision was read from, rebuilt from its stored snapshot.

    Raises :class:`SnapshotMissingError` if the ledger has no snapshot with that hash.
    """
    content = session.execute(
        select(_SNAPSHOTS.c.content).where(_SNAPSHOTS.c.hash == table_hash)).scalar_one_or_none()
    if content is None:
        raise SnapshotMissingError(table_hash)
    return table_from_snapshot(content, expected_hash=table_hash)


# --- decisions ---------------------------------------------------------------------------------

def compute_deadline(*, received_on: date, response_days: int, due_date: date | None) -> date:
    """When the answer is due: ``response_days`` after receipt, or the due date asked if earlier."""
    statutory = received_on + timedelta(days=response_days)
    return min(statutory, due_date) if due_date is not None else statutory


@dataclass(frozen=True, slots=True)
class DecisionItem:
    """One decision to record with :func:`record_decisions`."""

    request_id: str
    decision: Decision
    decided_at: datetime
    decided_by: str = ENGINE
    flow_run_id: str | None = None
    deadline: date | None = None


def record_decision(*, session: Session, request_id: str, decision: Decision,
                    table: GroundTable, decided_by: str = ENGINE, decided_at: datetime,
                    flow_run_id: str | None = None, deadline: date | None = None) -> DecisionRow:
    """Record one decision; see :func:`record_decisions`."""
    item = DecisionItem(request_id=request_id, decision=decision, decided_at=decided_at,
                        decided_by=decided_by, flow_run_id=flow_run_id, deadline=deadline)
    return record_decisions(session=session, table=table, items=[item])[0]


def record_decisions(*, session: Session, table: GroundTable,
                     items: Sequence[DecisionItem]) -> list[DecisionRow]:
    """Record decisions read from ``table``, with one chain append for all of them.

    For each: the table's snapshot (stored once), the decision row (the next ``sequence`` of its
    request, ``supersedes`` naming the request's previous decision), the ``decision_recorded``
    event, and the request's status (``awaiting_review`` for ``needs_review``, ``rejected`` for a
    rejection, else ``decided``: to be delivered).
    The deadline is the one given, or receipt + the version's ``response_days`` (or the request's
    due date if earlier). Fail closed: if any part fails, nothing of it is written.
    """
    if not items:
        return []
    for item in items:
        utc(item.decided_at, name="decided_at")
        if item.decision.table_hash != table.hash:
            raise LedgerError(f"the decision on request {item.request_id} was read from table "
                              f"{item.decision.table_hash}, not from the table {table.hash} given")
    with session.begin_nested():
        first = min(items, key=lambda i: utc(i.decided_at))
        store_table_snapshot(session=session, table=table, used_at=first.decided_at,
                             actor=first.decided_by)
        request_ids = list(dict.fromkeys(item.request_id for item in items))
        requests = _request_dates(session, request_ids)
        latest = _latest_decisions(session, request_ids)
        rows: list[DecisionRow] = []
        events: list[NewEvent] = []
        states: dict[str, tuple[RequestState, datetime]] = {}
        for item in items:
            if item.request_id not in requests:
                raise RequestNotFoundError(item.request_id)
            row = _decision_row(item, table, requests[item.request_id],
                                latest.get(item.request_id))
            latest[item.request_id] = (row.sequence, row.id)
            state = _STATE_AFTER[item.decision.outcome]
            states[item.request_id] = (state, row.decided_at)
            rows.append(row)
            events.append(_decision_event(row, item.decision, state))
        session.add_all(rows)
        session.flush()
        set_states(session, states)
        chain.append_events(session=session, events=events)
    return rows


def in_chunks(values: Sequence[str], size: int = _IN_CHUNK) -> Iterable[Sequence[str]]:
    """``values`` in slices of ``size``, each one ``IN (...)`` list of a query."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _request_dates(session: Session,
                   request_ids: Sequence[str]) -> dict[str, tuple[datetime, date | None]]:
    out: dict[str, tuple[datetime, date | None]] = {}
    for chunk in in_chunks(request_ids):
        for row in session.execute(
                select(_REQUESTS.c.id, _REQUESTS.c.received_at, _REQUESTS.c.due_date)
                .where(_REQUESTS.c.id.in_(chunk))):
            out[row.id] = (row.received_at, row.due_date)
    return out


def _latest_decisions(session: Session, request_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for chunk in in_chunks(request_ids):
        for row in session.execute(
                select(_DECISIONS.c.request_id, _DECISIONS.c.sequence, _DECISIONS.c.id)
                .where(_DECISIONS.c.request_id.in_(chunk))):
            if row.request_id not in out or row.sequence > out[row.request_id][0]:
                out[row.request_id] = (row.sequence, row.id)
    return out


def _decision_row(item: DecisionItem, table: GroundTable,
                  request: tuple[datetime, date | None],
                  previous: tuple[int, str] | None) -> DecisionRow:
    decision = item.decision
    deadline = item.deadline
    if deadline is None and decision.ground_version is not None:
        version = table.version(decision.ground_version)
        received_at, due_date = request
        deadline = compute_deadline(received_on=received_on(received_at),
                                    response_days=version.response_days, due_date=due_date)
    row = DecisionRow(
        id=str(uuid.uuid4()),
        request_id=item.request_id,
        sequence=previous[0] + 1 if previous else 1,
        outcome=decision.outcome.value,
        released=[c.value for c in decision.released],
        withheld=[c.value for c in decision.withheld],
        reasons=[r.to_dict() for r in decision.reasons],
        review_triggers=[r.to_dict() for r in decision.review_triggers],
        proposal=decision.proposal.to_dict() if decision.proposal else None,
        ground_id=decision.ground_id,
        ground_version=decision.ground_version,
        table_hash=decision.table_hash,
        decided_by=item.decided_by,
        decided_at=utc(item.decided_at),
        flow_run_id=item.flow_run_id,
        deadline=deadline,
        supersedes=previous[1] if previous else None,
    )
    too_long = overlong(_DECISIONS, row.model_dump())
    if too_long:
        column, length = too_long[0]
        raise ValueTooLongError(table="decisions", column=column, length=length,
                                request_id=item.request_id)
    return row


def _decision_event(row: DecisionRow, decision: Decision, state: RequestState) -> NewEvent:
    return NewEvent(
        kind=EventKind.DECISION_RECORDED.value, occurred_at=row.decided_at, actor=row.decided_by,
        request_id=row.request_id, flow_run_id=row.flow_run_id,
        payload={
            "state": state.value,
            "decision_id": row.id,
            "sequence": row.sequence,
            "supersedes": row.supersedes,
            "outcome": row.outcome,
            "released": row.released,
            "withheld": row.withheld,
            "reason_codes": list(decision.reason_codes),
            "review_triggers": list(decision.trigger_codes),
            "proposal": row.proposal,
            "ground_id": row.ground_id,
            "ground_version": row.ground_version,
            "table_hash": row.table_hash,
            "decided_by": row.decided_by,
            "deadline": row.deadline.isoformat() if row.deadline else None,
        })


def record_decisions_apart(*, session: Session, table: GroundTable,
                           items: Sequence[DecisionItem], flow_run_id: str | None = None,
                           ) -> tuple[list[DecisionRow], list[SetAside]]:
    """:func:`record_decisions`, but no decision can stop the others (DESIGN.md section 10).

    A decision with a value longer than its column is set aside before anything is written; if
    the database still refuses the batch (a constraint, data it cannot hold), the decisions are
    recorded one by one and each one it refuses is set aside. A set-aside request moves to
    ``failed`` with a ``request_set_aside`` event naming the step, the reason and the column —
    never a value. Errors of the database itself (unreachable, locked) are raised: they are not
    about one request. Returns the decisions recorded and the requests set aside.
    """
    waiting = list(items)
    aside: list[SetAside] = []
    while True:
        try:
            rows = record_decisions(session=session, table=table, items=waiting)
            break
        except ValueTooLongError as exc:
            rest = [i for i in waiting if i.request_id != exc.request_id]
            if len(rest) == len(waiting):
                raise  # not about one of these decisions
            waiting = rest
            aside.append(SetAside(request_id=str(exc.request_id), step="decide",
                                  reason="value_too_long", detail=f"{exc.table}.{exc.column} "
                                  f"holds at most {exc.length} characters",
                                  at=datetime.now(UTC), flow_run_id=flow_run_id))
        except (IntegrityError, DataError):
            rows = []
            for item in waiting:
                try:
                    rows += record_decisions(session=session, table=table, items=[item])
                except (IntegrityError, DataError) as exc:
                    aside.append(SetAside(
                        request_id=item.request_id, step="decide", reason="not_recordable",
                        detail=f"the database refused the decision ({type(exc.orig).__name__})",
                        at=datetime.now(UTC), flow_run_id=flow_run_id))
            break
    record_set_aside(session=session, items=aside)
    return rows, aside


@dataclass(frozen=True, slots=True)
class SetAside:
    """A request the pipeline cannot carry further: at which ``step``, why (``reason``, a code)
    and ``detail`` in plain words (a column and its length, an error's class) — never a value."""

    request_id: str
    step: str
    reason: str
    detail: str
    at: datetime
    flow_run_id: str | None = None


def record_set_aside(*, session: Session, items: Sequence[SetAside]) -> None:
    """Move requests to ``failed`` with a ``request_set_aside`` event each (all or nothing)."""
    if not items:
        return
    with session.begin_nested():
        set_states(session, {i.request_id: (RequestState.FAILED, utc(i.at)) for i in items})
        chain.append_events(session=session, events=[NewEvent(
            kind=EventKind.REQUEST_SET_ASIDE.value, occurred_at=utc(i.at), actor=ENGINE,
            request_id=i.request_id, flow_run_id=i.flow_run_id,
            payload={"state": RequestState.FAILED.value, "step": i.step, "reason": i.reason,
                     "detail": i.detail}) for i in items])


def set_states(session: Session, states: dict[str, tuple[RequestState, datetime]]) -> None:
    """Move requests to new states in the work-queue projection (the one table that updates)."""
    statement = (update(_STATUS)
                 .where(_STATUS.c.request_id == bindparam("b_request_id"))
                 .values(state=bindparam("b_state"), updated_at=bindparam("b_updated_at")))
    session.execute(statement, [
        {"b_request_id": request_id, "b_state": state.value, "b_updated_at": at}
        for request_id, (state, at) in states.items()])


# --- queries -----------------------------------------------------------------------------------

def get_request(*, session: Session, request_id: str) -> RequestRow | None:
    """The request with this id, or None."""
    return session.get(RequestRow, request_id)


def subjects_for(*, session: Session, request_id: str) -> list[RequestSubject]:
    """The subjects of a request (pseudonyms), in their order in the request."""
    return list(session.scalars(
        select(RequestSubject).where(col(RequestSubject.request_id) == request_id)
        .order_by(col(RequestSubject.position))))


def decisions_for(*, session: Session, request_id: str) -> list[DecisionRow]:
    """Every decision on a request, first to last (``sequence`` order)."""
    return list(session.scalars(
        select(DecisionRow).where(col(DecisionRow.request_id) == request_id)
        .order_by(col(DecisionRow.sequence))))


def latest_decision(*, session: Session, request_id: str) -> DecisionRow | None:
    """The decision in force for a request: the one with the highest ``sequence``, or None."""
    return session.scalars(
        select(DecisionRow).where(col(DecisionRow.request_id) == request_id)
        .order_by(col(DecisionRow.sequence).desc()).limit(1)).first()


def status_of(*, session: Session, request_id: str) -> RequestStatus | None:
    """The request's row in the work-queue projection, or None."""
    return session.get(RequestStatus, request_id)


def audit_events_for(*, session: Session, request_id: str) -> list[AuditEvent]:
    """The audit events about a request, in chain order."""
    return list(session.scalars(
        select(AuditEvent).where(col(AuditEvent.request_id) == request_id)
        .order_by(col(AuditEvent.seq))))


def derived_state(*, session: Session, request_id: str) -> RequestState | None:
    """The request's state as the audit chain tells it: the ``state`` of its latest event with one.

    ``request_status`` must always agree with this; it can be rebuilt from it.
    """
    state: RequestState | None = None
    for event in audit_events_for(session=session, request_id=request_id):
        value = event.payload.get("state")
        if value is not None:
            state = RequestState(value)
    return state


def requests_by_pseudonym(*, session: Session,
                          pseudonym: str | Sequence[str]) -> list[RequestRow]:
    """Every request that named the subject with this pseudonym, oldest first (for inzage).

    ``pseudonym`` may also be several pseudonyms of one person (their BSN's and their
    onderwijsnummer's): every request that named any of them, each once. The raw body (a bulk
    request's names every subject, megabytes of them) is loaded only when read.
    """
    wanted = [pseudonym] if isinstance(pseudonym, str) else list(dict.fromkeys(pseudonym))
    if not wanted:
        return []
    named = select(_SUBJECTS.c.request_id).where(_SUBJECTS.c.pseudonym.in_(wanted))
    return list(session.scalars(
        select(RequestRow).where(col(RequestRow.id).in_(named))
        .options(defer(RequestRow.raw_body))  # type: ignore[arg-type]  # SQLModel types it str
        .order_by(col(RequestRow.received_at), col(RequestRow.id))))


def count_requests(*, session: Session) -> int:
    """How many submissions the ledger holds, valid or not."""
    return int(session.execute(select(func.count()).select_from(_REQUESTS)).scalar_one())
