"""Support for the fault suite: the pipeline's test set-up, workers in processes of their own (so
they can be killed), and the invariants every fault test ends on.

A worker here is what a Prefect worker or ``disclosure serve`` runs: the ``process-requests``
flow in a fresh Python process, against the module's Prefect test server, with the test's
``DISCLOSURE_*`` settings and a fault (``DISCLOSURE_FAULTS``, :mod:`flows.faults`). After the
fault, the test recovers as production would — the next dispatcher run, in this process — and
:func:`assert_invariants` checks what DESIGN.md section 10 promises:

* every submission is on the record (0 lost) and every one is finished — delivered, rejected,
  waiting for a reviewer, or failed *with its reason on the record*;
* 0 delivered twice: one delivery row per decision, one file per decision, one distinct
  delivery per idempotency key at the HTTPS receiver;
* 0 released without a releasing decision of a valid request: every document in the outbox and
  at the receiver carries out the decision in force of a request accepted as valid, with exactly
  its categories; ``audit verify`` finds nothing;
* no temporary file left in the outbox (staging included) or the drop-off folders.

The session's totals (faults injected, requests processed, lost, duplicated, released while
refused) are printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pipeline_support as ps
from prefect.settings import PREFECT_API_URL
from sqlalchemy import select
from sqlmodel import Session

from legal_bases.accountability import load_accountability
from records.ledger import received_on
from records.logboek import logboek_records
from records.models import AuditEvent, DecisionRow, DeliveryRow, RequestRow, RequestStatus
from records.verification import verify_record

ROOT = Path(__file__).parents[2]

FINISHED = {"delivered", "rejected", "failed", "awaiting_review", "escalated"}


@dataclass
class Totals:
    """What the fault suite did, for the closing summary."""

    faults: int = 0
    requests: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    released_while_refused: int = 0
    kinds: list[str] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)


TOTALS = Totals()


def summary() -> str | None:
    """The session's totals as one line, or None if no fault was injected."""
    if not TOTALS.faults:
        return None
    return (f"fault suite: {TOTALS.faults} faults injected ({len(set(TOTALS.kinds))} kinds), "
            f"{TOTALS.requests} requests processed under faults, {TOTALS.delivered} delivered; "
            f"lost {TOTALS.lost}, delivered twice {TOTALS.duplicated}, released while refused "
            f"{TOTALS.released_while_refused}"
            + (f"; crash to next delivery {max(TOTALS.recovery_seconds):.1f} s"
               if TOTALS.recovery_seconds else ""))


def injected(kind: str, count: int = 1) -> None:
    """Count a fault the test injected."""
    TOTALS.faults += count
    TOTALS.kinds.append(kind)


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process: this test's settings and Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
            "PYTHONPATH": str(ROOT)}
    return env | extra


