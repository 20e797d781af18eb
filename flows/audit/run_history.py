"""What Prefect holds about the flow runs that acted on one request, for ``disclosure timeline``.

The ledger's audit events about a request each name the flow run that recorded them:
``collect-dropoffs`` takes drop files in, the dispatcher ``process-requests`` decides and
delivers in batches, a ``review-request`` run holds one request for its reviewer, and the intake
API records with no flow run at all. :func:`read_prefect` reads those runs back through the
Prefect client: each run's state history, and its log lines — all of them for a run that works on
this request alone, only the lines that name the request for a batch run (a batch run logs
counts), with the number of lines the run has — and the review run Prefect holds for the request
by its idempotency key, whether the ledger names it or not. A Prefect that cannot be read is an
answer (:class:`PrefectView` ``reachable`` False), not an error. Every text read is masked for
nine-digit numbers as the log is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

from flows.audit.timeline_words import mask, short_id, utc_text
from flows.starts import review_run_key
from legal_bases import limits

_FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


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

