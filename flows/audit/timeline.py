"""``disclosure timeline REQUEST_ID``: one ordered history of a request, from the ledger and from
Prefect, with every gap and every disagreement between the two flagged.

The ledger is the record (DESIGN.md section 9). Its audit events about the request — received,
decided (the engine's assessment, a reviewer's decision), review run started, review answers,
delivered or failed, review overdue or escalated — each name the flow run that recorded them:
``collect-dropoffs`` takes drop files in, the dispatcher ``process-requests`` decides and
delivers in batches, a ``review-request`` run holds one request for its reviewer, and the intake
API records with no flow run at all. Those runs are read back through the Prefect client: each
run's state history, and its log lines — all of them for a run that works on this request alone,
only the lines that name the request for a batch run (a batch run logs counts), with the number
of lines the run has.

Flags (any flag: exit status 1):

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
* ``prefect_unreachable`` — Prefect could not be read: the timeline is the ledger's alone, and
  the cross-checks with Prefect were not made (``--ledger-only`` leaves Prefect out on purpose,
  without a flag).

Steps still under way (a review run waiting for its reviewer, a delivery by a run still running)
are notes, not flags. Prefect is found as the other commands find it: ``PREFECT_API_URL``, else
the local server ``disclosure up`` starts on ``DISCLOSURE_PREFECT_PORT``; this command never
starts a server. No subject number appears: the ledger's payloads carry counts, categories,
codes and digests, and every detail shown is masked for nine-digit numbers as the log is.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from cli.local_prefect import command_api_url
from flows.logs import mask_identifiers
from flows.pipeline.review_runs import REVIEW_RUN_STARTED
from flows.runtime import open_ledger
from flows.starts import REVIEW, review_run_key
from legal_bases import limits
from legal_bases.vocabulary import Outcome
from records.ledger import (
    ENGINE,
    audit_events_for,
    decisions_for,
    get_request,
    received_on,
    status_of,
)
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestRow
from records.reviews import ReviewAnswerRow, answers_for
from records.settings import load_settings
from records.vocabulary import EventKind

REVIEW_FLOW = REVIEW.split("/")[0]
_RELEASING = (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value)
_FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
_UNSUCCESSFUL = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
#: Keys of a structlog line that the timeline already shows elsewhere.
_LOG_NOISE = {"event", "timestamp", "level", "flow_run_id", "request_id", "logger"}


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


@dataclass(frozen=True)
class StateView:
    """One state of a flow run, as Prefect recorded it."""

    at: datetime
    type: StateType
    name: str
    message: str


@dataclass(frozen=True)
class LogView:
    """One log line of a flow run."""

    at: datetime
    level: str
    logger: str
    message: str


@dataclass
class RunView:
    """What Prefect holds about one flow run the ledger names (``known`` False: nothing)."""

    id: str
    known: bool
    flow: str = ""
    name: str = ""
    per_request: bool = False
    states: list[StateView] = field(default_factory=list)
    log_lines: int = 0
    log_capped: bool = False
    logs: list[LogView] = field(default_factory=list)

    @property
    def short(self) -> str:
        return short_id(self.id)

    @property
    def last(self) -> StateView | None:
        return self.states[-1] if self.states else None

    @property
    def final(self) -> bool:
        return self.last is not None and self.last.type in _FINAL

    def running(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The intervals the run was in a Running state: each to the next state (or now)."""
        out = []
        for i, state in enumerate(self.states):
            if state.type is StateType.RUNNING:
                end = self.states[i + 1].at if i + 1 < len(self.states) else now
                out.append((state.at, end))
        return out

    def ran_at(self, at: datetime, now: datetime) -> bool:
        slack = timedelta(seconds=limits.TIMELINE_CLOCK_TOLERANCE_SECONDS)
        return any(start - slack <= at <= end + slack for start, end in self.running(now))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "known": self.known, "flow": self.flow or None,
            "name": self.name or None, "per_request": self.per_request,
            "final_state": self.last.name if self.final and self.last else None,
            "states": [{"time": utc_text(s.at), "type": s.type.value, "name": s.name,
                        "message": s.message} for s in self.states],
            "log_lines": self.log_lines, "log_lines_capped": self.log_capped,
            "log_lines_shown": len(self.logs),
        }


@dataclass
class PrefectView:
    """What was read from Prefect; ``runs`` by flow run id, ``review_runs`` found by key."""

    api_url: str | None
    consulted: bool
    reachable: bool
    note: str | None = None
    runs: dict[str, RunView] = field(default_factory=dict)
    review_runs: list[str] = field(default_factory=list)

    @property
    def checked(self) -> bool:
        """Whether the ledger could be checked against Prefect."""
        return self.consulted and self.reachable


