"""A worker killed (SIGKILL) at each step of the dispatcher: nothing lost, nothing twice.

Each test drops off the same mix (approved to a file drop and over HTTPS, rejected, to review,
invalid, a 409 conflict), runs one dispatcher in a process of its own that is killed at the named
point — no ``finally``, no Prefect state, no released claim — and then lets the next dispatcher
run (in this process) carry on, as the sweeper would. The next run takes the dead worker's
requests over at once: its process is gone, on this host.
"""

from __future__ import annotations

import time

import pipeline_support as ps
import pytest
import test_pipeline
from fault_support import KILLED, assert_invariants, drop_mix, injected, run_worker

from records.models import DeliveryRow

pytestmark = pytest.mark.slow

# The pipeline suite's Prefect test server and set-up (ledger on SQLite or PostgreSQL, a seeded
# register, file drops and a real HTTPS receiver on loopback), shared rather than copied.
prefect = test_pipeline.prefect
certificate = test_pipeline.certificate
backend = test_pipeline.backend
pipeline = test_pipeline.pipeline

BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("point", ["claimed", "decided", "fetched", "delivering", "delivered",
                                   "recorded"])
def test_a_worker_killed_at_each_step_loses_nothing_and_delivers_once(
        pipeline: ps.Pipeline, point: str) -> None:
    submitted = drop_mix(pipeline, point.upper())
    pipeline.collect()

    killed = run_worker(faults=f"{point}:kill")
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    injected(f"worker SIGKILL at {point}")

    started = time.monotonic()
    recovery = pipeline.dispatch()
    assert recovery.state.is_completed(), recovery.state
    took = time.monotonic() - started
    assert recovery.totals["claimed"] > 0 or point == "recorded"
    outcome = assert_invariants(pipeline, submitted=submitted.count)
    # what the mix must end as: 3 + 2 delivered, 1 to review, the rest rejected
    assert outcome.delivered == 5, outcome
    assert outcome.states == {"delivered": 5, "awaiting_review": 1, "rejected": 3}, outcome
    assert took < 30  # taken over at once, not after a lease


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_worker_killed_after_the_destination_answered_delivers_nothing_twice(
        pipeline: ps.Pipeline, backend: str) -> None:
    """The gap no transaction closes: the partner has the document, the ledger does not know.
    The next run sends it again under the same idempotency key; the destination recognises it
    (a file drop finds the same bytes, the receiver replays its answer) and one delivery is
    recorded, as a repeat."""
    submitted = drop_mix(pipeline, "GAP")
    pipeline.collect()
    killed = run_worker(faults="delivered:kill@2")
    assert killed.returncode == KILLED
    injected("worker SIGKILL after the destination answered")
    assert ps.count(pipeline.ledger, DeliveryRow) == 0
    assert pipeline.dispatch().state.is_completed()
    outcome = assert_invariants(pipeline, submitted=submitted.count)
    assert outcome.delivered == 5
    repeats = [d for d in ps.rows(pipeline.ledger, DeliveryRow)
               if d.receipt["status"] == "repeat"]
    assert len(repeats) >= 1  # the document that was out before the kill


def test_a_worker_killed_twice_in_a_row_still_loses_nothing(pipeline: ps.Pipeline) -> None:
    submitted = drop_mix(pipeline, "TWICE")
    pipeline.collect()
    assert run_worker(faults="fetched:kill").returncode == KILLED
    assert run_worker(faults="delivered:kill").returncode == KILLED
    injected("worker SIGKILL at fetched", 1)
    injected("worker SIGKILL after the destination answered", 1)
    assert pipeline.dispatch().state.is_completed()
    assert assert_invariants(pipeline, submitted=submitted.count).delivered == 5
