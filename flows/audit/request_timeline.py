"""The timeline of a request: one ordered history from the ledger and from Prefect, with every
gap and every disagreement between the two flagged (``disclosure timeline REQUEST_ID``).

The ledger is the record (DESIGN.md section 9). Its audit events about the request — received,
decided (the engine's assessment, a reviewer's decision), review run started, review answers,
delivered or failed, review overdue or escalated — each name the flow run that recorded them
(:mod:`records.timeline` reads them); what Prefect holds about those runs, their state history
and log lines, is read by :mod:`flows.audit.run_history`. :func:`build_timeline` puts both in
time order, each row worded by :mod:`flows.audit.timeline_words`, and checks the one against
the other; :mod:`flows.audit.timeline_render` lays the result out as text or JSON.

Flags (any flag: the command exits 1):

* ``run_unknown`` — the ledger names a flow run Prefect does not know (deleted, vacuumed, another
  server);
* ``outside_run`` — a ledger event timed outside every running interval of its flow run, by more
  than ``limits.TIMELINE_CLOCK_TOLERANCE_SECONDS``;
* ``run_failed_but_recorded`` — a run ended Failed, Crashed or Cancelled while the ledger holds
  its steps for this request;
* ``run_completed_step_missing`` — a run ended Completed without its step: a review run without
  the reviewer's decision, a run that recorded a releasing decision but neither a delivery nor a
  failed delivery;
* ``run_not_in_ledger`` — Prefect holds a review run of this request that the ledger never names;
* ``not_decided``, ``delivery_missing``, ``review_missing``, ``review_escalated``,
  ``review_overdue`` — an expected step missing in the ledger: a request still undecided
  ``limits.TIMELINE_DECIDED_WITHIN_SECONDS`` after receipt, a releasing decision never
  delivered, a review never started or never answered, a review past its deadline;
* ``ledger_mismatch`` — the ledger's rows (decisions, deliveries, answers, the request's state)
  and its audit events do not tell the same story;
* ``released_while_refused`` — the submission was recorded as invalid, yet a decision released
  data or sent it to review, or a delivery was made (what the release gate prevents);
* ``set_aside`` — a step set the request aside (poison that could not be recorded), with its
  reason; an operator must act;
* ``prefect_unreachable`` — Prefect could not be read: the timeline is the ledger's alone, and
  the cross-checks with Prefect were not made (``--ledger-only`` leaves Prefect out on purpose,
  without a flag).

Steps still under way (a review run waiting for its reviewer, a delivery by a run still running)
are notes, not flags. No subject number appears: the ledger's payloads carry counts,
categories, codes and digests, and every detail shown is masked for nine-digit numbers as the
log is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect.client.schemas.objects import StateType
from sqlalchemy import Engine
from sqlmodel import Session

from flows.audit.run_history import PrefectView, RunView, read_prefect
from flows.audit.timeline_words import (
    ReviewWords,
    describe_event,
    log_text,
    mask,
    short_id,
    utc_text,
)
from flows.pipeline.review_runs import REVIEW_RUN_STARTED
from flows.starts import REVIEW, review_run_key
from legal_bases import limits
from legal_bases.vocabulary import Outcome
from records.ledger import ENGINE, received_on
from records.models import AuditEvent, DecisionRow, DeliveryRow
from records.replay_review import answer_releases
from records.reviews import ReviewAnswerRow
from records.timeline import LedgerFacts, read_ledger
from records.vocabulary import EventKind

REVIEW_FLOW = REVIEW.split("/")[0]
_RELEASING = (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value)
_UNSUCCESSFUL = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


# -- what is shown ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """A gap or a disagreement, numbered in the order found (rows it is about carry the number)."""

    number: int
    code: str
    message: str
    flow_run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "code": self.code, "message": self.message,
                "flow_run_id": self.flow_run_id}


@dataclass
class Row:
    """One line of the timeline."""

    at: datetime
    source: str  # "ledger" or "prefect"
    what: str
    actor: str
    flow_run_id: str | None
    detail: str
    order: tuple[int, str, int]
    flags: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"time": utc_text(self.at), "source": self.source, "what": self.what,
                "actor": self.actor, "flow_run_id": self.flow_run_id, "detail": self.detail,
                "flags": self.flags}


@dataclass
class Timeline:
    """The request's history, its flags and notes."""

    facts: LedgerFacts
    prefect: PrefectView
    rows: list[Row]
    flags: list[Flag]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        request = self.facts.request
        return {
            "request": {"id": request.id, "partner_id": request.partner_id,
                        "requester_body": request.requester_body, "channel": request.channel,
                        "reference": mask(request.reference or ""),
                        "received_at": utc_text(request.received_at), "valid": request.valid,
                        "state": self.facts.state},
            "prefect": {"api_url": self.prefect.api_url, "consulted": self.prefect.consulted,
                        "reachable": self.prefect.reachable if self.prefect.consulted else None,
                        "note": self.prefect.note},
            "rows": [row.to_dict() for row in self.rows],
            "runs": [run.to_dict() for run in self.prefect.runs.values()],
            "notes": self.notes,
            "flags": [flag.to_dict() for flag in self.flags],
            "ok": not self.flags,
        }

