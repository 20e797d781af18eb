"""Benchmark of the pipeline scaled out: single-subject requests through the intake API, delivered.

    .venv/bin/python benchmarks/pipeline_scale.py [--requests 5000] [--repeat 2]
        [--configurations sqlite-serve,pg-1,pg-2] [--clients 20] [--partners 20]
        [--postgres postgresql://postgres@127.0.0.1:5432]

Each configuration starts in a fresh temporary data folder (and fresh PostgreSQL databases):

* ``sqlite-serve``: the embedded set-up, as ``disclosure up`` runs it — a Prefect server on
  SQLite, one served process (``disclosure serve``), the ledger on SQLite, the intake API
  (``disclosure api``) in a process of its own;
* ``pg-1``, ``pg-2``: ``disclosure cluster up --workers 1|2`` — the Prefect server and the
  ledger on PostgreSQL, the work pool of ``prefect.yaml``, one or two Prefect workers, the API.

Then ``--requests`` requests (one subject each, SVB on suwi-54-svb: approved, delivered as a
file) are posted by ``--clients`` keep-alive connections of ``--partners`` partners as fast as
the API takes them; the API nudges the dispatcher as in production. The figures come from the
ledger: requests per second end to end (requests / from the first received to the last
delivered) and the time from received to delivered (p50, p99, max); beside them the API's
accept rate, the dispatcher runs (per worker), the CPU seconds each kind of process used during
the run (where the time goes) and the dispatcher's task time per task, read back from Prefect.

Target (issue 12): at least 200 requests per second end to end in the best configuration, p99
received → delivered at most 30 s, on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col

from cli.cluster import child, descendants, ensure_database
from cli.local_prefect import flow_server, local_server
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register, sample_subjects
from flows.runtime import open_ledger
from records.api_keys import issue_key
from records.db import make_engine
from records.models import DeliveryRow, RequestRow
from records.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
BODY = {"legal_basis": "suwi-54-svb", "purpose": "kinderbijslag",
        "categories": ["personalia", "opleidingsgegevens"]}
CONFIGURATIONS = ("sqlite-serve", "pg-1", "pg-2")
START_TIMEOUT_S = 300
DELIVER_TIMEOUT_S = 1800


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(what: str, probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


# -- CPU per kind of process (Linux /proc) --------------------------------------------------------

def _stat(pid: int) -> tuple[str, float] | None:
    """(command line, CPU seconds of the process and of its children it reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return cmdline, ticks / os.sysconf("SC_CLK_TCK")


def role(cmdline: str) -> str:
    if "server start" in cmdline or "prefect.server" in cmdline:
        return "prefect server"
    if "worker start" in cmdline or " serve" in cmdline or "prefect.engine" in cmdline:
        return "flow runs (workers / serve)"
    if "cli.main api" in cmdline:
        return "intake API"
    if "cli.main watch" in cmdline:
        return "watch"
    if "cluster up" in cmdline:
        return "cluster supervisor"
    return f"other: {cmdline[:60]}" if os.environ.get("BENCH_SHOW_OTHER") else "other"


def cpu_by_role() -> Counter[str]:
    found: Counter[str] = Counter()
    for pid in descendants(os.getpid()):
        stat = _stat(pid)
        if stat is not None:
            found[role(stat[0])] += stat[1]
    for proc in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(proc.name))
        if stat is not None and stat[0].startswith("postgres"):
            found["postgresql (all)"] += stat[1]
    found["load generator (this process)"] += sum(os.times()[:2])
    return found


# -- the systems ----------------------------------------------------------------------------------

@dataclass
class System:
    intake_url: str
    prefect_url: str


def engine_env(folder: Path, database_url: str | None, persons: int) -> dict[str, str]:
    env = {"DISCLOSURE_DATA_DIR": str(folder), "DISCLOSURE_PARTNERS_FILE":
           str(folder / "partners.yaml"), "DISCLOSURE_REGISTER_PERSONS": str(persons)}
    return env | ({"DISCLOSURE_DATABASE_URL": database_url} if database_url else {})


def sqlite_serve(folder: Path, stack: ExitStack) -> System:
    """A Prefect server on SQLite, ``disclosure serve`` and ``disclosure api``, on ``stack``."""
    home, logs = folder / "prefect", folder / "logs"
    api_url = stack.enter_context(local_server(port=free_port(), home=home, log_dir=logs))
    stack.enter_context(flow_server(api_url=api_url, home=home, log_dir=logs))
    wait("the deployments", lambda: answers(
        f"{api_url}/deployments/name/process-requests/disclosure"), START_TIMEOUT_S)
    port = free_port()
    stack.enter_context(child([sys.executable, "-m", "cli.main", "api", "--port", str(port),
                               "--prefect-api-url", api_url], env=dict(os.environ),
                              log=logs / "api.log"))
    wait("the intake API", lambda: answers(f"http://127.0.0.1:{port}/healthz"), START_TIMEOUT_S)
    return System(f"http://127.0.0.1:{port}", api_url)


