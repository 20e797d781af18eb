"""Which requests wait for a review run, and the record that one was started."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from flows.pipeline.recorded import chunks
from flows.runtime import Runtime
from legal_bases.vocabulary import Outcome
from records.ledger import (
    ENGINE,
)
from records.models import AuditEvent, DecisionRow, RequestRow, RequestStatus
from records.review_queue import REVIEW_RUN_STARTED
from records.reviews import record_review_event
from records.vocabulary import RequestState

__all__ = ["REVIEW_RUN_STARTED", "UnderReview", "record_review_started", "reviews_without_run",
           "under_review"]


@dataclass(frozen=True)
class UnderReview:
    """The engine decision a request's review answers: its id and sequence, and what the
    review run's name and tags show (the partner's reference, the ground, the deadline, the
    requesting body; nothing about a subject)."""

    request_id: str
    decision_id: str
    sequence: int
    reference: str | None = None
    ground_id: str | None = None
    deadline: date | None = None
    body: str = ""


def under_review(rt: Runtime, request_ids: Sequence[str]) -> list[UnderReview]:
    """For each request waiting for a reviewer, the engine decision that sent it there."""
    found: dict[str, UnderReview] = {}
    with Session(rt.ledger) as session:
        for chunk in chunks(request_ids, 500):
            for decision_id, request_id, sequence, ground_id, deadline, reference, body in (
                    session.execute(
                        select(DecisionRow.id,  # type: ignore[call-overload]
                               DecisionRow.request_id, DecisionRow.sequence,
                               DecisionRow.ground_id, DecisionRow.deadline,
                               RequestRow.reference, RequestRow.requester_body)
                        .join(RequestRow, col(RequestRow.id) == col(DecisionRow.request_id))
                        .where(col(DecisionRow.request_id).in_(chunk),
                               col(DecisionRow.decided_by) == ENGINE,
                               col(DecisionRow.outcome) == Outcome.NEEDS_REVIEW.value))):
                held = found.get(request_id)
                if held is None or sequence > held.sequence:
                    found[request_id] = UnderReview(request_id, decision_id, sequence,
                                                    reference, ground_id, deadline, body)
    return [found[r] for r in request_ids if r in found]


def record_review_started(rt: Runtime, review: UnderReview, review_run_id: str, *,
                          flow_run_id: str | None) -> None:
    """Put on the record which flow run holds the review of an engine decision."""
    with Session(rt.ledger) as session, session.begin():
        record_review_event(session=session, request_id=review.request_id,
                            kind=REVIEW_RUN_STARTED, now=datetime.now(UTC),
                            payload={"review_run_id": review_run_id,
                                     "decision_id": review.decision_id},
                            flow_run_id=flow_run_id)


def reviews_without_run(rt: Runtime) -> list[str]:
    """Requests waiting for a reviewer whose review run (for the engine decision that sent
    them there) was never started. A ``review_run_started`` event without a decision id (written
    before 0.4.0) stands for the request's first decision."""
    with Session(rt.ledger) as session:
        waiting = list(session.execute(
            select(RequestStatus.request_id).where(  # type: ignore[call-overload]
                col(RequestStatus.state).in_([RequestState.AWAITING_REVIEW.value,
                                              RequestState.ESCALATED.value]))).scalars())
        started: dict[str, set[str | None]] = {}
        for chunk in chunks(waiting, 500):
            for request_id, payload in session.execute(
                    select(AuditEvent.request_id, AuditEvent.payload)  # type: ignore[call-overload]
                    .where(col(AuditEvent.kind) == REVIEW_RUN_STARTED,
                           col(AuditEvent.request_id).in_(chunk))):
                started.setdefault(request_id, set()).add(
                    payload.get("decision_id") if isinstance(payload, dict) else None)
    missing = []
    for review in under_review(rt, waiting):
        named = started.get(review.request_id, set())
        if review.decision_id not in named and not (review.sequence == 1 and None in named):
            missing.append(review.request_id)
    return missing