# -- the flow runs the ledger names -----------------------------------------------------------

def review_keys(facts: LedgerFacts) -> list[str]:
    """The idempotency keys of the review runs of this request's engine decisions."""
    return [review_run_key(facts.request.id, d.sequence) for d in facts.engine_decisions()
            if d.outcome == Outcome.NEEDS_REVIEW.value] or [review_run_key(facts.request.id)]


def run_ids(facts: LedgerFacts) -> list[str]:
    """The flow runs the ledger names for this request, in the order first named."""
    found: dict[str, None] = {}
    for event in facts.events:
        if event.flow_run_id:
            found[event.flow_run_id] = None
        if event.kind == REVIEW_RUN_STARTED and event.payload.get("review_run_id"):
            found[str(event.payload["review_run_id"])] = None
    rows: list[DecisionRow | DeliveryRow | ReviewAnswerRow] = [
        *facts.decisions, *facts.deliveries, *facts.answers]
    for row in rows:
        if row.flow_run_id:
            found[row.flow_run_id] = None
    return list(found)


def timeline_of(engine: Engine, request_id: str, *, prefect_api_url: str | None,
                now: datetime | None = None) -> Timeline | None:
    """The timeline of ``request_id`` (None if the ledger holds no such request), checked
    against the Prefect API at ``prefect_api_url`` (None: the ledger alone)."""
    with Session(engine, expire_on_commit=False) as session:
        facts = read_ledger(session, request_id)
    if facts is None:
        return None
    if prefect_api_url is None:
        prefect = PrefectView(api_url=None, consulted=False, reachable=False,
                              note="not consulted (--ledger-only)")
    else:
        prefect = read_prefect(prefect_api_url, run_ids(facts), request_id, review_keys(facts))
    return build_timeline(facts, prefect, now=now or datetime.now(UTC))


# -- building the timeline --------------------------------------------------------------------

class _Builder:
    """Collects rows and flags; a flag marks the rows it is about."""

    def __init__(self, facts: LedgerFacts, prefect: PrefectView, now: datetime) -> None:
        self.facts, self.prefect, self.now = facts, prefect, now
        self.rows: dict[str, Row] = {}
        self.flags: list[Flag] = []
        self.notes: list[str] = []

    def flag(self, code: str, message: str, *, rows: Iterable[str] = (),
             flow_run_id: str | None = None) -> None:
        number = len(self.flags) + 1
        self.flags.append(Flag(number, code, mask(message), flow_run_id))
        for key in rows:
            if key in self.rows:
                self.rows[key].flags.append(number)

    def add(self, key: str, row: Row) -> None:
        self.rows[key] = row

    def timeline(self) -> Timeline:
        ordered = sorted(self.rows.values(), key=lambda r: (r.at, r.order))
        return Timeline(self.facts, self.prefect, ordered, self.flags, self.notes)


def build_timeline(facts: LedgerFacts, prefect: PrefectView, *, now: datetime) -> Timeline:
    """The request's history from both sources, in time order, with its flags and notes."""
    b = _Builder(facts, prefect, now)
    words = ReviewWords(roles=facts.reviewer_roles, releases=answer_releases(
        facts.answers, [(d.decided_at, (d.proposal or {}).get("released", []))
                        for d in facts.engine_decisions()
                        if d.outcome == Outcome.NEEDS_REVIEW.value]))
    for event in facts.events:
        what, detail = describe_event(event, words)
        b.add(f"e{event.seq}", Row(event.occurred_at.astimezone(UTC), "ledger", what,
                                   event.actor, event.flow_run_id, mask(detail),
                                   (0, "", event.seq)))
    for run in prefect.runs.values():
        _prefect_rows(b, run)
    _check_ledger(b)
    if prefect.consulted and not prefect.reachable:
        b.flag("prefect_unreachable", f"{prefect.note}; this is the ledger's timeline alone, "
                                      "not checked against Prefect")
    if prefect.checked:
        _check_runs(b)
    _check_expected_steps(b)
    return b.timeline()


