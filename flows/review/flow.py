"""The review flow ``review-request``: one run per request whose decision needs a person.

The run suspends (no process is held while a review takes days) with the reviewer's form on it
(:mod:`flows.review.form`). A suspended run's body runs again from the top when it is resumed,
so everything before the form is a read of the ledger, and where the review stands is the
ledger's: the form for answer ``n`` has the key ``review-<n>`` (Prefect hands back the stored
answer for a key already answered), and answer ``n`` is recorded once. An answer is checked —
the reviewer enrolled and not removed, the one-time code current and unused, the rules of
:mod:`legal_bases.review` — and refused with a reason (the form opens again) or accepted.
Releasing a special category takes a second reviewer. The accepted decision is recorded in the
ledger (the engine's proposal beside it) before anything is delivered, with the same task the
dispatcher uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import structlog
from prefect import flow, suspend_flow_run
from prefect.client.orchestration import get_client
from prefect.input import keyset_from_base_key, read_flow_run_input
from prefect.input.run_input import RunInputMetadata
from prefect.runtime import flow_run
from sqlmodel import Session

from flows import events, starts
from flows.faults import fault
from flows.logs import get_logger
from flows.pipeline import deliver, recorded, review_runs
from flows.pipeline.tasks import deliver_reviewed
from flows.review.case import AnswerShown, DecisionShown, case_markdown, publish_case
from flows.review.form import Case, FirstReview, describe, review_form
from flows.review.labels import ESCALATED_TAG, review_run_name
from flows.review.queue import publish_review_queue
from flows.runtime import Runtime, runtime
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.decision import Decision
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest
from legal_bases.review import (
    Accepted,
    Refusal,
    ReviewAnswer,
    check_answer,
    reviewed_decision,
)
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReviewTrigger, ReviewVerdict
from records.decisions import record_decision
from records.ledger import ENGINE, decisions_for, get_request, received_on, status_of
from records.models import DecisionRow, RequestRow
from records.replay_review import answer_releases
from records.reviews import (
    ReviewAnswerRow,
    answers_for,
    record_answer,
    reviewer_names,
    verify_code,
)
from records.totp import SecretSeal
from records.vocabulary import RequestState

IDENTITY_REFUSALS = {
    "unknown_reviewer": "that reviewer id is not enrolled (`disclosure reviewers list`)",
    "reviewer_not_on_record": "that reviewer's enrolment is not on the audit record as it must "
                              "be; an operator must look (`disclosure audit verify`)",
    "reviewer_removed": "that reviewer was removed and can no longer decide",
    "wrong_code": "the one-time code is not the current one for that reviewer; take the code "
                  "your authenticator app shows now",
    "code_reused": "that one-time code was used before; wait for the next one",
}
WAITING = (RequestState.AWAITING_REVIEW.value, RequestState.ESCALATED.value)


@dataclass(frozen=True)
class Review:
    """Where one request's review stands, read from the ledger."""

    request: RequestRow
    state: str
    parsed: DisclosureRequest
    engine: Decision
    engine_row: DecisionRow
    version: GroundVersion
    table: GroundTable
    answers: list[ReviewAnswerRow]
    reviewed: bool

    @property
    def seq(self) -> int:
        return len(self.answers)

    @property
    def proposal(self) -> tuple[Category, ...]:
        assert self.engine.proposal is not None
        return self.engine.proposal.released

    @property
    def first(self) -> ReviewAnswerRow | None:
        accepted = [a for a in self.answers if a.accepted]
        return accepted[-1] if accepted and accepted[-1].step == "first" else None

    @property
    def refusal(self) -> str | None:
        last = self.answers[-1] if self.answers else None
        return last.refusal_message if last is not None and not last.accepted else None


def engine_decision(rt: Runtime, request: RequestRow, row: DecisionRow,
                    table: GroundTable) -> tuple[DisclosureRequest, Decision]:
    """The engine's decision on a request, as a value, re-derived from the recorded table."""
    parsed = recorded.parse_submission(request, rt.ledger)
    if not isinstance(parsed, DisclosureRequest):
        raise ValueError(f"request {request.id} is not a valid request; nothing to review")
    decision = assess(parsed, Body(request.requester_body), table)
    if ReviewTrigger.SHIELDED_SUBJECT.value in {t["code"] for t in row.review_triggers}:
        decision = with_review_trigger(decision, ReviewTrigger.SHIELDED_SUBJECT)
    if decision.outcome is not Outcome.NEEDS_REVIEW or (
            decision.proposal is not None and decision.proposal.to_dict() != row.proposal):
        raise ValueError(f"the recorded decision {row.id} does not re-derive from its table")
    return parsed, decision


