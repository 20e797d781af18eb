"""Idle for free: the watch starts the sweepers when there is work, and an idle engine creates no
flow runs besides the slow safety-net schedules.

First the watch's parts on a real ledger and real folders (what counts as work, how often the
same work is started again), then the watch in a real ``disclosure serve`` against a real
``prefect server`` (:class:`review_support.ReviewSystem`): nothing to do creates no run; a
request recorded as the intake records it, a drop-off file and a claim whose lease ran out are
each taken up within seconds by a run the watch started; and ``disclosure watch`` on its own
starts the dispatcher.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from review_support import EXAMPLES, ReviewSystem, example, free_port, wait_for
from sqlalchemy import Engine, update
from sqlmodel import Session, col
from test_ledger import (
    DECIDED,
    RECEIVED,
    decide,
    request_body,
    submit,
    transaction,
    valid_bsns,
)

from cli.main import main
from connectors.dropoff import DropBox
from flows.deployments import runner_deployments
from flows.pipeline.deadlines import escalate_reviews
from flows.starts import DISPATCHER, DROPOFF
from flows.watch import Pace, Watch, Work, deadline_work, drop_files, look
from legal_bases import limits
from legal_bases.request import read_request
from legal_bases.table import GroundTable
from records.ledger import received_on, record_submission
from records.models import DecisionRow, RequestRow, RequestStatus
from records.queue import claim_requests, release_claims
from records.vocabulary import Channel

# -- what counts as work --------------------------------------------------------------------------


def test_the_watch_sees_the_drop_files_the_drop_off_takes_in(tmp_path: Path) -> None:
    for partner, name in [("svb", "a.json"), ("svb", "b.jsonl"), ("svb", ".c.json"),
                          ("svb", "d.json.part"), ("svb", "e.json.tmp"), ("svb", "f.txt"),
                          ("uwv", "g.JSON"), ("uwv", "h.json"), ("uwv", "x.tmp.json")]:
        (tmp_path / partner).mkdir(exist_ok=True)
        (tmp_path / partner / name).write_text("{}")
    (tmp_path / "svb" / "processed").mkdir()
    (tmp_path / "svb" / "processed" / "old.json").write_text("{}")
    (tmp_path / "stray.json").write_text("{}")  # not in a partner's folder
    seen = {(partner, name) for partner, name, *_ in drop_files(tmp_path)}
    assert seen == {(d.partner_id, d.path.name) for d in DropBox(tmp_path).waiting()}
    assert seen == {("svb", "a.json"), ("svb", "b.jsonl"), ("uwv", "h.json"),
                    ("uwv", "x.tmp.json")}
    assert drop_files(tmp_path / "missing") == ()


def test_the_dispatcher_has_work_while_a_request_waits_without_a_live_claim(
        ledger_engine: Engine, shipped_table: GroundTable, tmp_path: Path) -> None:
    lease = timedelta(minutes=5)
    assert look(ledger_engine, tmp_path, now=DECIDED, on=RECEIVED.date()) == {
        DROPOFF: None, DISPATCHER: None}
    with transaction(ledger_engine) as session:
        request_id = submit(session, request_body()).id

    def work(now: datetime) -> Work | None:
        return look(ledger_engine, tmp_path, now=now, on=RECEIVED.date())[DISPATCHER]

    arrived = work(DECIDED)
    assert arrived is not None
    assert arrived.counts == {"waiting": 1, "deadlines": 0}
    with transaction(ledger_engine) as session:
        assert claim_requests(session=session, worker="w1", limit=10, lease=lease,
                              now=DECIDED) == [request_id]
    assert work(DECIDED + lease - timedelta(seconds=1)) is None  # a worker holds it
    expired = work(DECIDED + lease + timedelta(seconds=1))  # the worker died: its lease ran out
    assert expired is not None
    assert expired.fingerprint != arrived.fingerprint
    with transaction(ledger_engine) as session:
        release_claims(session=session, worker="w1", request_ids=[request_id])
    released = work(DECIDED)
    assert released is not None
    assert released.fingerprint == arrived.fingerprint  # the same work again: retried, paced
    with transaction(ledger_engine) as session:
        assert submit_decision(session, request_id, shipped_table).outcome == "approved"
    to_deliver = work(DECIDED)  # decided, not delivered: the dispatcher delivers it
    assert to_deliver is not None
    assert to_deliver.fingerprint != arrived.fingerprint


def submit_decision(session: Session, request_id: str, table: GroundTable,
                    **options: Any) -> DecisionRow:
    return decide(session, request_id, table, **options)


def test_a_waiting_review_is_work_on_its_deadline_day_and_the_next_until_marked(
        ledger_engine: Engine, shipped_table: GroundTable) -> None:
    """The watch asks for the dispatcher exactly when its sweep has a review to mark."""
    deadline = date(2026, 12, 1)
    with transaction(ledger_engine) as session:
        many = [{"bsn": n} for n in valid_bsns(1001)]  # above the automatic limit: reviewed
        request_id = submit(session, request_body(subjects=many)).id
        assert submit_decision(session, request_id, shipped_table,
                               deadline=deadline).outcome == "needs_review"
    sweep = SimpleNamespace(ledger=ledger_engine)  # what escalate_reviews uses of a Runtime

    def due(on: date) -> tuple[str, ...]:
        with Session(ledger_engine) as session:
            return deadline_work(session, on)

    assert due(deadline - timedelta(days=1)) == ()
    assert due(deadline) == (request_id,)
    assert escalate_reviews(sweep, on=deadline, flow_run_id=None)["overdue"] == [request_id]
    assert due(deadline) == ()  # marked overdue today: nothing more to do today
    assert due(deadline + timedelta(days=1)) == (request_id,)
    assert escalate_reviews(sweep, on=deadline + timedelta(days=1),
                            flow_run_id=None)["escalated"] == [request_id]
    assert due(deadline + timedelta(days=1)) == ()
    assert due(deadline + timedelta(days=30)) == ()


# -- how often ------------------------------------------------------------------------------------


def test_the_same_work_is_started_again_ever_more_slowly_up_to_the_schedule() -> None:
    pace = Pace(longest=limits.DISPATCH_SWEEP_SECONDS)
    same, other = Work("a"), Work("b")
    assert pace.due(same, 0)
    waits = []
    now = 0.0
    for _ in range(9):
        pace.started(same, now)
        assert not pace.due(same, pace.next_at - 0.5)
        waits.append(pace.next_at - now)
        now = pace.next_at
    retry = limits.WATCH_RETRY_SECONDS
    assert waits == [retry, 2 * retry, 4 * retry, 8 * retry, 16 * retry, 32 * retry,
                     limits.DISPATCH_SWEEP_SECONDS, limits.DISPATCH_SWEEP_SECONDS,
                     limits.DISPATCH_SWEEP_SECONDS][:len(waits)]
    assert pace.due(other, now + 1)  # other work: at once
    pace.failed(other, now + 1)  # Prefect away
    assert not pace.due(other, now + limits.WATCH_ERROR_RETRY_SECONDS)
    assert pace.due(other, now + 1 + limits.WATCH_ERROR_RETRY_SECONDS)
    pace.started(other, now + 20)
    assert pace.attempts == 1
    assert pace.next_at == now + 20 + retry


class FakePrefect:
    """What the watch asks of Prefect, recorded; runs start unless ``down``."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.asked: list[tuple[str, ...]] = []
        self.busy: set[str] = set()
        self.down = False
        self.now = 1000.0

    def start(self, deployment: str, key: str) -> str | None:
        if self.down:
            return None
        self.started.append((deployment, key))
        return f"run-{len(self.started)}"

    def under_way(self, deployments: tuple[str, ...]) -> bool:
        self.asked.append(deployments)
        return bool(self.busy & set(deployments))