def run_worker(*, faults: str = "", timeout: float = 120, preexec: Any = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    """One dispatcher run in a process of its own, with ``faults`` (``DISCLOSURE_FAULTS``)."""
    return subprocess.run(
        [sys.executable, "-c", "from flows.pipeline.dispatcher import process_requests\n"
                               "print(process_requests())"],
        env=worker_env(DISCLOSURE_FAULTS=faults, **env), capture_output=True, text=True,
        timeout=timeout, cwd=ROOT, preexec_fn=preexec, check=False)


KILLED = -9


# -- what the tests submit -------------------------------------------------------------------

@dataclass
class Submitted:
    """What a test dropped off: partner -> references, and how many submissions in all."""

    files: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0


def drop_mix(pipeline: ps.Pipeline, tag: str) -> Submitted:
    """A realistic mix for every fault: approved to a file drop and over HTTPS, rejected, to
    review, invalid, and a 409 conflict — nine submissions in three files."""
    mix = Submitted()
    tax = [ps.tax_request(f"{tag}-BD-{i}", subjects=(ps.TAX_SUBJECT,)) for i in range(3)]
    conflict = ps.tax_request(f"{tag}-BD-0", subjects=(ps.TAX_SUBJECT, ps.TAX_SUBJECT_2))
    pipeline.drop("belastingdienst", f"{tag}.jsonl", ps.jsonl(*tax, conflict, "not json"))
    pipeline.drop("cbs", f"{tag}.jsonl", ps.jsonl(ps.cbs_request(f"{tag}-CBS-1"),
                                                  ps.cbs_request(f"{tag}-CBS-2",
                                                                 (ps.CBS_SUBJECT_2,))))
    pipeline.drop("gemeente-utrecht", f"{tag}.jsonl", ps.jsonl(
        ps.leerplicht_with_health(f"{tag}-UTR-1"), ps.uwv_on_tax_ground(f"{tag}-UTR-2")))
    mix.count = 9
    return mix


# -- the invariants ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What the invariants counted."""

    requests: int
    delivered: int
    states: dict[str, int]


def assert_invariants(pipeline: ps.Pipeline, *, submitted: int) -> Outcome:
    """Everything DESIGN.md section 10 promises, after a fault and the recovery."""
    ledger = pipeline.ledger
    with Session(ledger) as session:
        requests = {r.id: r for r in session.execute(select(RequestRow)).scalars()}
        states = dict(session.execute(select(RequestStatus.request_id,  # type: ignore[call-overload]
                                             RequestStatus.state)).all())
        decisions = list(session.execute(select(DecisionRow)).scalars())
        deliveries = list(session.execute(select(DeliveryRow)).scalars())
        events = list(session.execute(select(AuditEvent)).scalars())
        report = verify_record(session=session)
        today = received_on(datetime.now(UTC))
        logboek = list(logboek_records(session=session, start=today - timedelta(days=1),
                                       end=today + timedelta(days=1), table=pipeline.rt.table,
                                       accountability=load_accountability(), resource={}))
    # 0 lost: every submission recorded, every request finished or visibly failed
    assert len(requests) == submitted, f"{submitted} submitted, {len(requests)} recorded"
    unfinished = {i: s for i, s in states.items() if s not in FINISHED}
    assert unfinished == {}, unfinished
    for request_id in (i for i, s in states.items() if s == "failed"):
        reasons = [e for e in events if e.request_id == request_id and (
            e.kind == "request_set_aside" or (e.kind == "delivery_failed"
                                              and e.payload.get("permanent")))]
        assert reasons, f"request {request_id} failed without a reason on the record"
    # 0 delivered twice
    per_decision: dict[str, int] = {}
    for delivery in deliveries:
        per_decision[delivery.decision_id] = per_decision.get(delivery.decision_id, 0) + 1
    twice = sum(n - 1 for n in per_decision.values())
    files = [p for p in pipeline.outbox.rglob("*") if p.is_file()] if (
        pipeline.outbox.exists()) else []
    documents = [p for p in files if p.name.startswith("delivery-") and p.suffix == ".json"]
    assert twice == 0
    assert len({p.name for p in documents}) == len(documents)
    # 0 released without a releasing decision in force of a request accepted as valid
    latest: dict[str, DecisionRow] = {}
    for decision in decisions:
        if decision.request_id not in latest or (
                decision.sequence > latest[decision.request_id].sequence):
            latest[decision.request_id] = decision
    by_id = {d.id: d for d in decisions}
    sent = [json.loads(p.read_text("utf-8")) for p in documents]
    sent += [json.loads(body) for body in pipeline.receiver.deliveries.values()]
    refused = 0
    for document in sent:
        decision = by_id.get(document["disclosure"]["decision_id"])
        request = requests.get(document["disclosure"]["request_id"])
        if (decision is None or request is None or not request.valid
                or latest[request.id].id != decision.id
                or decision.outcome not in ("approved", "partially_approved")
                or document["disclosure"]["released"] != decision.released
                or any(sorted(set(r) - {"subject"}) != sorted(decision.released)
                       for r in document["records"])):
            refused += 1
    assert refused == 0
    assert len(sent) == len(deliveries), "a document left without its delivery on the record"
    # the record proves itself, and the Logboek tells the deliveries as they were: one
    # disclosure span per delivery, one data-subject span per subject of each
    assert report.ok, [(p.code, p.detail) for p in report.problems if not p.warning]
    spans = [line for line in logboek if "parent_span_id" not in line]
    assert len(spans) == len(deliveries)
    assert len(logboek) - len(spans) == sum(
        requests[d.request_id].subject_count or 0 for d in deliveries)
    # nothing a crash left behind
    leftovers = [p for p in files if not p.name.startswith("delivery-")]
    assert leftovers == [], leftovers
    temporary = [p for p in pipeline.dropoff.rglob("*") if p.suffix in (".tmp", ".part")]
    assert temporary == []
    TOTALS.requests += len(requests)
    TOTALS.delivered += len(deliveries)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    return Outcome(len(requests), len(deliveries), counts)