def _prefect_rows(b: _Builder, run: RunView) -> None:
    for i, state in enumerate(run.states):
        kind = state.type.value if state.name.upper() != state.type.value else ""
        detail = ": ".join(part for part in (kind, state.message) if part)
        b.add(f"s{run.id}:{i}", Row(state.at, "prefect", f"run {state.name}", run.flow,
                                    run.id, detail, (1, run.id, i)))
    for i, line in enumerate(run.logs):
        b.add(f"l{run.id}:{i}", Row(line.at, "prefect", f"log {line.level}", line.logger,
                                    run.id, log_text(line.message), (2, run.id, i)))


def _events(b: _Builder, *kinds: str) -> list[AuditEvent]:
    return [e for e in b.facts.events if e.kind in kinds]


def _check_ledger(b: _Builder) -> None:
    """The ledger's rows and its audit events must tell the same story."""
    facts = b.facts
    recorded = {str(e.payload.get("decision_id")): e
                for e in _events(b, EventKind.DECISION_RECORDED.value)}
    for decision in facts.decisions:
        event = recorded.get(decision.id)
        if event is None:
            b.flag("ledger_mismatch", f"decision #{decision.sequence} ({decision.outcome}) has "
                                      "no decision_recorded event")
        elif event.flow_run_id != decision.flow_run_id:
            b.flag("ledger_mismatch", f"decision #{decision.sequence} names flow run "
                                      f"{short_id(decision.flow_run_id)}, its event "
                                      f"{short_id(event.flow_run_id)}", rows=[f"e{event.seq}"])
    known_decisions = {d.id for d in facts.decisions}
    for decision_id, event in recorded.items():
        if decision_id not in known_decisions:
            b.flag("ledger_mismatch", "a decision_recorded event names a decision the "
                                      "decisions table does not hold", rows=[f"e{event.seq}"])
    delivered = {str(e.payload.get("delivery_id"))
                 for e in _events(b, EventKind.DELIVERY_RECORDED.value)}
    for delivery in facts.deliveries:
        if delivery.id not in delivered:
            b.flag("ledger_mismatch", f"the delivery of {utc_text(delivery.delivered_at)} has "
                                      "no delivery_recorded event")
    answered = {e.payload.get("seq") for e in _events(b, "review_answer_recorded")}
    for answer in facts.answers:
        if answer.seq not in answered:
            b.flag("ledger_mismatch", f"review answer #{answer.seq} has no "
                                      "review_answer_recorded event")
    if not facts.request.valid:
        released = [f"e{e.seq}" for e in _events(b, EventKind.DECISION_RECORDED.value)
                    if e.payload.get("outcome") in (*_RELEASING, Outcome.NEEDS_REVIEW.value)]
        released += [f"e{e.seq}" for e in _events(b, EventKind.DELIVERY_RECORDED.value)]
        if released:
            b.flag("released_while_refused", "the submission was recorded as invalid (refused "
                                             "at intake), yet a decision released data or sent "
                                             "it to review, or a delivery was made",
                   rows=released)
    for event in _events(b, EventKind.REQUEST_SET_ASIDE.value):
        b.flag("set_aside", f"the {event.payload.get('step')} step set the request aside: "
                            f"{event.payload.get('reason')} ({event.payload.get('detail')}); "
                            "an operator must act", rows=[f"e{event.seq}"])
    told = [e.payload["state"] for e in facts.events if e.payload.get("state")]
    if told and facts.state is not None and told[-1] != facts.state:
        b.flag("ledger_mismatch", f"the work queue says {facts.state}, the audit chain "
                                  f"{told[-1]}")


