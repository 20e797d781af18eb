"""Deciding requests: read each recorded submission again, assess it against the table, record
the decisions (a batch at a time, poison set aside), and send to review what needs a person."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session

from flows.logs import get_logger
from flows.pipeline.recorded import parse_submission, requests_in
from flows.runtime import Runtime
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.decision import Decision
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.vocabulary import Body, Outcome, ReviewTrigger
from records.decisions import DecisionItem, SetAside, record_decisions_apart, record_set_aside
from records.release import RELEASING
from records.vocabulary import RequestState


@dataclass(frozen=True)
class Decided:
    """Where a batch went: ids to deliver, to review, rejected, and set aside (ids only)."""

    deliver: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)


def decide_requests(rt: Runtime, request_ids: Sequence[str], *, flow_run_id: str | None,
                    ) -> Decided:
    """Validate, assess and record the decisions of the claimed requests not yet decided.

    A submission recorded as invalid is rejected ``invalid_request`` with its recorded errors,
    whatever its text reads as (:func:`parse_submission`). A decision that would release data
    about a shielded subject goes to review instead. No request can stop the others: one that
    cannot be assessed or recorded is set aside (``failed``, with a ``request_set_aside`` event)
    and the rest are decided. The decisions are on the record (hash-chained) before this
    returns: nothing is delivered before its decision is written.
    """
    log = get_logger("dispatcher")
    now = datetime.now(UTC)
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        rows = requests_in(session, request_ids)
        waiting = [row for row, state in rows
                   if state in (RequestState.RECEIVED.value, RequestState.INVALID.value)]
        already = [row.id for row, state in rows if state == RequestState.DECIDED.value]
        parsed: dict[str, DisclosureRequest | InvalidRequest] = {}
        decisions: dict[str, Decision] = {}
        aside: list[SetAside] = []
        for row in waiting:
            try:
                parsed[row.id] = parse_submission(row, session)
                decisions[row.id] = assess(parsed[row.id], Body(row.requester_body), rt.table)
            except Exception as exc:  # one submission must never stop the batch
                aside.append(SetAside(request_id=row.id, step="decide", reason="not_assessable",
                                      detail=f"it could not be read or assessed "
                                             f"({type(exc).__name__})",
                                      at=now, flow_run_id=flow_run_id))
        decisions = _send_shielded_to_review(rt, decisions, parsed)
        record_set_aside(session=session, items=aside)
        recorded, refused = record_decisions_apart(session=session, table=rt.table, items=[
            DecisionItem(request_id=rid, decision=d, decided_at=now, flow_run_id=flow_run_id)
            for rid, d in decisions.items()], flow_run_id=flow_run_id)
    outcomes = {row.request_id: row.outcome for row in recorded}
    outcome = Decided(
        deliver=already + [rid for rid, o in outcomes.items() if o in RELEASING],
        review=[rid for rid, o in outcomes.items() if o == Outcome.NEEDS_REVIEW.value],
        rejected=[rid for rid, o in outcomes.items() if o == Outcome.REJECTED.value],
        set_aside=[a.request_id for a in aside + refused])
    log.info("batch_decided", decided=len(outcomes), to_deliver=len(outcome.deliver),
             to_review=len(outcome.review), rejected=len(outcome.rejected),
             set_aside=len(outcome.set_aside))
    for item in aside + refused:
        log.warning("request_set_aside", request_id=item.request_id, step=item.step,
                    reason=item.reason)
    return outcome


def _send_shielded_to_review(rt: Runtime, decisions: dict[str, Decision],
                             parsed: dict[str, DisclosureRequest | InvalidRequest],
                             ) -> dict[str, Decision]:
    releasing = {rid: request for rid, request in parsed.items()
                 if isinstance(request, DisclosureRequest) and rid in decisions
                 and decisions[rid].outcome.value in RELEASING}
    subjects = list(dict.fromkeys(s for r in releasing.values() for s in r.subjects))
    if not subjects:
        return decisions
    shielded = rt.register.shielded(subjects)
    out = dict(decisions)
    for rid, request in releasing.items():
        if any(s in shielded for s in request.subjects):
            out[rid] = with_review_trigger(decisions[rid], ReviewTrigger.SHIELDED_SUBJECT)
    return out
