"""The review queue: every request waiting for a legal reviewer, as the ledger has it.

One query answers what a reviewer's first screen needs — which request, from whom, on which
ground, due when, at which step of the review (first reviewer, or second after whom), how many
answers were refused, and which flow run holds its form — without a subject in it. Oldest
deadline first; a review without a deadline (none is computed for it) comes last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlmodel import Session, col

from legal_bases.vocabulary import Outcome
from records.ledger import ENGINE
from records.models import AuditEvent, DecisionRow, RequestRow, RequestStatus
from records.reviews import ReviewAnswerRow, reviewer_names
from records.vocabulary import RequestState

#: The audit event that names the flow run holding a review (written by the dispatcher).
REVIEW_RUN_STARTED = "review_run_started"
WAITING_STATES = (RequestState.AWAITING_REVIEW.value, RequestState.ESCALATED.value)
#: Requests per ``IN (…)`` query (SQLite allows some 32,000 parameters; PostgreSQL more).
QUERY_CHUNK = 500


@dataclass(frozen=True)
class FirstAnswer:
    """The accepted first half of a four-eyes review: who gave it, in which role, what."""

    reviewer_id: str
    reviewer_name: str
    role: str
    verdict: str


@dataclass(frozen=True)
class WaitingReview:
    """One request waiting for a reviewer (ids, dates and counts; nothing about a subject)."""

    request_id: str
    reference: str | None
    partner_id: str
    requester_body: str
    ground_id: str | None
    received_at: datetime
    deadline: date | None
    state: str
    decision_id: str
    subject_count: int | None
    first: FirstAnswer | None
    refused_answers: int
    review_run_id: str | None

    @property
    def escalated(self) -> bool:
        return self.state == RequestState.ESCALATED.value

    @property
    def step(self) -> str:
        """``first`` (nobody has decided yet) or ``second`` (four eyes: a second reviewer)."""
        return "second" if self.first is not None else "first"

    def days_left(self, today: date) -> int | None:
        return None if self.deadline is None else (self.deadline - today).days

    def overdue(self, today: date) -> bool:
        """At or past its deadline day (the sweep marks it overdue then, escalates a day on)."""
        return self.deadline is not None and self.deadline <= today


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i:i + QUERY_CHUNK] for i in range(0, len(items), QUERY_CHUNK)]


def waiting_reviews(*, session: Session) -> list[WaitingReview]:
    """Every request waiting for a reviewer, oldest deadline first (then oldest received)."""
    rows = session.execute(
        select(RequestRow.id, RequestRow.reference,  # type: ignore[call-overload]
               RequestRow.partner_id, RequestRow.requester_body, RequestRow.received_at,
               RequestRow.subject_count, RequestStatus.state)
        .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
        .where(col(RequestStatus.state).in_(WAITING_STATES))).all()
    ids = [r[0] for r in rows]
    engine: dict[str, DecisionRow] = {}
    answers: dict[str, list[ReviewAnswerRow]] = {}
    runs: dict[tuple[str, str | None], str] = {}
    for chunk in _chunks(ids):
        for decision in session.execute(select(DecisionRow).where(
                col(DecisionRow.request_id).in_(chunk), col(DecisionRow.decided_by) == ENGINE,
                col(DecisionRow.outcome) == Outcome.NEEDS_REVIEW.value)).scalars():
            held = engine.get(decision.request_id)
            if held is None or decision.sequence > held.sequence:
                engine[decision.request_id] = decision
        for answer in session.execute(select(ReviewAnswerRow).where(
                col(ReviewAnswerRow.request_id).in_(chunk))
                .order_by(col(ReviewAnswerRow.seq))).scalars():
            answers.setdefault(answer.request_id, []).append(answer)
        for request_id, payload in session.execute(
                select(AuditEvent.request_id, AuditEvent.payload)  # type: ignore[call-overload]
                .where(col(AuditEvent.kind) == REVIEW_RUN_STARTED,
                       col(AuditEvent.request_id).in_(chunk))
                .order_by(col(AuditEvent.seq))):
            if isinstance(payload, dict) and payload.get("review_run_id"):
                runs[(request_id, payload.get("decision_id"))] = str(payload["review_run_id"])
    firsts = {r: _pending_first(a) for r, a in answers.items()}
    names = reviewer_names(session=session,
                           ids=sorted({f.reviewer_id for f in firsts.values() if f}))
    found = []
    for request_id, reference, partner_id, body, received_at, subjects, state in rows:
        decision = engine.get(request_id)
        if decision is None:  # waiting without an engine decision to review: not a review
            continue
        mine = [a for a in answers.get(request_id, []) if a.answered_at >= decision.decided_at]
        first = firsts.get(request_id)
        reviewer = names.get(first.reviewer_id) if first is not None else None
        found.append(WaitingReview(
            request_id=request_id, reference=reference, partner_id=partner_id,
            requester_body=body, ground_id=decision.ground_id, received_at=received_at,
            deadline=decision.deadline, state=state, decision_id=decision.id,
            subject_count=subjects,
            first=None if first is None else FirstAnswer(
                first.reviewer_id, reviewer.name if reviewer else first.reviewer_id,
                first.role or (reviewer.role if reviewer else ""), first.verdict),
            refused_answers=sum(1 for a in mine if not a.accepted),
            # a run started before 0.4.0 names no decision: it holds the first one
            review_run_id=runs.get((request_id, decision.id)) or (
                runs.get((request_id, None)) if decision.sequence == 1 else None)))
    found.sort(key=lambda w: (w.deadline is None, w.deadline or date.max, w.received_at))
    return found


def _pending_first(answers: list[ReviewAnswerRow]) -> ReviewAnswerRow | None:
    """The accepted first answer a second reviewer must confirm, if the last accepted answer
    is one (the review flow's own rule)."""
    accepted = [a for a in answers if a.accepted]
    return accepted[-1] if accepted and accepted[-1].step == "first" else None
