"""Scale-out on Prefect, on real processes: ``disclosure cluster up`` with two workers.

The command itself starts a Prefect server on a fresh PostgreSQL database, the work pool and the
deployments of ``prefect.yaml``, two Prefect workers (each running two flow runs at a time) and
the intake API; the ledger is a fresh PostgreSQL database too. The sweepers' schedules are paused
so that the test decides when dispatcher runs start; each flow-run process sleeps two seconds
after its first register read (``DISCLOSURE_FAULTS=fetched:sleep2``), holding its claims on
requests decided and not yet delivered, so that a kill lands in the middle of work.

1. 240 single-subject requests, recorded as the intake records them, and four dispatcher runs
   started at once with batches of 10: every request is delivered exactly once (one engine
   decision, one delivery row, one file), by runs of both workers (the label
   ``prefect.worker.name`` Prefect gives a worker's runs), and ``audit verify`` finds the record
   intact. Claims (``FOR UPDATE SKIP LOCKED``) keep the runs off each other's requests; one
   claim covers a request to its delivery, however many subjects (and parts) it has.
2. 240 more and four runs; while worker 1's runs hold claims on decided requests, worker 1 and
   every process below it (its flow runs run in sessions of their own) are SIGKILLed. One more
   request arrives through the intake API, whose nudge starts a dispatcher run as any arrival
   does. Bound: every request is delivered within 60 s of the kill, none twice, none decided
   twice; the requests worker 1 held are delivered by worker 2's runs. On one host a dead
   process's claims are released by the next claim at once; a worker on another host waits for
   the lease (``CLAIM_LEASE_SECONDS``, 30 s), so in production the bound is the lease plus the
   time to the next dispatcher run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import URL
from sqlmodel import Session, col

from cli.cluster import descendants, ensure_database
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register, sample_subjects
from flows.runtime import open_ledger
from flows.starts import DISPATCHER, DROPOFF
from legal_bases.request import Subject, read_request
from records.api_keys import issue_key
from records.db import make_engine
from records.ledger import received_on, record_submission
from records.models import DecisionRow, DeliveryRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.settings import Settings, load_settings
from records.vocabulary import Channel

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).parents[1]
PARTNER, BODY = "svb", "svb"
PER_PHASE, RUNS, BATCH = 240, 4, 10
#: Seconds from the kill until every request is delivered (the bound the test states).
RECOVERY_BOUND_S = 60
START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, probe: Callable[[], Any], timeout: float,
               describe: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s. {describe()}")
        time.sleep(0.3)
    return found


def body(reference: str, subject: Subject) -> dict[str, Any]:
    """SVB, suwi-54-svb: approved for personalia and opleidingsgegevens, delivered as a file."""
    return {"reference": reference, "legal_basis": "suwi-54-svb", "purpose": "kinderbijslag",
            "subjects": [{subject.id_type.value: subject.number}],
            "categories": ["personalia", "opleidingsgegevens"]}


@pytest.fixture
def databases(postgres_server: URL) -> Iterator[tuple[URL, URL]]:
    """A fresh ledger database and a fresh Prefect database, dropped afterwards."""
    name = f"scale_{uuid.uuid4().hex[:12]}"
    ledger = postgres_server.set(database=name)
    prefect = postgres_server.set(drivername="postgresql+asyncpg", database=f"{name}_prefect")
    for url in (ledger, prefect):
        ensure_database(url)
    try:
        yield ledger, prefect
    finally:
        admin = make_engine(postgres_server.set(database="postgres"))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for url in (ledger, prefect):
                connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Cluster:
    """``disclosure cluster up`` running, and what the test knows of it."""

    process: subprocess.Popen[bytes]
    log: Path
    api_url: str
    intake_url: str
    workers: dict[str, int]  # worker name -> pid

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace")

    def logs(self, folder: Path) -> str:
        tails = [f"--- {p.name}\n{p.read_text('utf-8', errors='replace')[-2500:]}"
                 for p in sorted(folder.glob("*.log"))]
        return f"--- cluster\n{self.output()[-2500:]}\n" + "\n".join(tails)


def start_cluster(data_dir: Path, ledger: URL, prefect: URL) -> Cluster:
    port, api_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCLOSURE_", "PREFECT_"))}
    env |= {"DISCLOSURE_DATA_DIR": str(data_dir), "DISCLOSURE_FAULTS": "fetched:sleep2"}
    log = data_dir.parent / "cluster.log"
    argv = [sys.executable, "-m", "cli.main", "cluster", "up", "--workers", "2",
            "--worker-limit", "2", "--port", str(port), "--api-port", str(api_port),
            "--database-url", ledger.render_as_string(hide_password=False),
            "--prefect-database-url", prefect.render_as_string(hide_password=False)]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(process, log, f"http://127.0.0.1:{port}/api",
                      f"http://127.0.0.1:{api_port}", {})
    try:
        wait_until("disclosure cluster up serving",
                   lambda: process.poll() is not None or "Serving until interrupted"
                   in cluster.output(), START_TIMEOUT_S,
                   lambda: cluster.logs(data_dir / "logs"))
        assert process.poll() is None, cluster.logs(data_dir / "logs")
    except BaseException:
        stop_cluster(cluster)
        raise
    cluster.workers = {name: int(pid) for name, pid in re.findall(
        r"Worker \d+\s+(\S+), pid (\d+)", cluster.output())}
    assert len(cluster.workers) == 2, cluster.output()
    return cluster


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_cluster(cluster: Cluster) -> list[int]:
    """SIGTERM, as a service manager stops it; returns the processes it left running (killed
    then)."""
    family = descendants(cluster.process.pid)
    if cluster.process.poll() is None:
        os.killpg(cluster.process.pid, signal.SIGTERM)
        try:
            cluster.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.process.pid, signal.SIGKILL)
            cluster.process.wait()
    left = [pid for pid in family if alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


class EngineSide:
    """The engine's side as the test reads and feeds it: ledger, register subjects, Prefect."""

    def __init__(self, settings: Settings, cluster: Cluster) -> None:
        self.settings = settings
        self.cluster = cluster
        self.ledger: Engine = open_ledger(settings)
        self.pseudonymizer = Pseudonymizer.from_settings(settings)

    def submit(self, references: list[tuple[str, Subject]]) -> list[str]:
        """Record requests as the intake records them (in one transaction, so that they wait
        together); their ledger ids."""
        ids = []
        with Session(self.ledger) as session, session.begin():
            for reference, subject in references:
                now = datetime.now(UTC)
                raw = json.dumps(body(reference, subject))
                ids.append(record_submission(
                    session=session, partner_id=PARTNER, requester_body=BODY,
                    channel=Channel.CLI, raw_body=raw,
                    parsed=read_request(json.loads(raw), received_on=received_on(now)),
                    received_at=now, pseudonymizer=self.pseudonymizer).id)
        return ids

    def states(self, ids: list[str]) -> Counter[str]:
        with Session(self.ledger) as session:
            return Counter(session.execute(select(col(RequestStatus.state)).where(
                col(RequestStatus.request_id).in_(ids))).scalars())

    def counts(self, model: type[Any], ids: list[str]) -> Counter[str]:
        """How many rows of ``model`` each of ``ids`` has."""
        with Session(self.ledger) as session:
            found = Counter(dict(session.execute(
                select(model.request_id, func.count()).where(col(model.request_id).in_(ids))
                .group_by(model.request_id)).all()))
        return Counter({i: found.get(i, 0) for i in ids})

    def run_ids(self, model: type[Any], ids: list[str]) -> dict[str, str]:
        """request id -> the flow run that wrote its ``model`` row (decision or delivery)."""
        with Session(self.ledger) as session:
            return dict(session.execute(select(model.request_id, model.flow_run_id).where(
                col(model.request_id).in_(ids))).all())

    def files(self) -> Counter[str]:
        """request id -> delivery files in the partner's outbox folder that carry it."""
        folder = self.settings.resolved_outbox_dir / PARTNER
        return Counter(json.loads(p.read_text("utf-8"))["disclosure"]["request_id"]
                       for p in folder.glob("*.json"))

    def assert_delivered_once(self, ids: list[str]) -> None:
        assert self.states(ids) == Counter({"delivered": len(ids)})
        assert set(self.counts(DecisionRow, ids).values()) == {1}, "a request decided twice"
        assert set(self.counts(DeliveryRow, ids).values()) == {1}, "a request delivered twice"
        files = self.files()
        assert {files[i] for i in ids} == {1}, "a delivery file missing or written twice"
        assert not list((self.settings.resolved_outbox_dir / PARTNER).glob(".*"))

    # -- Prefect --

    def prefect(self) -> Any:
        return temporary_settings(updates={PREFECT_API_URL: self.cluster.api_url})

    def pause_sweepers(self) -> None:
        """Pause the sweepers' schedules (their scheduled runs go), so the test starts runs."""
        with self.prefect(), get_client(sync_client=True) as client:
            for name in (DISPATCHER, DROPOFF):
                client.pause_deployment(client.read_deployment_by_name(name).id)
        wait_until("no dispatcher run left over", lambda: not self.active_runs(), 90)

    def active_runs(self) -> list[Any]:
        with self.prefect(), get_client(sync_client=True) as client:
            return client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["process-requests"])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING,
                                                      StateType.RUNNING]))))

    def start_dispatchers(self) -> None:
        with self.prefect():
            for _ in range(RUNS):
                run_deployment(DISPATCHER, parameters={"batch_size": BATCH}, timeout=0,
                               as_subflow=False)

    def workers_of(self, run_ids: set[str]) -> dict[str, str]:
        """flow run id -> the name of the worker that ran it (Prefect's run label)."""
        with self.prefect(), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(r) for r in run_ids])))
        return {str(r.id): str(r.labels.get("prefect.worker.name")) for r in runs}


