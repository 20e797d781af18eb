"""How the engine starts runs of its deployments: their names, the dispatcher's nudge, a review run.

The flows call these by deployment name (``run_deployment``), so this module imports no flow:
``flows.deployments`` (which serves the flows) imports it, never the other way round.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows import events
from flows.logs import get_logger
from legal_bases import limits

DEPLOYMENT = "disclosure"
DISPATCHER = f"process-requests/{DEPLOYMENT}"
REVIEW = f"review-request/{DEPLOYMENT}"
DROPOFF = f"collect-dropoffs/{DEPLOYMENT}"
NOTIFY = f"notify-escalation/{DEPLOYMENT}"
REPLAY = f"replay-decisions/{DEPLOYMENT}"
REPORT = f"transparency-report/{DEPLOYMENT}"
VERIFY = f"verify-record/{DEPLOYMENT}"


def _nudge(deployment: str, *, what: str, prefix: str, key: str | None) -> str | None:
    """Ask for a run of ``deployment`` now; nudges within NUDGE_WINDOW_SECONDS share one run
    (``<prefix>-<window>``), or all with the same ``key``. None if Prefect cannot be reached or
    the deployment is not there (logged as ``<what>_not_deployed`` / ``<what>_nudge_failed``)."""
    window = int(time.time() // limits.NUDGE_WINDOW_SECONDS)
    try:
        run = run_deployment(deployment, timeout=0, as_subflow=False,
                             idempotency_key=key or f"{prefix}-{window}")
    except ObjectNotFound:
        get_logger(what).warning(f"{what}_not_deployed", deployment=deployment)
        return None
    except Exception as exc:  # any failure to reach Prefect is survivable here
        get_logger(what).warning(f"{what}_nudge_failed", error=type(exc).__name__)
        return None
    return str(getattr(run, "id", "")) or None


def nudge_dispatcher(key: str | None = None) -> str | None:
    """Ask for a dispatcher run now; nudges within a few seconds share one run (or all with
    the same ``key``).

    If Prefect cannot be reached nothing is lost: the requests are on the record and the
    dispatcher's schedule picks them up. Returns the run id, or None.
    """
    return _nudge(DISPATCHER, what="dispatcher", prefix="nudge", key=key)


def review_run_key(request_id: str, sequence: int = 1) -> str:
    """The idempotency key of the review run of a request's engine decision ``sequence``: one
    review run per decision sent to review (the first, or a later one that sent the request
    back to review because a subject was shielded since)."""
    return f"review-{request_id}" if sequence == 1 else f"review-{request_id}-{sequence}"


def start_review(request_id: str, sequence: int = 1, *, name: str | None = None,
                 tags: list[str] | None = None) -> str | None:
    """Start the review run of one request's engine decision ``sequence`` (once: the
    idempotency key) under ``name`` and ``tags`` (:mod:`flows.review.labels`); returns the
    run's id, or None if the review deployment is not there."""
    try:
        run = run_deployment(REVIEW, parameters={"request_id": request_id}, timeout=0,
                             as_subflow=False, flow_run_name=name,
                             idempotency_key=review_run_key(request_id, sequence),
                             tags=tags or ["review"])
    except ObjectNotFound:
        get_logger("review").warning("review_not_deployed", request_id=request_id)
        return None
    events.emit(events.REVIEW_NEEDED, request_id)
    return str(getattr(run, "id", "")) or None


def tag_run(run_id: str | None, *, step: str | None = None, add: tuple[str, ...] = ()) -> None:
    """Set the review run's ``step:`` tag (and add others) so the Runs list filters on it."""
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            tags = [t for t in run.tags if step is None or not t.startswith("step:")]
            wanted = sorted({*tags, *add, *([f"step:{step}"] if step else [])})
            if wanted != sorted(run.tags):
                client.update_flow_run(UUID(run_id), tags=wanted)
    except Exception as exc:  # tags help finding a run; the review goes on without them
        get_logger("review").warning("run_tags_not_updated", error=type(exc).__name__)


def nudge_dropoffs(key: str | None = None) -> str | None:
    """Ask for a drop-off run now, as :func:`nudge_dispatcher` asks for a dispatcher run: nudges
    within a few seconds share one run (or all with the same ``key``); None if Prefect cannot
    be reached or the deployment is not there (the files wait, and its schedule takes them)."""
    return _nudge(DROPOFF, what="dropoff", prefix="dropoffs", key=key)


#: The states of a run that is still to do its work: due (scheduled, late), pending, running.
UNDER_WAY = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


def run_under_way(*deployments: str,
                  fresh_seconds: float = limits.WATCH_RUN_FRESH_SECONDS) -> bool:
    """Whether a run of the flows of ``deployments`` is on its way: due by now (scheduled or
    late), pending or running, and due at most ``fresh_seconds`` ago (an older one may hang on a
    host that died, and does not count). A run planned for later does not count either.
    Raises if Prefect cannot be asked."""
    now = datetime.now(UTC)
    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(
                any_=sorted({name.partition("/")[0] for name in deployments}))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=UNDER_WAY)),
                expected_start_time=FlowRunFilterExpectedStartTime(
                    after_=now - timedelta(seconds=fresh_seconds),
                    before_=now + timedelta(seconds=limits.WATCH_SECONDS))),
            limit=1)
    return bool(found)
