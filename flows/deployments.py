"""The deployments of the engine and ``serve``.

``disclosure serve`` (and ``disclosure up``) serve the deployments from one process: the four of
the pipeline, the nightly verification of the record, and the two an auditor starts from the UI
(replay, transparency report); a scaled-out installation deploys the same flows from
``prefect.yaml`` to a work pool instead. Both use the names in :mod:`flows.starts`.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from flows import events
from flows.audit.replay import replay_decisions
from flows.audit.report import transparency_report
from flows.audit.verification import verify_record_flow
from flows.pipeline.dispatcher import process_requests
from flows.pipeline.dropoff import collect_dropoffs
from flows.review.flow import review_request
from flows.review.notify import notify_escalation
from flows.starts import DEPLOYMENT, DISPATCHER, nudge_dispatcher
from legal_bases import limits


def runner_deployments() -> list[Any]:
    """The deployments as ``serve`` runs them, with the sweepers' schedules."""
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