@dataclass(frozen=True)
class LedgerFacts:
    """Everything the ledger holds about one request."""

    request: RequestRow
    state: str | None
    events: list[AuditEvent]
    decisions: list[DecisionRow]
    answers: list[ReviewAnswerRow]
    deliveries: list[DeliveryRow]

    def engine_decisions(self) -> list[DecisionRow]:
        """The engine's own decisions, first to last."""
        return [d for d in self.decisions if d.decided_by == ENGINE]

    def review_keys(self) -> list[str]:
        """The idempotency keys of the review runs of this request's engine decisions."""
        return [review_run_key(self.request.id, d.sequence) for d in self.engine_decisions()
                if d.outcome == Outcome.NEEDS_REVIEW.value] or [review_run_key(self.request.id)]

    def run_ids(self) -> list[str]:
        """The flow runs the ledger names for this request, in the order first named."""
        found: dict[str, None] = {}
        for event in self.events:
            if event.flow_run_id:
                found[event.flow_run_id] = None
            if event.kind == REVIEW_RUN_STARTED and event.payload.get("review_run_id"):
                found[str(event.payload["review_run_id"])] = None
        rows: list[DecisionRow | DeliveryRow | ReviewAnswerRow] = [
            *self.decisions, *self.deliveries, *self.answers]
        for row in rows:
            if row.flow_run_id:
                found[row.flow_run_id] = None
        return list(found)


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


def utc_text(at: datetime) -> str:
    """A time as the timeline shows it: UTC, ISO 8601, milliseconds, ``Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_id(run_id: str | None) -> str:
    return run_id[:8] if run_id else "—"


def mask(text: str) -> str:
    """``text`` with every BSN-shaped number masked (the log's own last line of defence)."""
    return str(mask_identifiers(None, "", {"text": text})["text"])


# -- reading the ledger -----------------------------------------------------------------------

def read_ledger(session: Session, request_id: str) -> LedgerFacts | None:
    """The ledger's facts about ``request_id``, or None if it holds no such request."""
    request = get_request(session=session, request_id=request_id)
    if request is None:
        return None
    status = status_of(session=session, request_id=request_id)
    deliveries = list(session.exec(
        select(DeliveryRow).where(col(DeliveryRow.request_id) == request_id)
        .order_by(col(DeliveryRow.delivered_at))))
    return LedgerFacts(
        request=request, state=status.state if status else None,
        events=audit_events_for(session=session, request_id=request_id),
        decisions=decisions_for(session=session, request_id=request_id),
        answers=answers_for(session=session, request_id=request_id), deliveries=deliveries)


# -- reading Prefect --------------------------------------------------------------------------

def read_prefect(api_url: str, run_ids: Sequence[str], request_id: str,
                 review_keys: Sequence[str] = ()) -> PrefectView:
    """Read the runs from the Prefect API at ``api_url``; unreachable is an answer, not an error.

    Besides the runs the ledger names, the review run Prefect holds for the request (found by
    its idempotency key) is read, so a review run the ledger never recorded shows up too.
    """
    timeout = httpx.Timeout(limits.TIMELINE_PREFECT_TIMEOUT_SECONDS)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}), \
                get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client:
            problem = client.api_healthcheck()
            if problem is not None:
                return _unreachable(api_url, problem)
            flows: dict[UUID, str] = {}
            runs = {run_id: _read_run(client, run_id, request_id, flows) for run_id in run_ids}
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(
                    any_=list(review_keys) or [review_run_key(request_id)])))
            review_runs = [str(run.id) for run in found]
            for run_id in review_runs:
                if run_id not in runs:
                    runs[run_id] = _read_run(client, run_id, request_id, flows)
    except (httpx.HTTPError, OSError, RuntimeError, ValueError) as exc:
        # the client raises httpx errors (and its own subclasses of them) for a server that
        # stops answering half-way; the timeline falls back to the ledger alone
        return _unreachable(api_url, exc)
    return PrefectView(api_url=api_url, consulted=True, reachable=True, runs=runs,
                       review_runs=review_runs)


def _unreachable(api_url: str, problem: BaseException) -> PrefectView:
    reason = mask(str(problem).splitlines()[0] if str(problem) else "")
    return PrefectView(api_url=api_url, consulted=True, reachable=False,
                       note=f"Prefect at {api_url} could not be read ({type(problem).__name__}"
                            f"{': ' + reason if reason else ''})")


def _read_run(client: SyncPrefectClient, run_id: str, request_id: str,
              flows: dict[UUID, str]) -> RunView:
    try:
        uid = UUID(run_id)
    except ValueError:
        return RunView(run_id, known=False)
    try:
        run = client.read_flow_run(uid)
    except ObjectNotFound:
        return RunView(run_id, known=False)
    if run.flow_id not in flows:
        flows[run.flow_id] = client.read_flow(run.flow_id).name
    states = sorted((StateView(s.timestamp.astimezone(UTC), s.type, s.name or s.type.value,
                               mask(s.message or "")) for s in client.read_flow_run_states(uid)),
                    key=lambda s: s.at)
    view = RunView(run_id, known=True, flow=flows[run.flow_id], name=run.name,
                   per_request=run.parameters.get("request_id") == request_id, states=states)
    _read_logs(client, uid, request_id, view)
    return view