def in_flight(engine: EngineSide, worker_pid: int) -> list[str]:
    """Requests decided, not delivered, whose live claim a process below ``worker_pid`` holds."""
    family = {str(p) for p in descendants(worker_pid)}
    with Session(engine.ledger) as session:
        held = session.execute(select(col(RequestStatus.request_id),
                                      col(RequestStatus.claimed_by)).where(
            col(RequestStatus.state) == "decided",
            col(RequestStatus.claimed_until) > datetime.now(UTC))).all()
    return [r for r, by in held if by and by.rpartition(":")[2] in family]


def kill_tree(pid: int) -> None:
    """SIGKILL a worker's process group and every process below it (its flow runs)."""
    family = descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    for member in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def test_two_workers_share_the_queue_and_a_killed_one_loses_nothing(
        tmp_path: Path, databases: tuple[URL, URL]) -> None:
    ledger_url, prefect_url = databases
    data_dir = tmp_path / "var"
    settings = load_settings(data_dir=data_dir,
                             database_url=ledger_url.render_as_string(hide_password=False))
    register = make_register_engine(settings.resolved_register_url)
    ensure_register(engine=register, persons=700, seed=11)
    subjects = sample_subjects(engine=register, count=2 * PER_PHASE + 1, seed=11, shielded=False)
    register.dispose()
    ledger = open_ledger(settings)  # migrated, with the key ring the cluster will use
    with Session(ledger) as session, session.begin():
        key = issue_key(session=session, partner_id=PARTNER, issued_at=datetime.now(UTC),
                        issued_by="test").key
    ledger.dispose()

    cluster = start_cluster(data_dir, ledger_url, prefect_url)
    engine = EngineSide(settings, cluster)

    def logs() -> str:
        return cluster.logs(data_dir / "logs")

    try:
        engine.pause_sweepers()
        (worker_1, pid_1), (worker_2, _) = sorted(cluster.workers.items())

        # 1. both workers work the queue; every request once. The runs are started first: the
        # watch starts no other while they are on their way, and they claim from the queue only
        # once their processes are up, seconds after the requests are in.
        engine.start_dispatchers()
        first = engine.submit([(f"SCALE-A-{i}", s) for i, s in enumerate(subjects[:PER_PHASE])])
        wait_until("phase 1 delivered",
                   lambda: engine.states(first)["delivered"] == len(first), 120,
                   lambda: f"{engine.states(first)}\n{logs()}")
        engine.assert_delivered_once(first)
        decided_by = engine.run_ids(DecisionRow, first)
        by_worker = Counter(engine.workers_of(set(decided_by.values())).get(run) for run in
                            decided_by.values())
        assert set(by_worker) == {worker_1, worker_2}, by_worker
        print(f"\nphase 1: {len(first)} requests, decided by worker: {dict(by_worker)}")

        # 2. worker 1 killed while it holds decided requests; nothing lost, nothing twice
        engine.start_dispatchers()
        second = engine.submit([(f"SCALE-B-{i}", s)
                                for i, s in enumerate(subjects[PER_PHASE:2 * PER_PHASE])])
        held = wait_until("worker 1 holding decided requests", lambda: in_flight(engine, pid_1),
                          90, logs)
        kill_tree(pid_1)
        killed_at = time.monotonic()
        answer = requests.post(
            f"{cluster.intake_url}/v1/requests", json=body("SCALE-C-0", subjects[-1]),
            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 202, answer.text
        everything = first + second + [answer.json()["id"]]
        wait_until("every request delivered after the kill",
                   lambda: engine.states(everything)["delivered"] == len(everything),
                   RECOVERY_BOUND_S, lambda: f"{engine.states(everything)}\n{logs()}")
        recovered = time.monotonic() - killed_at
        engine.assert_delivered_once(everything)
        delivered_by = engine.workers_of(set(engine.run_ids(DeliveryRow, held).values()))
        assert set(delivered_by.values()) == {worker_2}, delivered_by
        assert f"Worker {worker_1} stopped" in cluster.output()
        assert cluster.process.poll() is None, logs()
        print(f"phase 2: worker 1 killed holding {len(held)} decided requests; all "
              f"{len(everything)} delivered once, {recovered:.1f} s after the kill "
              f"(bound {RECOVERY_BOUND_S} s)")

        verify = subprocess.run(
            [sys.executable, "-m", "cli.main", "audit", "verify", "--json"], cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith(("DISCLOSURE_",
                                                                          "PREFECT_"))}
            | {"DISCLOSURE_DATA_DIR": str(data_dir),
               "DISCLOSURE_DATABASE_URL": ledger_url.render_as_string(hide_password=False)},
            capture_output=True, text=True, timeout=120, check=False)
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    finally:
        left = stop_cluster(cluster)
        engine.ledger.dispose()
    assert cluster.process.returncode in (0, 143), cluster.output()[-3000:]
    assert left == [], f"processes left running after SIGTERM: {left}"