def cluster(folder: Path, stack: ExitStack, *, workers: int, ledger: str,
            prefect_db: str) -> System:
    """``disclosure cluster up --workers N``, on ``stack``."""
    port, api_port = free_port(), free_port()
    log = folder / "cluster.log"
    process = stack.enter_context(child(
        [sys.executable, "-m", "cli.main", "cluster", "up", "--workers", str(workers), "--port",
         str(port), "--api-port", str(api_port), "--database-url", ledger,
         "--prefect-database-url", prefect_db], env=dict(os.environ), log=log))
    wait("disclosure cluster up", lambda: process.poll() is not None or
         "Serving until interrupted" in log.read_text(), START_TIMEOUT_S)
    if process.poll() is not None:
        raise SystemExit(f"disclosure cluster up stopped:\n{log.read_text()[-3000:]}")
    return System(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{port}/api")


# -- the load -------------------------------------------------------------------------------------

@dataclass
class Load:
    port: int
    run: str
    total: int
    subjects: list[dict[str, str]]
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    statuses: Counter[int] = field(default_factory=Counter)


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                request: bytes) -> tuple[int, float]:
    writer.write(request)
    status_line = await reader.readline()
    length, retry = 0, 0.0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "retry-after":
            retry = float(value)
    await reader.readexactly(length)
    return int(status_line.split()[1]), retry


async def _client(load: Load, key: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
    try:
        while (n := next(load.numbers)) < load.total:
            body = json.dumps({"reference": f"{load.run}-{n}",
                               "subjects": [load.subjects[n % len(load.subjects)]],
                               **BODY}).encode()
            head = (f"POST /v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                    f"{key}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                    "\r\n\r\n").encode()
            while True:
                status, retry = await _post(reader, writer, head + body)
                load.statuses[status] += 1
                if status not in (429, 503):
                    break
                await asyncio.sleep(retry or 0.5)  # the same request again, as a partner would
    finally:
        writer.close()


async def post_all(load: Load, keys: list[str], clients: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(_client(load, keys[i % len(keys)]) for i in range(clients)))
    return time.perf_counter() - start


# -- one measurement ------------------------------------------------------------------------------

def prepare(folder: Path, partners: int, persons: int) -> tuple[list[str], list[dict[str, str]]]:
    """Partners with a key each, a seeded register; (keys, subjects as a request names them)."""
    lines = []
    for i in range(partners):
        lines += [f"- id: bench-{i}", f"  name: Benchmark partner {i}", "  body: svb",
                  f'  oin: "00000099{900000000000 + i}"']
    (folder / "partners.yaml").write_text("\n".join(lines) + "\n", "utf-8")
    settings = load_settings()
    register = make_register_engine(settings.resolved_register_url)
    ensure_register(engine=register, persons=persons, seed=7)
    subjects = [{s.id_type.value: s.number} for s in
                sample_subjects(engine=register, count=persons // 2, seed=7, shielded=False)]
    register.dispose()
    ledger = open_ledger(settings)
    with Session(ledger) as session, session.begin():
        keys = [issue_key(session=session, partner_id=f"bench-{i}",
                          issued_at=datetime.now(UTC), issued_by="benchmark").key
                for i in range(partners)]
    ledger.dispose()
    return keys, subjects


def delivered(engine: Any, run: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(
            "SELECT count(*) FROM request_status s JOIN requests r ON r.id = s.request_id "
            "WHERE r.reference LIKE :p AND s.state = 'delivered'"), {"p": f"{run}-%"}).scalar_one())


def timings(engine: Any, run: str) -> list[tuple[datetime, datetime]]:
    with Session(engine) as session:
        rows = session.execute(
            select(col(RequestRow.received_at), col(DeliveryRow.delivered_at))
            .join(DeliveryRow, col(DeliveryRow.request_id) == col(RequestRow.id))
            .where(col(RequestRow.reference).startswith(f"{run}-"))).all()
    return [(_utc(a), _utc(b)) for a, b in rows]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def dispatcher_runs(prefect_url: str, since: datetime) -> tuple[Counter[str], dict[str, float]]:
    """(dispatcher runs per worker, seconds per task name) since ``since``, from Prefect."""
    with temporary_settings(updates={PREFECT_API_URL: prefect_url}), \
            get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["process-requests"])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)))
        ran = [r for r in runs if r.total_run_time.total_seconds() > 0]
        per_worker = Counter(str(r.labels.get("prefect.worker.name", "served process"))
                             for r in ran)
        tasks: dict[str, float] = defaultdict(float)
        ids = FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in ran]))
        for offset in itertools.count(0, 200) if ran else ():
            page = client.read_task_runs(flow_run_filter=ids, offset=offset, limit=200)
            for task in page:
                tasks[task.name.rsplit("-", 1)[0]] += task.total_run_time.total_seconds()
            if len(page) < 200:
                break
        tasks["(dispatcher runs, wall)"] = sum(r.total_run_time.total_seconds() for r in ran)
    return per_worker, dict(tasks)