def test_the_watch_starts_a_sweeper_once_per_work_and_asks_prefect_nothing_when_idle(
        ledger_engine: Engine, tmp_path: Path) -> None:
    prefect = FakePrefect()
    watch = Watch(ledger_engine, tmp_path, start=prefect.start, under_way=prefect.under_way,
                  clock=lambda: prefect.now)
    for _ in range(5):
        assert watch.tick() == []
    assert prefect.asked == []  # idle: not one call to Prefect
    (tmp_path / "svb").mkdir()
    (tmp_path / "svb" / "r.json").write_text("{}")
    assert watch.tick() == [DROPOFF]
    assert prefect.asked == [(DROPOFF,)]
    assert prefect.started[0][1].startswith("watch-")
    assert watch.tick() == []  # the same file: its run is on its way
    with transaction(ledger_engine) as session:
        submit(session, request_body(), received_at=datetime.now(UTC))
    prefect.busy = {DROPOFF}  # a drop-off run under way nudges the dispatcher itself
    assert watch.tick() == []
    prefect.busy = set()
    prefect.down = True
    assert watch.tick() == []  # could not start it: tried again after a short wait
    prefect.down = False
    assert watch.tick() == []
    prefect.now += limits.WATCH_ERROR_RETRY_SECONDS
    assert watch.tick() == [DISPATCHER]
    assert watch.tick() == []
    prefect.now += limits.WATCH_RETRY_SECONDS  # still there a minute on: once more
    assert watch.tick() == [DROPOFF, DISPATCHER]
    assert [d for d, _ in prefect.started] == [DROPOFF, DISPATCHER, DROPOFF, DISPATCHER]
    assert len({key for _, key in prefect.started}) == 4


