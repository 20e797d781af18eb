"""Deadlines: what is overdue on a day, and escalating reviews that passed theirs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from flows.logs import get_logger
from flows.runtime import Runtime
from records.ledger import (
    received_on,
)
from records.models import DecisionRow, RequestRow, RequestStatus
from records.reviews import has_event, record_review_event
from records.vocabulary import RequestState


def today() -> date:
    """Today in the Netherlands: the calendar deadlines are counted in."""
    return received_on(datetime.now(UTC))


@dataclass(frozen=True)
class Overdue:
    """A request at or past its deadline that is not finished (ids and dates only)."""

    request_id: str
    partner_id: str
    reference: str | None
    state: str
    deadline: Any


UNFINISHED = (RequestState.RECEIVED.value, RequestState.INVALID.value,
              RequestState.DECIDED.value, RequestState.AWAITING_REVIEW.value,
              RequestState.ESCALATED.value)


def overdue(rt: Runtime, *, on: Any) -> list[Overdue]:
    """Unfinished requests whose deadline is ``on`` or earlier, oldest deadline first."""
    with Session(rt.ledger) as session:
        rows = session.execute(
            select(RequestRow.id, RequestRow.partner_id,  # type: ignore[call-overload]
                   RequestRow.reference, RequestStatus.state, DecisionRow.deadline)
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .join(DecisionRow, col(DecisionRow.request_id) == col(RequestRow.id))
            .where(col(DecisionRow.sequence) == 1, col(DecisionRow.deadline) <= on,
                   col(RequestStatus.state).in_(UNFINISHED))
            .order_by(col(DecisionRow.deadline))).all()
    return [Overdue(*row) for row in rows]


def escalate_reviews(rt: Runtime, *, on: Any, flow_run_id: str | None) -> dict[str, list[str]]:
    """Mark reviews that reach their deadline today as overdue, and escalate those past it.

    Each happens once per request, on the record (an audit event; escalation also moves the
    request to ``escalated``, where it stays decidable: a review is never approved by default).
    Returns the request ids newly overdue and newly escalated.
    """
    out: dict[str, list[str]] = {"overdue": [], "escalated": []}
    waiting = [o for o in overdue(rt, on=on) if o.state in (RequestState.AWAITING_REVIEW.value,
                                                           RequestState.ESCALATED.value)]
    now = datetime.now(UTC)
    with Session(rt.ledger) as session, session.begin():
        for item in waiting:
            payload = {"deadline": item.deadline.isoformat()}
            if not has_event(session=session, request_id=item.request_id, kind="review_overdue"):
                record_review_event(session=session, request_id=item.request_id,
                                    kind="review_overdue", now=now, payload=payload,
                                    flow_run_id=flow_run_id)
                out["overdue"].append(item.request_id)
            if item.deadline < on and not has_event(
                    session=session, request_id=item.request_id, kind="review_escalated"):
                record_review_event(session=session, request_id=item.request_id,
                                    kind="review_escalated", now=now, payload=payload,
                                    state=RequestState.ESCALATED.value, flow_run_id=flow_run_id)
                out["escalated"].append(item.request_id)
    log = get_logger("review")
    for request_id in out["escalated"]:
        log.warning("review_escalated", request_id=request_id)
    return out