def load_review(rt: Runtime, request_id: str) -> Review | None:
    """Where the review of ``request_id`` stands, or None if it has no review to wait for."""
    with Session(rt.ledger, expire_on_commit=False) as session:
        request = get_request(session=session, request_id=request_id)
        status = status_of(session=session, request_id=request_id)
        decisions = decisions_for(session=session, request_id=request_id)
        answers = answers_for(session=session, request_id=request_id)
    # The engine's latest decision is what a review answers: its first, or a later one that
    # sent the request back to review (a subject shielded after a reviewer's decision).
    engine_rows = [d for d in decisions if d.decided_by == ENGINE]
    if request is None or status is None or not engine_rows:
        return None
    engine_row = engine_rows[-1]
    if engine_row.outcome != Outcome.NEEDS_REVIEW.value:
        return None
    table = deliver.table_of(rt, engine_row)
    parsed, engine = engine_decision(rt, request, engine_row, table)
    version = table.version(engine_row.ground_version or "")
    return Review(request, status.state, parsed, engine, engine_row, version, table, answers,
                  reviewed=any(d.sequence > engine_row.sequence for d in decisions))


def _case(rt: Runtime, review: Review) -> Case:
    partner = rt.partners.get(review.request.partner_id)
    return Case(request=review.parsed, request_id=review.request.id,
                partner=partner.name if partner else review.request.partner_id,
                body=review.request.requester_body,
                ground_title=review.table.grounds[review.version.ground_id].title,
                version=review.version, decision=review.engine,
                deadline=review.engine_row.deadline)


def _proposals(review: Review, decisions: list[DecisionRow] | None = None,
               ) -> list[tuple[datetime, list[str]]]:
    """The engine decisions that sent the request to review, as :func:`answer_releases` reads
    them (decided at, what the proposal releases); without ``decisions``, the one in force."""
    if decisions is None:
        return [(review.engine_row.decided_at, [c.value for c in review.proposal])]
    return [(d.decided_at, list((d.proposal or {}).get("released") or []))
            for d in decisions
            if d.decided_by == ENGINE and d.outcome == Outcome.NEEDS_REVIEW.value]


def _form(rt: Runtime, review: Review) -> tuple[type[Any], str]:
    first = review.first
    shown_first = None
    with Session(rt.ledger) as session:
        names = reviewer_names(session=session, ids=[first.reviewer_id] if first else [])
    releasable = review.proposal
    if first is not None:
        who = names.get(first.reviewer_id)
        # an approve releases the whole proposal, whatever was (not) selected with it
        released = list(answer_releases(review.answers, _proposals(review))[first.seq])
        shown_first = FirstReview(who.name if who else first.reviewer_id,
                                  first.role or "", first.verdict, released, first.motivation)
        releasable = tuple(Category(c) for c in released)
    description = describe(_case(rt, review), today=received_on(datetime.now(UTC)),
                           first=shown_first, refusal=review.refusal)
    return review_form(releasable), description


def _status_line(review: Review) -> str:
    if review.first is None:
        return "waiting for a reviewer" + (" (ESCALATED: past its deadline)"
                                           if review.state == RequestState.ESCALATED.value
                                           else "")
    return "waiting for a second reviewer (four eyes)"