def _read_logs(client: SyncPrefectClient, uid: UUID, request_id: str, view: RunView) -> None:
    """Count the run's log lines; keep those about the request (all, for a per-request run)."""
    page_size = limits.TIMELINE_LOG_PAGE
    while view.log_lines < limits.TIMELINE_MAX_LOG_LINES:
        page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uid])),
                                limit=page_size, offset=view.log_lines, sort=LogSort.TIMESTAMP_ASC)
        view.log_lines += len(page)
        view.logs += [LogView(line.timestamp.astimezone(UTC), logging.getLevelName(line.level),
                              line.name, mask(line.message)) for line in page
                      if view.per_request or request_id in line.message]
        if len(page) < page_size:
            return
    view.log_capped = True


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
    for event in facts.events:
        what, detail = describe_event(event)
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
    for run_id in facts.run_ids():
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
    named = set(facts.run_ids())
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


# -- describing ledger events and log lines -------------------------------------------------

def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def describe_event(event: AuditEvent) -> tuple[str, str]:
    """What an audit event says, as (what, detail): ids, codes, categories and counts only."""
    p = event.payload
    kind = event.kind
    if kind == EventKind.REQUEST_RECEIVED.value:
        by_type = ", ".join(f"{k} {v}" for k, v in sorted((p.get("subjects_by_type") or {})
                                                           .items()))
        due = f"; due {p['due_date']}" if p.get("due_date") else ""
        return "received", (f"valid, via {p.get('channel')}; {p.get('legal_basis')} for "
                            f"{p.get('purpose')}, reference date {p.get('reference_date')}; "
                            f"{p.get('subject_count')} subject(s) ({by_type}); asks "
                            f"{_list(p.get('categories'))}{due}")
    if kind == EventKind.REQUEST_INVALID.value:
        return "received (invalid)", (f"via {p.get('channel')}; {p.get('error_count')} "
                                      f"error(s): {_list(p.get('error_codes'))}")
    if kind == EventKind.DECISION_RECORDED.value:
        return _describe_decision(p)
    if kind == EventKind.DELIVERY_RECORDED.value:
        receipt = str(p.get("receipt_sha256") or "")[:12]
        return "delivered", (f"to {p.get('destination')} ({p.get('status')}); "
                             f"{p.get('records', '?')} record(s), {p.get('not_found', '?')} not "
                             f"found; receipt sha256 {receipt or '—'}")
    if kind == EventKind.DELIVERY_FAILED.value:
        how = ("refused for good" if p.get("permanent")
               else "transient, the next sweep tries again")
        return "delivery failed", f"{p.get('error')}: {how}"
    if kind == REVIEW_RUN_STARTED:
        return "review run started", f"review run {short_id(str(p.get('review_run_id')))}"
    if kind == "review_answer_recorded":
        verdict = (f"accepted ({p.get('step')})" if p.get("accepted")
                   else f"refused: {p.get('refusal_code')}")
        return "review answer", (f"#{p.get('seq')} {p.get('verdict')} by {p.get('reviewer_id')}"
                                 f" ({p.get('role') or 'no role'}), categories "
                                 f"{_list(p.get('categories'))}; {verdict}")
    if kind == EventKind.REQUEST_SET_ASIDE.value:
        return "set aside", (f"at {p.get('step')}: {p.get('reason')} ({p.get('detail')}); an "
                             "operator must act")
    if kind in ("review_overdue", "review_escalated"):
        return kind.replace("_", " "), f"deadline {p.get('deadline')}"
    return kind, ", ".join(f"{k}={_compact(v)}" for k, v in sorted(p.items()))


def _describe_decision(p: dict[str, Any]) -> tuple[str, str]:
    outcome = p.get("outcome")
    ground = p.get("ground_version") or p.get("ground_id") or "no ground"
    deadline = f"; deadline {p['deadline']}" if p.get("deadline") else ""
    if outcome == Outcome.NEEDS_REVIEW.value:
        proposal = p.get("proposal") or {}
        return "assessed: needs review", (
            f"{ground}; triggers {_list(p.get('review_triggers'))}; the proposal releases "
            f"{_list(proposal.get('released'))}{deadline}")
    engine = p.get("decided_by", ENGINE) == ENGINE
    what = "decided" if engine else "decided (review)"
    by = "engine" if engine else f"reviewer(s) {p.get('decided_by')}"
    reasons = f"; reasons {_list(p.get('reason_codes'))}" if p.get("reason_codes") else ""
    withheld = f"; withheld {_list(p.get('withheld'))}" if p.get("withheld") else ""
    return what, (f"{by}: {outcome} under {ground}; released {_list(p.get('released'))}"
                  f"{withheld}{reasons}{deadline}")


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def log_text(message: str) -> str:
    """A log line, shortened: a structlog JSON line as ``event key=value ...``."""
    try:
        data = json.loads(message)
    except ValueError:
        return message
    if not isinstance(data, dict) or "event" not in data:
        return message
    rest = [f"{k}={_compact(v)}" for k, v in sorted(data.items()) if k not in _LOG_NOISE]
    return " ".join([str(data["event"]), *rest])


