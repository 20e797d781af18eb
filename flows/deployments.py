"""The deployments of the engine and ``serve``.

``disclosure serve`` (and ``disclosure up``) serve the deployments from one process: the four of
the pipeline, the nightly verification of the record, and the two an auditor starts from the UI
(replay, transparency report); a scaled-out installation deploys the same flows from
``prefect.yaml`` to a work pool instead. Both use the names in :mod:`flows.starts`.

The sweepers' schedules are a slow safety net (DISPATCH_SWEEP_SECONDS, DROPOFF_SWEEP_SECONDS,
counted from SWEEP_ANCHOR): ``serve`` also runs the watch (:mod:`flows.watch`), which starts them
within seconds when there is work, and not otherwise.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from prefect import serve
from prefect.client.orchestration import get_client
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Interval, Schedule

from flows import events
from flows.audit.replay import replay_decisions
from flows.audit.report import transparency_report
from flows.audit.verification import verify_record_flow
from flows.pipeline.dispatcher import process_requests
from flows.pipeline.dropoff import collect_dropoffs
from flows.retention import apply_retention
from flows.review.flow import review_request
from flows.review.notify import notify_escalation
from flows.starts import DEPLOYMENT, DISPATCHER, nudge_dispatcher
from flows.watch import watch_forever
from legal_bases import limits


def sweep_schedule(seconds: int) -> Schedule:
    """A sweeper's safety-net schedule: every ``seconds``, counted from SWEEP_ANCHOR."""
    return Interval(timedelta(seconds=seconds),
                    anchor_date=datetime.fromisoformat(limits.SWEEP_ANCHOR))


def runner_deployments() -> list[Any]:
    """The deployments as ``serve`` runs them, with the sweepers' safety-net schedules."""
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
            name=DEPLOYMENT, schedule=sweep_schedule(limits.DISPATCH_SWEEP_SECONDS),
            tags=["disclosure"], triggers=[crashed]),
        collect_dropoffs.to_deployment(
            name=DEPLOYMENT, schedule=sweep_schedule(limits.DROPOFF_SWEEP_SECONDS),
            tags=["disclosure"]),
        review_request.to_deployment(name=DEPLOYMENT, tags=["disclosure", "review"]),
        notify_escalation.to_deployment(name=DEPLOYMENT, tags=["disclosure"],
                                        triggers=[escalated]),
        replay_decisions.to_deployment(name=DEPLOYMENT, tags=["disclosure", "audit"]),
        transparency_report.to_deployment(name=DEPLOYMENT, tags=["disclosure", "audit"]),
        verify_record_flow.to_deployment(
            name=DEPLOYMENT, tags=["disclosure", "audit"],
            schedule=Cron(limits.VERIFY_CRON, timezone="Europe/Amsterdam")),
        apply_retention.to_deployment(
            name=DEPLOYMENT, tags=["disclosure", "retention"],
            schedule=Cron(limits.RETENTION_CRON, timezone="Europe/Amsterdam")),
    ]


def serve_all(limit: int = 4) -> None:
    """Serve the pipeline's deployments until interrupted (each run in its own process).

    A dispatcher run is asked for as soon as the deployments exist, so that what a crash left
    (claims of dead processes, staged files, requests half-way) is taken up at once; then the
    watch starts the sweepers whenever there is work (:mod:`flows.watch`). A dispatcher run that
    crashes starts the next (its trigger).
    """
    threading.Thread(target=_watch_when_deployed, name="watch", daemon=True).start()
    # The runner asks for due runs as often as the watch looks: a run the watch starts waits
    # for the next poll (Prefect's default is every 10 s).
    serve(*runner_deployments(), limit=limit, print_starting_message=True,
          query_seconds=limits.WATCH_SECONDS)


def _watch_when_deployed(timeout: float = 120.0) -> None:
    _nudge_when_deployed(timeout)
    watch_forever()


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
