"""Recording decisions: a batch in one statement per table, or apart when one of them cannot be
recorded (poison set aside, never blocking the batch); the request's state after each."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from legal_bases.decision import Decision
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Outcome
from records import chain
from records.chain import NewEvent
from records.errors import (
    LedgerError,
    RequestNotFoundError,
    ValueTooLongError,
)
from records.ledger import ENGINE, received_on
from records.models import (
    DecisionRow,
    RequestRow,
    RequestStatus,
    overlong,
)
from records.snapshots import store_table_snapshot
from records.timestamps import utc
from records.vocabulary import EventKind, RequestState

_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
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