def test_the_sweepers_schedules_are_a_slow_safety_net() -> None:
    served = {f"{d.flow_name}/{d.name}": d for d in runner_deployments()}
    for name, seconds in [(DISPATCHER, limits.DISPATCH_SWEEP_SECONDS),
                          (DROPOFF, limits.DROPOFF_SWEEP_SECONDS)]:
        [schedule] = served[name].schedules
        assert schedule.schedule.interval.total_seconds() == seconds  # type: ignore[union-attr]
        assert schedule.schedule.anchor_date == datetime.fromisoformat(  # type: ignore[union-attr]
            limits.SWEEP_ANCHOR)
    per_day = 86400 / limits.DISPATCH_SWEEP_SECONDS + 86400 / limits.DROPOFF_SWEEP_SECONDS + 1
    assert per_day / 24 <= 2  # runs per idle hour, the nightly verification included


def test_disclosure_watch_without_a_prefect_server_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        ) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DISCLOSURE_PREFECT_PORT", str(free_port()))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["watch"]) == 2
    assert "disclosure watch needs a Prefect server" in capsys.readouterr().err


# -- in a real disclosure serve -------------------------------------------------------------------

#: The watch's part: a run is asked for within this many seconds of an arrival (it looks every
#: WATCH_SECONDS). The target of issue 12 is a pick-up within 5 s; the rest of it is the flow
#: server's poll and the start of a flow-run process, 2-3 s on two idle cores and more on a busy
#: machine: benchmarks/idle.py measures it, the tests allow for CI.
STARTED_S = limits.WATCH_SECONDS + 2.0
PICKUP_S = 12.0
#: How long the idle test watches an idle engine.
IDLE_S = 30.0
APPROVED = EXAMPLES / "requests" / "belastingdienst" / "awr55-studiefinanciering.json"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewSystem]:
    engine = ReviewSystem(tmp_path_factory.mktemp("idle"))
    try:
        engine.start()
        wait_for("the start-up dispatcher run to end", lambda: [
            r for _, r in all_runs(engine) if (r.idempotency_key or "").startswith("start-")
            and r.state is not None and r.state.is_final()])
        wait_for("every run due to end", lambda: not runs_under_way(engine))
        yield engine
    finally:
        engine.close()


def all_runs(system: ReviewSystem) -> list[tuple[str, FlowRun]]:
    with system.prefect(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200)
        flows = {f.id: f.name for f in client.read_flows(limit=50)}
    return [(flows.get(r.flow_id, "?"), r) for r in runs]


def runs_under_way(system: ReviewSystem) -> list[FlowRun]:
    now = datetime.now(UTC)
    return [r for _, r in all_runs(system) if r.state is not None and not r.state.is_final()
            and not r.state.is_paused() and r.expected_start_time is not None
            and r.expected_start_time <= now]


def decided_run(system: ReviewSystem, request_id: str) -> FlowRun:
    [decision] = system.decisions(request_id)
    assert decision.flow_run_id is not None
    return system.read_run(UUID(decision.flow_run_id))


@pytest.mark.slow
def test_an_idle_engine_creates_no_flow_run(system: ReviewSystem) -> None:
    since = datetime.now(UTC)
    time.sleep(IDLE_S)
    new = [(flow, r) for flow, r in all_runs(system)
           if r.created is not None and r.created >= since]
    started = [(flow, r) for flow, r in all_runs(system)
               if r.start_time is not None and r.start_time >= since]
    print(f"idle {IDLE_S:.0f} s: {len(new)} runs created, {len(started)} started")
    # only the safety net may appear: a scheduled sweep, planned ahead or falling in the window
    assert [(flow, r.idempotency_key) for flow, r in new + started if not r.auto_scheduled] == []


@pytest.mark.slow
def test_a_request_recorded_while_idle_is_decided_within_seconds(system: ReviewSystem) -> None:
    request_id = system.submit("api", "belastingdienst",
                               example(APPROVED, reference="IDLE-API-1"))
    [row] = system.rows(RequestRow, id=request_id)
    wait_for("the decision", lambda: system.decisions(request_id), timeout=60)
    [decision] = system.decisions(request_id)
    waited = (decision.decided_at - row.received_at).total_seconds()
    run = decided_run(system, request_id)
    print(f"recorded → decided in {waited:.1f} s by {run.name} ({run.idempotency_key})")
    assert (run.idempotency_key or "").startswith("watch-")  # no nudge, no schedule: the watch
    assert run.created is not None
    assert (run.created - row.received_at).total_seconds() <= STARTED_S
    assert waited <= PICKUP_S
    system.wait_states([request_id], ("delivered",))