def show_case(rt: Runtime, review: Review, status: str) -> None:
    """Publish the case page of the review run (:mod:`flows.review.case`) as it stands."""
    with Session(rt.ledger) as session:
        answers = answers_for(session=session, request_id=review.request.id)
        decisions = decisions_for(session=session, request_id=review.request.id)
        state = status_of(session=session, request_id=review.request.id)
        names = reviewer_names(session=session, ids=sorted({a.reviewer_id for a in answers}))
    releases = answer_releases(answers, _proposals(review, decisions))
    shown = []
    for a in answers:
        who = names.get(a.reviewer_id)
        categories = (list(releases[a.seq]) if a.accepted and a.step == "first"
                      else list(a.categories))
        shown.append(AnswerShown(
            seq=a.seq, answered_at=a.answered_at,
            reviewer=f"{who.name} [{a.reviewer_id}]" if who else a.reviewer_id,
            role=a.role or (who.role if who else ""), verdict=a.verdict,
            categories=categories, accepted=a.accepted, step=a.step,
            refusal=a.refusal_message or a.refusal_code))
    reviewed = [d for d in decisions if d.sequence > review.engine_row.sequence
                and d.decided_by != ENGINE]
    decision = None if not reviewed else DecisionShown(
        outcome=reviewed[-1].outcome, released=list(reviewed[-1].released),
        decided_by=reviewed[-1].decided_by, decided_at=reviewed[-1].decided_at,
        state=state.state if state else "unknown")
    markdown = case_markdown(_case(rt, review), today=received_on(datetime.now(UTC)),
                             status=status, answers=shown, decision=decision)
    try:
        publish_case(review.request.id, review.request.reference, markdown, status=status,
                     title=review_run_name(reference=review.request.reference,
                                           ground_id=review.engine_row.ground_id,
                                           deadline=review.engine_row.deadline),
                     run_id=str(flow_run.id) if flow_run.id else None)
    except Exception as exc:  # the case page is a view; the review goes on without it
        get_logger("review").warning("case_page_not_published", error=type(exc).__name__)


def given_answer(form: type[Any], key: str, run_id: str | None) -> Any | None:
    """The answer already given on the form ``key`` of this run (a resumed run's body runs
    again from the top), or None if it waits for one: read directly, so the run log does not
    say "Suspending flow run" once more for a form that was answered."""
    if not run_id:
        return None
    keyset = keyset_from_base_key(f"suspended-{key}")
    try:
        value = read_flow_run_input(keyset["response"], flow_run_id=UUID(run_id))
    except Exception:  # not readable now: suspending again returns it, as Prefect does
        return None
    if not value:
        return None
    answer = form(**cast(dict[str, Any], value))
    answer._metadata = RunInputMetadata(key=keyset["response"], sender=None,
                                        receiver=UUID(run_id))
    return answer


def submitted_at(answer: Any) -> datetime | None:
    """When the reviewer submitted ``answer``: the time the Prefect server stored the form's
    input (its own clock), not when this run got round to it — a run may sit in Resuming for
    a minute after a restart, longer than a one-time code lives. None if it cannot be read."""
    try:
        with get_client(sync_client=True) as client:
            found = client.filter_flow_run_input(
                flow_run_id=answer.metadata.receiver, key_prefix=answer.metadata.key, limit=1,
                exclude_keys=set())
    except Exception as exc:  # the check then falls back to the time the run took the answer
        get_logger("review").warning("answer_time_unknown", error=type(exc).__name__)
        return None
    created = found[0].created if found else None
    return created.astimezone(UTC) if created is not None else None


