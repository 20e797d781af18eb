"""The dispatcher flow ``process-requests``: claim, decide, record, fetch, deliver, in batches.

Started when requests arrive (drop-off, intake API) and on a short schedule as the sweeper, so
nothing accepted is left behind. Each run drains the queue batch by batch: requests that arrive
while it runs are taken in its next batch.
"""

from __future__ import annotations

from typing import Any

import structlog
from prefect import flow
from prefect.runtime import flow_run

from flows.logs import get_logger
from flows.pipeline.claims import ClaimKeeper, release_run_claims
from flows.pipeline.tasks import (
    claim_batch,
    clean_staging_task,
    decide_batch,
    deliver_batch,
    escalate_reviews,
    lease_of,
    publish_review_queue,
    release_batch,
    start_missing_reviews,
    start_reviews,
)
from flows.runtime import runtime
from legal_bases import limits
from records.queue import worker_name


def _release_on_end(flow: Any, flow_run: Any, state: Any) -> None:
    """State hook of a crashed or cancelled run: give its claims up at once, so the next run
    does not wait for their leases to run out."""
    released = release_run_claims(runtime().ledger, str(flow_run.id))
    get_logger("dispatcher").warning("claims_released_after_run_ended", state=state.name,
                                     released=released)


@flow(name="process-requests", persist_result=False,
      on_crashed=[_release_on_end], on_cancellation=[_release_on_end],
      description="Claim waiting requests; validate, assess and record the decisions; fetch the "
                  "released data and deliver it; start a review run where a person must decide.")
def process_requests(max_batches: int = 100,
                     batch_size: int = limits.DISPATCH_BATCH_SIZE) -> dict[str, int]:
    """Work through the waiting requests, ``batch_size`` at a time, at most ``max_batches``."""
    run_id = str(flow_run.id) if flow_run.id else None
    worker = worker_name("process-requests", run_id)
    structlog.contextvars.bind_contextvars(flow_run_id=run_id)
    rt = runtime()  # configure logging and open the ledger before the first task
    totals = {"claimed": 0, "to_deliver": 0, "to_review": 0, "rejected": 0, "reviews_started": 0,
              "delivered": 0, "failed": 0, "set_aside": 0, "escalated": escalate_reviews(run_id),
              "reviews_restarted": start_missing_reviews(run_id),
              "staged_files_removed": clean_staging_task()}
    # Claims are held until the run ends: a request whose delivery failed (and stays decided)
    # waits for the next sweep instead of being claimed again by this run's next batch.
    held: list[str] = []
    with ClaimKeeper(rt.ledger, worker, lease=lease_of(rt)):
        try:
            _work(worker, run_id, max_batches=max_batches, batch_size=batch_size,
                  totals=totals, held=held)
        finally:
            if held:
                release_batch(worker, held)
    totals["review_queue_published"] = int(publish_review_queue())
    structlog.contextvars.unbind_contextvars("flow_run_id")
    return totals


def _work(worker: str, run_id: str | None, *, max_batches: int, batch_size: int,
          totals: dict[str, int], held: list[str]) -> None:
    """The batches of one run: claim, decide, start reviews, deliver (``held`` collects the
    claims, which the run gives up when it ends)."""
    for _ in range(max_batches):
        claimed = claim_batch(worker, batch_size)
        if not claimed:
            break
        held += claimed
        decided = decide_batch(claimed, run_id)
        totals["reviews_started"] += start_reviews(decided["review"], run_id)
        delivery = deliver_batch(decided["deliver"], run_id)
        totals["reviews_started"] += start_reviews(delivery["to_review"], run_id)
        totals["claimed"] += len(claimed)
        totals["to_deliver"] += len(decided["deliver"])
        totals["to_review"] += len(decided["review"]) + len(delivery["to_review"])
        totals["rejected"] += len(decided["rejected"])
        totals["set_aside"] += len(decided["set_aside"]) + len(delivery["set_aside"])
        totals["delivered"] += delivery["delivered"]
        totals["failed"] += delivery["failed_transient"] + delivery["failed_permanent"]