@pytest.mark.slow
def test_a_dropped_file_is_taken_in_within_seconds(system: ReviewSystem) -> None:
    folder = system.settings.resolved_dropoff_dir / "belastingdienst"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".idle.json.part").write_text(json.dumps(example(APPROVED,
                                                               reference="IDLE-DROP-1")))
    (folder / ".idle.json.part").rename(folder / "idle.json")
    dropped = datetime.fromtimestamp((folder / "idle.json").stat().st_mtime, UTC)
    rows = wait_for("the request taken in", lambda: [
        r for r in system.rows(RequestRow, partner_id="belastingdienst")
        if r.reference == "IDLE-DROP-1"], timeout=60)
    waited = (rows[0].received_at - dropped).total_seconds()
    runs = [r for flow, r in all_runs(system) if flow == "collect-dropoffs"
            and r.created is not None and r.created >= dropped - timedelta(seconds=1)]
    print(f"dropped → taken in in {waited:.1f} s by {[r.idempotency_key for r in runs]}")
    assert [(r.idempotency_key or "")[:6] for r in runs] == ["watch-"]
    assert runs[0].created is not None
    assert (runs[0].created - dropped).total_seconds() <= STARTED_S
    assert waited <= PICKUP_S
    system.wait_states([rows[0].id], ("delivered",))


def submit_claimed(system: ReviewSystem, body: dict[str, Any], **claim: Any) -> str:
    """Record a request for the belastingdienst as the intake does, claimed by ``claim``
    in the same transaction (so no watch sees it unclaimed)."""
    now = datetime.now(UTC)
    raw = json.dumps(body)
    with Session(system.ledger, expire_on_commit=False) as session, session.begin():
        row = record_submission(
            session=session, partner_id="belastingdienst", requester_body="belastingdienst",
            channel=Channel.CLI, raw_body=raw,
            parsed=read_request(json.loads(raw), received_on=received_on(now)),
            received_at=now, pseudonymizer=system.pseudonymizer)
        session.execute(update(RequestStatus).where(col(RequestStatus.request_id) == row.id)
                        .values(**claim))
    return row.id


@pytest.mark.slow
def test_a_claim_whose_lease_ran_out_is_taken_over_within_seconds(
        system: ReviewSystem) -> None:
    """A worker on another host claimed the request and died: nobody releases the claim, so
    its lease must run out; then the watch starts the dispatcher."""
    lease_ends = datetime.now(UTC) + timedelta(seconds=8)
    request_id = submit_claimed(system, example(APPROVED, reference="IDLE-LEASE-1"),
                                claimed_by="process-requests:gone@elsewhere:1",
                                claimed_until=lease_ends)
    wait_for("the decision", lambda: system.decisions(request_id), timeout=60)
    [decision] = system.decisions(request_id)
    assert decision.decided_at >= lease_ends  # never before the lease ran out
    waited = (decision.decided_at - lease_ends).total_seconds()
    print(f"lease ran out → decided in {waited:.1f} s")
    run = decided_run(system, request_id)
    assert (run.idempotency_key or "").startswith("watch-")
    assert run.created is not None
    assert (run.created - lease_ends).total_seconds() <= STARTED_S
    assert waited <= PICKUP_S


@pytest.mark.slow
def test_disclosure_watch_on_its_own_starts_the_dispatcher(system: ReviewSystem) -> None:
    """Without ``serve`` (its runner and its watch stopped), ``disclosure watch`` beside the
    Prefect server starts a dispatcher run for a request that waits (a worker would run it)."""
    system.serve_process.terminate()
    system.serve_process.wait(60)
    since = datetime.now(UTC)
    system.submit("alone", "belastingdienst", example(APPROVED, reference="IDLE-WATCH-1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCLOSURE_", "PREFECT_"))}
    env |= system.env | {"PREFECT_API_URL": system.api_url}
    log = system.logs / "watch.log"
    with log.open("ab") as out, subprocess.Popen(
            [sys.executable, "-m", "cli.main", "watch"], env=env, stdout=out,
            stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]) as watch:
        try:
            runs = wait_for("a dispatcher run started by disclosure watch", lambda: [
                r for flow, r in all_runs(system) if flow == "process-requests"
                and r.created is not None and r.created >= since
                and (r.idempotency_key or "").startswith("watch-")], timeout=60)
        finally:
            watch.terminate()
            watch.wait(30)
    assert len(runs) == 1, log.read_text()
    assert "starting runs on " + system.api_url in log.read_text()