# -- text -------------------------------------------------------------------------------------

def render_text(timeline: Timeline) -> str:
    """The timeline as a person reads it: a header, the table, the runs, notes and flags."""
    facts, prefect = timeline.facts, timeline.prefect
    request = facts.request
    lines = [f"Timeline of request {request.id}",
             f"  partner {request.partner_id} ({request.requester_body}), reference "
             f"{mask(request.reference or '—')}, via {request.channel}; received "
             f"{utc_text(request.received_at)}; now {facts.state or 'unknown'}"]
    if not prefect.consulted:
        lines.append("  Prefect: not consulted (--ledger-only): the ledger's timeline alone")
    elif not prefect.reachable:
        lines.append(f"  Prefect: NOT REACHED — {prefect.note}; the ledger's timeline alone")
    else:
        lines.append(f"  Prefect: {prefect.api_url}, {len(prefect.runs)} flow run(s) read")
    table = [("flag", "time (UTC)", "source", "what", "actor", "run", "detail")]
    width = limits.TIMELINE_DETAIL_CHARS
    for row in timeline.rows:
        detail = row.detail if len(row.detail) <= width else row.detail[:width - 1] + "…"
        table.append(("!" + ",".join(map(str, row.flags)) if row.flags else "",
                      utc_text(row.at), row.source, row.what, row.actor,
                      short_id(row.flow_run_id), detail))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines.append("")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True))
              + "  " + r[-1] for r in table]
    if prefect.runs:
        lines += ["", "Flow runs:"]
        for run in prefect.runs.values():
            lines.append("  " + _run_line(run))
    if timeline.notes:
        lines += ["", "Notes:"] + [f"  - {note}" for note in timeline.notes]
    lines.append("")
    if timeline.flags:
        lines.append(f"FLAGS ({len(timeline.flags)}):")
        lines += [f"  [!{f.number}] {f.code}: {f.message}" for f in timeline.flags]
    else:
        lines.append("No flags: " + ("the ledger and Prefect agree, and no expected step is "
                                     "missing." if prefect.checked
                                     else "no expected step is missing in the ledger."))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _run_line(run: RunView) -> str:
    if not run.known:
        return f"{run.id}  UNKNOWN to Prefect"
    state = run.last.name if run.last else "no state"
    shown = ("all shown (the run works on this request alone)" if run.per_request
             else f"{len(run.logs)} mention this request")
    capped = f" (read the first {limits.TIMELINE_MAX_LOG_LINES})" if run.log_capped else ""
    return (f"{run.id}  {run.flow} '{run.name}'  {state}; {run.log_lines} log line(s){capped}, "
            f"{shown}")


# -- the command ------------------------------------------------------------------------------

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
        prefect = read_prefect(prefect_api_url, facts.run_ids(), request_id,
                               facts.review_keys())
    return build_timeline(facts, prefect, now=now or datetime.now(UTC))


def cmd_timeline(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        found = timeline_of(engine, args.request_id, prefect_api_url=None if args.ledger_only
                            else command_api_url(settings.prefect_port,
                                                 settings.data_dir / "prefect"))
    finally:
        engine.dispose()
    if found is None:
        from cli.arguments import UsageError  # noqa: PLC0415 - cli.main imports this module

        raise UsageError(f"no request {args.request_id!r} in the ledger "
                         "(`disclosure status` lists the requests)")
    if args.json:
        sys.stdout.write(json.dumps(found.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_text(found))
    return 1 if found.flags else 0


def register(sub: Any) -> None:
    """Add ``timeline`` to the ``disclosure`` command line."""
    parser = sub.add_parser(
        "timeline", help="one request's history from the ledger and Prefect, gaps flagged",
        description="One ordered history of a request: the ledger's audit events joined with "
                    "the state history and log lines of the Prefect flow runs that acted on "
                    "it; every gap or disagreement is flagged. Exit 0: no flags; 1: flags "
                    "(Prefect unreachable is one); 2: no such request.")
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the request's id (a uuid)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--ledger-only", action="store_true",
                        help="leave Prefect out: the ledger's timeline and its own checks only")
    parser.set_defaults(handler=cmd_timeline)
