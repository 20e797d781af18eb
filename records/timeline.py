"""The ledger's facts of one request's history, for ``disclosure timeline``.

The ledger is the record (DESIGN.md section 9): the request, where the work queue says it stands,
its audit events in chain order, its decisions (the engine's, then a reviewer's), the review
answers (and the role each reviewer is enrolled with) and the deliveries. :func:`read_ledger`
reads them in one session; the timeline (:mod:`flows.audit.request_timeline`) joins them with
what Prefect holds about the flow runs they name and checks the two against each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from records.ledger import ENGINE, audit_events_for, decisions_for, get_request, status_of
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestRow
from records.reviews import ReviewAnswerRow, answers_for, reviewers


@dataclass(frozen=True)
class LedgerFacts:
    """Everything the ledger holds about one request."""

    request: RequestRow
    state: str | None
    events: list[AuditEvent]
    decisions: list[DecisionRow]
    answers: list[ReviewAnswerRow]
    deliveries: list[DeliveryRow]
    reviewer_roles: dict[str, str] = field(default_factory=dict)  # enrolled, by reviewer id

    def engine_decisions(self) -> list[DecisionRow]:
        """The engine's own decisions, first to last."""
        return [d for d in self.decisions if d.decided_by == ENGINE]


def read_ledger(session: Session, request_id: str) -> LedgerFacts | None:
    """The ledger's facts about ``request_id``, or None if it holds no such request."""
    request = get_request(session=session, request_id=request_id)
    if request is None:
        return None
    status = status_of(session=session, request_id=request_id)
    deliveries = list(session.exec(
        select(DeliveryRow).where(col(DeliveryRow.request_id) == request_id)
        .order_by(col(DeliveryRow.delivered_at))))
    answers = answers_for(session=session, request_id=request_id)
    named = {a.reviewer_id for a in answers}
    return LedgerFacts(
        request=request, state=status.state if status else None,
        events=audit_events_for(session=session, request_id=request_id),
        decisions=decisions_for(session=session, request_id=request_id),
        answers=answers, deliveries=deliveries,
        reviewer_roles={r.id: r.role for r in reviewers(session=session) if r.id in named})