def _check_runs(b: _Builder) -> None:
    """The ledger's flow runs against Prefect's."""
    facts, runs = b.facts, b.prefect.runs
    reviewer_decided = any(d.decided_by != ENGINE for d in facts.decisions)
    for run_id in run_ids(facts):
        run = runs[run_id]
        own = [e for e in facts.events if e.flow_run_id == run_id]
        naming = [e for e in _events(b, REVIEW_RUN_STARTED)
                  if e.payload.get("review_run_id") == run_id]
        if not run.known:
            kinds = ", ".join(dict.fromkeys(e.kind for e in own + naming))
            b.flag("run_unknown", f"Prefect does not know flow run {run_id} that the ledger "
                                  f"names ({kinds}): deleted, vacuumed, or on another server",
                   rows=[f"e{e.seq}" for e in own + naming], flow_run_id=run_id)
            continue
        for event in own:
            if not run.ran_at(event.occurred_at.astimezone(UTC), b.now):
                b.flag("outside_run", f"{event.kind} at {utc_text(event.occurred_at)} lies "
                                      f"outside the running time of its flow run {run.short} "
                                      f"({_intervals(run, b.now)})",
                       rows=[f"e{event.seq}"], flow_run_id=run_id)
        last = run.last
        if own and last is not None and last.type in _UNSUCCESSFUL:
            b.flag("run_failed_but_recorded",
                   f"flow run {run.short} ({run.flow}) ended {last.name}, yet the ledger holds "
                   f"its steps for this request: {', '.join(dict.fromkeys(e.kind for e in own))}",
                   rows=[f"e{e.seq}" for e in own] + [f"s{run_id}:{len(run.states) - 1}"],
                   flow_run_id=run_id)
        if last is None or last.type is not StateType.COMPLETED:
            continue
        is_review = run.flow == REVIEW_FLOW or bool(naming)
        if is_review and not reviewer_decided:
            b.flag("run_completed_step_missing",
                   f"review run {run.short} ended Completed, but the ledger holds no reviewer's "
                   "decision", rows=[f"s{run_id}:{len(run.states) - 1}"], flow_run_id=run_id)
        releasing = [e for e in own if e.kind == EventKind.DECISION_RECORDED.value
                     and e.payload.get("outcome") in _RELEASING]
        delivering = [e for e in own if e.kind in (EventKind.DELIVERY_RECORDED.value,
                                                   EventKind.DELIVERY_FAILED.value)]
        if releasing and not delivering:
            b.flag("run_completed_step_missing",
                   f"flow run {run.short} ({run.flow}) recorded a releasing decision and ended "
                   "Completed, but recorded neither a delivery nor a failed delivery",
                   rows=[f"e{e.seq}" for e in releasing] + [f"s{run_id}:{len(run.states) - 1}"],
                   flow_run_id=run_id)
    named = set(run_ids(facts))
    for run_id in b.prefect.review_runs:
        if run_id not in named:
            run = runs[run_id]
            state = run.last.name if run.last else "no state"
            b.flag("run_not_in_ledger", f"Prefect holds review run {run.short} of this request "
                                        f"({state}), which the ledger never names",
                   rows=[f"s{run_id}:{i}" for i in range(len(run.states))], flow_run_id=run_id)


def _intervals(run: RunView, now: datetime) -> str:
    spans = run.running(now)
    if not spans:
        return "it never ran"
    return "ran " + ", ".join(f"{utc_text(a)} – {utc_text(z)}" for a, z in spans)


def _check_expected_steps(b: _Builder) -> None:
    """The steps the ledger should hold after the ones it holds."""
    facts = b.facts
    if not facts.decisions:
        waited = b.now - facts.request.received_at.astimezone(UTC)
        if waited > timedelta(seconds=limits.TIMELINE_DECIDED_WITHIN_SECONDS):
            received = _events(b, EventKind.REQUEST_RECEIVED.value,
                               EventKind.REQUEST_INVALID.value)
            b.flag("not_decided", f"received {_duration(waited)} ago and still not decided: "
                                  "no dispatcher run has taken it",
                   rows=[f"e{e.seq}" for e in received])
        else:
            b.notes.append("not decided yet: the dispatcher's next sweep takes it")
        return
    _check_delivery(b, facts.decisions[-1])
    engine = facts.engine_decisions()[-1] if facts.engine_decisions() else facts.decisions[0]
    if engine.outcome == Outcome.NEEDS_REVIEW.value:
        _check_review(b, engine)


def _state_name(run: RunView) -> str:
    return run.last.name if run.last else "without a state"


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _run_state(b: _Builder, run_id: str | None) -> RunView | None:
    return b.prefect.runs.get(run_id) if run_id and b.prefect.checked else None