def take_answer(rt: Runtime, review: Review, answer: Any, *, flow_run_id: str | None,
                submitted: datetime | None = None) -> str:
    """Check one answer and record it (and, when it decides, the request's decision).

    The one-time code is checked as of ``submitted`` (when the reviewer submitted the form;
    default now), and the answer is recorded as given then. Returns what happened: ``refused``,
    ``first`` (a second reviewer must confirm) or ``decided``. Recording is keyed by the
    answer's number, so a run resumed twice takes it once.
    """
    now = datetime.now(UTC)
    # The code counts as of its submission; a submission time in the future (a clock gone
    # wrong) is not believed.
    code_time = submitted if submitted is not None and submitted <= now else now
    log = get_logger("review")
    seal = SecretSeal(rt.settings.pseudonym_key_bytes())
    with Session(rt.ledger, expire_on_commit=False) as session, session.begin():
        if len(answers_for(session=session, request_id=review.request.id)) > review.seq:
            return "already_taken"
        given = ReviewAnswer(str(answer.reviewer_id), ReviewVerdict(answer.decision),
                             # a form for one releasable category asks for none
                             tuple(Category(c) for c in getattr(answer, "categories", [])),
                             str(answer.motivation))
        who = verify_code(session=session, reviewer_id=given.reviewer_id,
                          code=str(answer.code), seal=seal, now=code_time)
        first = review.first
        first_answer = None if first is None else ReviewAnswer(
            first.reviewer_id, ReviewVerdict(first.verdict),
            tuple(Category(c) for c in first.categories), first.motivation)
        checked: Accepted | Refusal = (
            Refusal(who, IDENTITY_REFUSALS[who]) if isinstance(who, str)
            else check_answer(given, proposal=review.proposal, first=first_answer))
        row = ReviewAnswerRow(
            request_id=review.request.id, seq=review.seq, reviewer_id=given.reviewer_id,
            role=None if isinstance(who, str) else who.role, verdict=given.verdict.value,
            categories=sorted(c.value for c in given.categories), motivation=given.motivation,
            accepted=isinstance(checked, Accepted), answered_at=now, flow_run_id=flow_run_id)
        if isinstance(checked, Refusal):
            row.refusal_code, row.refusal_message = checked.code, checked.message
            record_answer(session=session, answer=row, submitted_at=code_time)
            log.info("review_answer_refused", reason=checked.code, seq=review.seq)
            return "refused"
        if checked.needs_second:
            row.step = "first"
            record_answer(session=session, answer=row, submitted_at=code_time)
            log.info("review_first_of_two", seq=review.seq)
            return "first"
        row.step = "second" if first is not None else "single"
        record_answer(session=session, answer=row, submitted_at=code_time)
        deciders = [first.reviewer_id] if first is not None else []
        decision = reviewed_decision(review.engine, review.version, checked.release)
        recorded = record_decision(
            session=session, request_id=review.request.id, decision=decision,
            table=review.table, decided_by="+".join([*deciders, given.reviewer_id]),
            decided_at=now, flow_run_id=flow_run_id, deadline=review.engine_row.deadline)
    events.emit(events.REVIEW_DECIDED, review.request.id, outcome=recorded.outcome,
                released=recorded.released, reviewers=recorded.decided_by)
    log.info("review_decided", outcome=recorded.outcome, seq=review.seq)
    return "decided"


@flow(name="review-request", persist_result=False,
      description="Hold one request for a legal reviewer's decision (a form on this run), "
                  "record it, then deliver what was decided.")
def review_request(request_id: str) -> str:
    """Wait for the reviewer(s) of ``request_id``, record the decision, deliver; returns the
    request's state."""
    run_id = str(flow_run.id) if flow_run.id else None
    structlog.contextvars.bind_contextvars(flow_run_id=run_id, request_id=request_id)
    rt = runtime()
    while True:
        review = load_review(rt, request_id)
        if review is None:
            get_logger("review").warning("nothing_to_review")
            return "nothing_to_review"
        if review.reviewed or review.state not in WAITING:
            if review.state == RequestState.DECIDED.value:
                delivery = deliver_reviewed(request_id, run_id)
                if delivery["to_review"]:
                    # a subject was shielded since the review: this run holds the next one
                    (again,) = review_runs.under_review(rt, [request_id])
                    review_runs.record_review_started(rt, again, run_id or "", flow_run_id=run_id)
                    continue
            with Session(rt.ledger) as session:
                status = status_of(session=session, request_id=request_id)
            state = status.state if status else "unknown"
            show_case(rt, review, f"decided; the request is {state}")
            starts.tag_run(run_id, step="decided")
            publish_review_queue(rt)
            return state
        form, description = _form(rt, review)
        key = f"review-{review.seq}"
        answer = given_answer(form, key, run_id)
        if answer is None:
            show_case(rt, review, _status_line(review))
            # the tags say where the review stands (also after an escalation by the sweep
            # that came before this run was on the record)
            starts.tag_run(run_id, step="second" if review.first else "first",
                           add=(ESCALATED_TAG,) if review.state == RequestState.ESCALATED.value
                           else ())
            answer = suspend_flow_run(
                wait_for_input=form.with_initial_data(description=description), key=key)
        take_answer(rt, review, answer, flow_run_id=run_id, submitted=submitted_at(answer))
        fault("review_taken")
