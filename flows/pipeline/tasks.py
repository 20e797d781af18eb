"""The pipeline's Prefect tasks: thin, typed wrappers of its steps (:mod:`flows.pipeline`).

They pass request ids and counts, nothing personal; none persists its result (the ledger is the
record), and none is cached. Retries sit where the outside world can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from sqlmodel import Session

from connectors.destinations import clean_staging
from connectors.dropoff import DropFile, DropFileChangedError
from flows import events, starts
from flows.faults import fault
from flows.logs import get_logger
from flows.pipeline import bulk, deadlines, decide, deliver, review_runs
from flows.pipeline.claims import ClaimKeeper
from flows.pipeline.take_in import take_in_file
from flows.review import labels, queue
from flows.runtime import Runtime, runtime
from records.queue import (
    claim_requests,
    claim_these,
    release_claims,
    release_dead_workers,
    worker_name,
)
from records.review_queue import waiting_reviews


@task(name="claim-requests", retries=2, retry_delay_seconds=[1, 5], persist_result=False,
      cache_policy=NONE)
def claim_batch(worker: str, limit: int) -> list[str]:
    """Claim a batch of waiting requests for this run, after releasing the claims of workers on
    this host whose process is gone (a crashed run's requests are taken over at once)."""
    rt = runtime()
    now = datetime.now(UTC)
    with Session(rt.ledger) as session, session.begin():
        dead = release_dead_workers(session=session, now=now)
        claimed = claim_requests(session=session, worker=worker, limit=limit,
                                 lease=lease_of(rt), now=now)
    if dead:
        get_logger("dispatcher").warning("claims_of_dead_workers_released", workers=len(dead))
    fault("claimed")
    return claimed


def lease_of(rt: Runtime) -> timedelta:
    """How long a claim holds unless renewed (``DISCLOSURE_CLAIM_LEASE_SECONDS``)."""
    return timedelta(seconds=rt.settings.claim_lease_seconds)


@task(name="clean-staging", retries=1, retry_delay_seconds=[1], persist_result=False,
      cache_policy=NONE)
def clean_staging_task() -> int:
    """Remove the temporary delivery files crashed writers left; returns how many."""
    return clean_staging(runtime().settings.resolved_outbox_dir)


@task(name="release-claims", retries=2, retry_delay_seconds=[1, 5], persist_result=False,
      cache_policy=NONE)
def release_batch(worker: str, request_ids: list[str]) -> None:
    """Give up this run's claims."""
    with Session(runtime().ledger) as session, session.begin():
        release_claims(session=session, worker=worker, request_ids=request_ids)


@task(name="decide-requests", retries=2, retry_delay_seconds=[2, 10], persist_result=False,
      cache_policy=NONE)
def decide_batch(request_ids: list[str], flow_run_id: str | None) -> dict[str, list[str]]:
    """Validate, assess and record the decisions of a batch; returns where each request went.
    A request set aside is announced (``disclosure.request.set_aside``) for an automation."""
    decided = decide.decide_requests(runtime(), request_ids, flow_run_id=flow_run_id)
    fault("decided")
    for request_id in decided.set_aside:
        events.emit(events.REQUEST_SET_ASIDE, request_id, step="decide")
    return asdict(decided)


@task(name="deliver-part", persist_result=False, cache_policy=NONE)
def deliver_part(work: Callable[[], bulk.PartReceipt], number: int) -> bulk.PartReceipt:
    """Fetch and deliver one part of a bulk request (:mod:`flows.pipeline.bulk`): a task per
    part, so the run shows each part and a crash shows where it stopped."""
    return work()


def _run_part(work: Callable[[], bulk.PartReceipt], number: int) -> bulk.PartReceipt:
    return deliver_part.with_options(task_run_name=f"deliver-part-{number}")(work, number)


class BulkProgress:
    """The progress artifact of a run delivering a bulk request: parts delivered of all."""

    def __init__(self) -> None:
        self.artifact_id: UUID | None = None

    def __call__(self, done: int, total: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        try:
            if self.artifact_id is None:
                self.artifact_id = cast(UUID, create_progress_artifact(
                    percent, description=f"Bulk delivery: {done} of {total} parts"))
            else:
                update_progress_artifact(self.artifact_id, percent,
                                         description=f"Bulk delivery: {done} of {total} parts")
        except Exception as exc:  # progress is a view; the delivery goes on without it
            get_logger("delivery").warning("progress_not_published", error=type(exc).__name__)


@task(name="deliver-requests", retries=3, retry_delay_seconds=[2, 10, 30], persist_result=False,
      cache_policy=NONE)
def deliver_batch(request_ids: list[str], flow_run_id: str | None) -> dict[str, Any]:
    """Fetch and deliver the decided requests of a batch, once each; returns counts, and the
    ids of the requests sent (back) to review because a subject is shielded now. A bulk
    request goes out in parts, a task each, with a progress artifact."""
    done = deliver.deliver_requests(runtime(), request_ids, flow_run_id=flow_run_id,
                                    run_part=_run_part, progress=BulkProgress())
    for request_id in done.set_aside:
        events.emit(events.REQUEST_SET_ASIDE, request_id, step="deliver")
    return asdict(done)


@task(name="deliver-reviewed", retries=3, retry_delay_seconds=[2, 10, 30],
      persist_result=False, cache_policy=NONE)
def deliver_reviewed(request_id: str, flow_run_id: str | None) -> dict[str, Any]:
    """Deliver a request its review run decided, under a claim like the dispatcher's (if the
    dispatcher holds the request, it delivers it instead: ``claimed`` is False)."""
    rt = runtime()
    worker = worker_name("review-request", flow_run_id)
    with Session(rt.ledger) as session, session.begin():
        claimed = claim_these(session=session, worker=worker, request_ids=[request_id],
                              lease=lease_of(rt), now=datetime.now(UTC))
    if not claimed:
        return {"claimed": False, "delivered": 0, "to_review": [], "set_aside": []}
    try:
        # a bulk delivery outlasts a lease: the claim is renewed while it goes on
        with ClaimKeeper(rt.ledger, worker, lease=lease_of(rt)):
            done = deliver_batch.fn(claimed, flow_run_id)
    finally:
        with Session(rt.ledger) as session, session.begin():
            release_claims(session=session, worker=worker, request_ids=claimed)
    return {"claimed": True, **done}


@task(name="start-reviews", retries=2, retry_delay_seconds=[2, 10], persist_result=False,
      cache_policy=NONE)
def start_reviews(request_ids: list[str], flow_run_id: str | None = None) -> int:
    """Start one review run per request that needs a reviewer, and put that on the record;
    returns how many started. A request whose run could not be started is started by a later
    sweep (:func:`start_missing_reviews`)."""
    started = 0
    for review in review_runs.under_review(runtime(), request_ids):
        review_run = starts.start_review(
            review.request_id, review.sequence,
            name=labels.review_run_name(reference=review.reference, ground_id=review.ground_id,
                                        deadline=review.deadline),
            tags=labels.review_run_tags(ground_id=review.ground_id, body=review.body,
                                        deadline=review.deadline))
        if review_run is not None:
            review_runs.record_review_started(runtime(), review, review_run,
                                              flow_run_id=flow_run_id)
            started += 1
    return started


@task(name="start-missing-reviews", retries=2, retry_delay_seconds=[2, 10],
      persist_result=False, cache_policy=NONE)
def start_missing_reviews(flow_run_id: str | None) -> int:
    """Start the review runs that an earlier run could not start (Prefect was away)."""
    return int(start_reviews.fn(review_runs.reviews_without_run(runtime()), flow_run_id))


@task(name="escalate-reviews", retries=2, retry_delay_seconds=[1, 5], persist_result=False,
      cache_policy=NONE)
def escalate_reviews(flow_run_id: str | None) -> int:
    """Mark reviews at their deadline overdue and escalate those past it; returns how many
    were escalated now (events go out for each)."""
    found = deadlines.escalate_reviews(runtime(), on=deadlines.today(), flow_run_id=flow_run_id)
    for request_id in found["overdue"]:
        events.emit(events.REVIEW_OVERDUE, request_id)
    for request_id in found["escalated"]:
        events.emit(events.REVIEW_ESCALATED, request_id)
    if found["escalated"]:
        with Session(runtime().ledger) as session:
            escalated = [w for w in waiting_reviews(session=session)
                         if w.request_id in set(found["escalated"])]
        for review in escalated:
            starts.tag_run(review.review_run_id, add=(labels.ESCALATED_TAG,))
    return len(found["escalated"])


@task(name="publish-review-queue", persist_result=False, cache_policy=NONE)
def publish_review_queue() -> bool:
    """Publish the review queue artifact if it changed (:mod:`flows.review.queue`)."""
    return queue.publish_review_queue(runtime())


@task(name="list-drop-files", retries=2, retry_delay_seconds=[1, 5], persist_result=False,
      cache_policy=NONE)
def list_drop_files() -> list[tuple[str, str, str]]:
    """The drop files waiting: (partner id, path, sha256) each."""
    return [(d.partner_id, str(d.path), d.sha256) for d in runtime().dropbox.waiting()]


@task(name="take-in-files", retries=2, retry_delay_seconds=[2, 10], persist_result=False,
      cache_policy=NONE)
def take_in(files: list[tuple[str, str, str]], flow_run_id: str | None = None) -> dict[str, int]:
    """Record every request of some drop files and file each away; returns counts."""
    totals = {"files": 0, "valid": 0, "invalid": 0, "not_filed": 0}
    log = get_logger("dropoff")
    for partner_id, path, sha256 in files:
        drop = DropFile(partner_id, Path(path), sha256)
        if not drop.path.exists():  # taken in by an earlier attempt or a concurrent run
            log.info("dropoff_already_taken_in", partner_id=partner_id)
            continue
        try:
            taken = take_in_file(runtime(), drop, flow_run_id=flow_run_id)
        except (OSError, DropFileChangedError) as exc:
            # This file only: its entries that were recorded stay recorded (its intake keys
            # make the next attempt record nothing twice); every other file goes on.
            log.warning("dropoff_file_not_filed_away", partner_id=partner_id,
                        error=type(exc).__name__)
            totals["not_filed"] += 1
            continue
        totals["files"] += 1
        totals["valid"] += taken.valid
        totals["invalid"] += taken.invalid
    return totals