def _check_delivery(b: _Builder, decision: DecisionRow) -> None:
    if decision.outcome not in _RELEASING:
        return
    if any(d.decision_id == decision.id for d in b.facts.deliveries):
        return
    decided = [f"e{e.seq}" for e in _events(b, EventKind.DECISION_RECORDED.value)
               if e.payload.get("decision_id") == decision.id]
    failed = [e for e in _events(b, EventKind.DELIVERY_FAILED.value)
              if e.payload.get("decision_id") == decision.id]
    rows = decided + [f"e{e.seq}" for e in failed]
    if any(e.payload.get("permanent") for e in failed):
        b.flag("delivery_missing", f"decision #{decision.sequence} ({decision.outcome}) was "
                                   "never delivered: the destination refused it for good "
                                   f"({failed[-1].payload.get('error')}); an operator must act",
               rows=rows)
        return
    run = _run_state(b, decision.flow_run_id)
    if run is not None and run.known and not run.final:
        b.notes.append(f"delivery pending: flow run {run.short} that recorded decision "
                       f"#{decision.sequence} is still {_state_name(run)}")
        return
    tried = (f"; {len(failed)} failed attempt(s) ({failed[-1].payload.get('error')}), the next "
             "sweep tries again" if failed else "")
    b.flag("delivery_missing", f"decision #{decision.sequence} ({decision.outcome}) releases "
                               f"data but no delivery is recorded{tried}", rows=rows)


def _check_review(b: _Builder, engine: DecisionRow) -> None:
    """The review of ``engine``, the engine's latest decision (a later one sent the request back
    to review because a subject was shielded since)."""
    facts = b.facts
    reviewed = [d for d in facts.decisions if d.sequence > engine.sequence]
    started = [e for e in _events(b, REVIEW_RUN_STARTED)
               if e.payload.get("decision_id") in (None, engine.id)]
    engine_rows = [f"e{e.seq}" for e in _events(b, EventKind.DECISION_RECORDED.value)
                   if e.payload.get("decision_id") == engine.id]
    if not reviewed:
        review_runs = [str(e.payload.get("review_run_id")) for e in started]
        if not started and not facts.answers:
            b.flag("review_missing", "the engine sent the request to review, but no review run "
                                     "was started and no reviewer answered", rows=engine_rows)
        elif b.prefect.checked and review_runs:
            views = [b.prefect.runs[r] for r in review_runs if r in b.prefect.runs]
            ended = [v for v in views if v.known and v.last and v.last.type in _UNSUCCESSFUL]
            waiting = [v for v in views if v.known and not v.final]
            if ended and not waiting:
                runs = ", ".join(f"{v.short} ({_state_name(v)})" for v in ended)
                b.flag("review_missing", f"the review run(s) {runs} ended without a reviewer's "
                                         "decision",
                       rows=engine_rows + [f"e{e.seq}" for e in started]
                       + [f"s{v.id}:{len(v.states) - 1}" for v in ended])
            for view in waiting:
                b.notes.append(f"review pending: review run {view.short} is "
                               f"{_state_name(view)}, "
                               f"{len(facts.answers)} answer(s) so far")
        elif review_runs:
            b.notes.append(f"review pending: {len(facts.answers)} answer(s) so far")
    _check_deadline(b, engine, reviewed, engine_rows)


def _check_deadline(b: _Builder, engine: DecisionRow, reviewed: list[DecisionRow],
                    engine_rows: list[str]) -> None:
    escalated = _events(b, "review_escalated")
    for event in escalated:
        b.flag("review_escalated", f"the review ran past its deadline "
                                   f"{event.payload.get('deadline')} and was escalated at "
                                   f"{utc_text(event.occurred_at)}", rows=[f"e{event.seq}"])
    if escalated or engine.deadline is None:
        return
    deadline: date = engine.deadline
    if reviewed:
        day = received_on(reviewed[0].decided_at)
        if day > deadline:
            b.flag("review_overdue", f"the reviewer decided on {day.isoformat()}, after the "
                                     f"deadline {deadline.isoformat()}, and no escalation is "
                                     "recorded", rows=engine_rows)
    elif received_on(b.now) > deadline:
        b.flag("review_overdue", f"the review is past its deadline {deadline.isoformat()} and "
                                 "no escalation is recorded", rows=engine_rows)

