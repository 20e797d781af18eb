"""The deployments of the pipeline, how the engine starts runs of them, and ``serve``.

``disclosure serve`` (and ``disclosure up``) serve the deployments from one process: the four of
the pipeline, the nightly verification of the record, and the two an auditor starts from the UI
(replay, transparency report); a
scaled-out installation deploys the same flows from ``prefect.yaml`` to a work pool instead.
Both use the names below.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.events import DeploymentEventTrigger
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron

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


def nudge_dispatcher(key: str | None = None) -> str | None:
    """Ask for a dispatcher run now; nudges within a few seconds share one run (or all with
    the same ``key``).

    If Prefect cannot be reached nothing is lost: the requests are on the record and the
    dispatcher's schedule picks them up. Returns the run id, or None.
    """
    window = int(time.time() // limits.NUDGE_WINDOW_SECONDS)
    try:
        run = run_deployment(DISPATCHER, timeout=0, as_subflow=False,
                             idempotency_key=key or f"nudge-{window}")
    except ObjectNotFound:
        get_logger("dispatcher").warning("dispatcher_not_deployed", deployment=DISPATCHER)
        return None
    except Exception as exc:  # any failure to reach Prefect is survivable here
        get_logger("dispatcher").warning("dispatcher_nudge_failed", error=type(exc).__name__)
        return None
    return str(getattr(run, "id", "")) or None


def review_run_key(request_id: str, sequence: int = 1) -> str:
    """The idempotency key of the review run of a request's engine decision ``sequence``: one
    review run per decision sent to review (the first, or a later one that sent the request
    back to review because a subject was shielded since)."""
    return f"review-{request_id}" if sequence == 1 else f"review-{request_id}-{sequence}"


def start_review(request_id: str, sequence: int = 1) -> str | None:
    """Start the review run of one request's engine decision ``sequence`` (once: the
    idempotency key); returns the run's id, or None if the review deployment is not there."""
    try:
        run = run_deployment(REVIEW, parameters={"request_id": request_id}, timeout=0,
                             as_subflow=False,
                             idempotency_key=review_run_key(request_id, sequence),
                             tags=["review"])
    except ObjectNotFound:
        get_logger("review").warning("review_not_deployed", request_id=request_id)
        return None
    events.emit(events.REVIEW_NEEDED, request_id)
    return str(getattr(run, "id", "")) or None


def runner_deployments() -> list[Any]:
    """The deployments as ``serve`` runs them, with the sweepers' schedules."""
    from flows.dispatcher import process_requests  # noqa: PLC0415 - the flows import this module
    from flows.dropoff import collect_dropoffs  # noqa: PLC0415
    from flows.notify import notify_escalation  # noqa: PLC0415
    from flows.replay import replay_decisions  # noqa: PLC0415
    from flows.report import transparency_report  # noqa: PLC0415
    from flows.review import review_request  # noqa: PLC0415
    from flows.verification import verify_record_flow  # noqa: PLC0415

    crashed = DeploymentEventTrigger(
        name="disclosure-dispatcher-crashed", expect={"prefect.flow-run.Crashed"},
        match_related={"prefect.resource.role": "flow",
                       "prefect.resource.name": "process-requests"})
    escalated = DeploymentEventTrigger(
        name="disclosure-review-escalated", expect={events.REVIEW_ESCALATED},
        match={"prefect.resource.id": "disclosure.request.*"},
        parameters={"request_id": "{{ event.payload.request_id }}"})
    return [
        process_requests.to_deployment(
            name=DEPLOYMENT, interval=timedelta(seconds=limits.DISPATCH_SWEEP_SECONDS),
            tags=["disclosure"], triggers=[crashed]),
        collect_dropoffs.to_deployment(
            name=DEPLOYMENT, interval=timedelta(seconds=limits.DROPOFF_SWEEP_SECONDS),
            tags=["disclosure"]),
        review_request.to_deployment(name=DEPLOYMENT, tags=["disclosure", "review"]),
        notify_escalation.to_deployment(name=DEPLOYMENT, tags=["disclosure"],
                                        triggers=[escalated]),
        replay_decisions.to_deployment(name=DEPLOYMENT, tags=["disclosure", "audit"]),
        transparency_report.to_deployment(name=DEPLOYMENT, tags=["disclosure", "audit"]),
        verify_record_flow.to_deployment(
            name=DEPLOYMENT, tags=["disclosure", "audit"],
            schedule=Cron(limits.VERIFY_CRON, timezone="Europe/Amsterdam")),
    ]


def serve_all(limit: int = 4) -> None:
    """Serve the pipeline's deployments until interrupted (each run in its own process).

    A dispatcher run is asked for as soon as the deployments exist, so that what a crash left
    (claims of dead processes, staged files, requests half-way) is taken up at once, not at the
    next sweep; and a dispatcher run that crashes starts the next (its trigger).
    """
    threading.Thread(target=_nudge_when_deployed, name="start-nudge", daemon=True).start()
    serve(*runner_deployments(), limit=limit, print_starting_message=True)


def _nudge_when_deployed(timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with get_client(sync_client=True) as client:
                client.read_deployment_by_name(DISPATCHER)
        except Exception:  # not there yet, or the server is starting
            time.sleep(1)
            continue
        nudge_dispatcher(key=f"start-{uuid.uuid4()}")
        return