def measure(configuration: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{configuration}-"))
    saved = dict(os.environ)
    databases: list[Any] = []
    ledger_url = prefect_db = None
    if configuration.startswith("pg"):
        name = f"bench_{uuid.uuid4().hex[:10]}"
        server = make_url(args.postgres)
        ledger = server.set(drivername="postgresql+psycopg", database=name)
        prefect = server.set(drivername="postgresql+asyncpg", database=f"{name}_prefect")
        for url in (ledger, prefect):
            ensure_database(url)
        databases = [ledger, prefect]
        ledger_url, prefect_db = (u.render_as_string(hide_password=False) for u in databases)
    for variable in [v for v in os.environ if v.startswith(("DISCLOSURE_", "PREFECT_"))]:
        del os.environ[variable]
    os.environ.update(engine_env(folder, ledger_url, args.persons))
    try:
        keys, subjects = prepare(folder, args.partners, args.persons)
        ledger = make_engine(load_settings().resolved_database_url)
        with ExitStack() as stack:
            if configuration == "sqlite-serve":
                system = sqlite_serve(folder, stack)
            else:
                system = cluster(folder, stack, workers=int(configuration[-1]),
                                 ledger=str(ledger_url), prefect_db=str(prefect_db))
            run = f"SCALE{int(time.time())}"
            load = Load(int(system.intake_url.rsplit(":", 1)[1]), run, args.requests, subjects)
            since, cpu_before, load_before = datetime.now(UTC), cpu_by_role(), os.getloadavg()
            posting = asyncio.run(post_all(load, keys, args.clients))
            wait("every request delivered", lambda: delivered(ledger, run) >= args.requests,
                 DELIVER_TIMEOUT_S)
            cpu = cpu_by_role() - cpu_before
            time.sleep(5)  # Prefect takes task runs in asynchronously
            per_worker, tasks = dispatcher_runs(system.prefect_url, since)
        pairs = timings(ledger, run)
        ledger.dispose()
        waits = [(d - r).total_seconds() for r, d in pairs]
        span = (max(d for _, d in pairs) - min(r for r, _ in pairs)).total_seconds()
        return {"configuration": configuration, "requests": len(pairs), "seconds": span,
                "per_second": len(pairs) / span, "p50": pct(waits, 50), "p99": pct(waits, 99),
                "max": max(waits), "mean": statistics.fmean(waits),
                "accepted_per_second": load.statuses[202] / posting,
                "statuses": dict(load.statuses), "runs": dict(per_worker), "tasks": tasks,
                "cpu": {k: round(v, 1) for k, v in cpu.most_common() if v > 0.05},
                "load_before": load_before, "load_after": os.getloadavg()}
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if databases:
            admin = make_engine(make_url(args.postgres).set(drivername="postgresql+psycopg",
                                                             database="postgres"))
            with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                for url in databases:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            admin.dispose()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def report(result: dict[str, Any]) -> None:
    r = result
    print(f"{r['configuration']:<13} {r['requests']} delivered in {r['seconds']:.1f} s = "
          f"{r['per_second']:.0f} requests/s end to end; received → delivered p50 "
          f"{r['p50']:.1f} s, p99 {r['p99']:.1f} s, max {r['max']:.1f} s; API accepted "
          f"{r['accepted_per_second']:.0f}/s {r['statuses']}; load "
          f"{r['load_before'][0]:.2f} → {r['load_after'][0]:.2f}", flush=True)
    print(f"{'':<13} dispatcher runs: {r['runs']}; CPU s: {r['cpu']}")
    print(f"{'':<13} dispatcher task seconds: "
          f"{ {k: round(v, 1) for k, v in sorted(r['tasks'].items(), key=lambda i: -i[1])} }",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--partners", type=int, default=20)
    parser.add_argument("--persons", type=int, default=3000, help="register size")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="the PostgreSQL server the pg configurations create databases on")
    parser.add_argument("--keep", action="store_true", help="keep the data folders")
    args = parser.parse_args()
    chosen = args.configurations.split(",")
    if unknown := set(chosen) - set(CONFIGURATIONS):
        parser.error(f"unknown configurations {sorted(unknown)}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # noqa: S607
    print(f"uptime: {uptime.stdout.strip()}", flush=True)
    results = []
    for _ in range(args.repeat):  # interleaved, so every configuration sees the same noise
        for configuration in chosen:
            results.append(measure(configuration, args))
            report(results[-1])
    print("\nsummary (median of the runs):")
    for configuration in chosen:
        mine = [r for r in results if r["configuration"] == configuration]
        rates = ", ".join(f"{r['per_second']:.0f}" for r in mine)
        p99s = ", ".join(f"{r['p99']:.1f}" for r in mine)
        print(f"  {configuration:<13} "
              f"{statistics.median(r['per_second'] for r in mine):.0f} requests/s ({rates}), "
              f"p99 received → delivered {statistics.median(r['p99'] for r in mine):.1f} s "
              f"({p99s})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
