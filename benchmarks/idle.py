"""Benchmark 3 (issue 12): an idle hour compressed, and the pick-up delay of an arrival.

    .venv/bin/python benchmarks/idle.py [--minutes 5] [--scale 60] [--arrivals 6] [--gap 8]

In a fresh temporary data folder it seeds a register, starts a local Prefect server on SQLite
(as ``disclosure up`` does) and measures in two phases:

1. **Pick-up.** ``disclosure serve`` as shipped (its watch, its real schedules). ``--arrivals``
   times, after ``--gap`` seconds with nothing to do, a request arrives — alternately recorded in
   the ledger as the intake API records it (but without the API's nudge: what the watch must
   find) and dropped off as a file — and the time until it is taken in (a drop-off) and decided
   is measured, split into: arrival → run created (the watch), created → pending (the flow
   server's poll), pending → running (the flow-run process starting), running → decided.
2. **Idle.** ``serve`` again, with every sweeper interval divided by ``--scale`` (the same code;
   only the two numbers changed in the served process), and nothing to do for ``--minutes``. Runs
   are counted by kind: a scheduled run (the safety net) stands for ``--scale`` times as much
   idle time as it took here, so scheduled runs per idle hour = count / (minutes × scale / 60);
   any other run (the watch, a nudge) happens on the real clock: per hour = count / (minutes /
   60). The nightly verification (a cron, not scaled) adds 1/24 per hour. Runs at the start of
   ``serve`` (its start-up dispatcher run) are per start, not per hour, and reported apart.

Target (issue 12): ≤ 2 flow runs per idle hour, pick-up ≤ 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import Session, col, select

from cli.local_prefect import local_server, prefect_env
from connectors.partners import load_partners
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register, sample_subjects, set_shielded
from flows.runtime import EXAMPLES_DIR
from legal_bases import limits
from legal_bases.request import read_request
from records.db import open_ledger
from records.ledger import received_on, record_submission
from records.models import DecisionRow, RequestRow
from records.pseudonym import Pseudonymizer
from records.settings import load_settings
from records.vocabulary import Channel

PARTNER, GROUND, PURPOSE = "svb", "suwi-54-svb", "kinderbijslag"
ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(reference: str, subject: Any) -> dict[str, Any]:
    return {"reference": reference, "legal_basis": GROUND, "purpose": PURPOSE,
            "subjects": [{subject.id_type.value: subject.number}],
            "categories": ["personalia", "opleidingsgegevens"]}


@contextmanager
def serving(api_url: str, home: Path, log: Path, scale: int = 1) -> Iterator[None]:
    """``disclosure serve``, with the sweepers' intervals divided by ``scale``."""
    code = ("from legal_bases import limits\n"
            f"limits.DISPATCH_SWEEP_SECONDS //= {scale}\n"
            f"limits.DROPOFF_SWEEP_SECONDS //= {scale}\n"
            "from flows.deployments import serve_all\n"
            "serve_all()\n")
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out,  # noqa: S603
                                   stderr=subprocess.STDOUT,
                                   env=prefect_env(api_url=api_url, home=home))
    try:
        yield
    finally:
        process.terminate()
        process.wait(60)


def all_runs(api_url: str) -> list[tuple[str, FlowRun]]:
    """Every flow run on the server, with its flow's name."""
    found: list[FlowRun] = []
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        while page := client.read_flow_runs(limit=200, offset=len(found)):
            found += page
        flows = {f.id: f.name for f in client.read_flows(limit=50)}
    return [(flows.get(r.flow_id, "?"), r) for r in found]


def settled(api_url: str, after: set[Any] | None = None) -> bool:
    """The start-up run of the ``serve`` started after the runs ``after`` ended, and no run due
    by now that has not ended (a suspended review run aside)."""
    now = datetime.now(UTC)
    runs = [r for _, r in all_runs(api_url)]
    started_up = [r for r in runs if (r.idempotency_key or "").startswith("start-")
                  and r.id not in (after or set()) and r.state is not None
                  and r.state.is_final()]
    return bool(started_up) and not [
        r for r in runs if r.state is not None and not r.state.is_final()
        and not r.state.is_paused() and r.expected_start_time is not None
        and r.expected_start_time <= now]


def pending_at(api_url: str, run_id: Any) -> datetime | None:
    """When the flow server took the run (its state went Pending)."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            get_client(sync_client=True) as client:
        states = client.read_flow_run_states(run_id)
    return min((s.timestamp for s in states if s.type.value == "PENDING"), default=None)


def wait(what: str, probe: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


def decision_of(ledger: Any, reference: str) -> tuple[RequestRow, DecisionRow] | None:
    with Session(ledger) as session:
        row = session.execute(select(RequestRow, DecisionRow)  # type: ignore[call-overload]
                              .join(DecisionRow, col(DecisionRow.request_id) == col(RequestRow.id))
                              .where(col(RequestRow.reference) == reference)).first()
    return None if row is None else (row[0], row[1])


def taken_in(ledger: Any, reference: str) -> RequestRow | None:
    with Session(ledger) as session:
        return session.execute(select(RequestRow).where(
            col(RequestRow.reference) == reference)).scalars().first()


def arrive(kind: str, reference: str, subject: Any, *, ledger: Any, settings: Any,
           pseudonymizer: Pseudonymizer) -> datetime:
    """One request arrives: recorded as the intake API records it, or dropped off as a file."""
    body = json.dumps(request(reference, subject))
    if kind == "dropoff":
        folder = settings.resolved_dropoff_dir / PARTNER
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".{reference}.part").write_text(body)
        (folder / f".{reference}.part").rename(folder / f"{reference}.json")
        return datetime.fromtimestamp((folder / f"{reference}.json").stat().st_mtime, UTC)
    now = datetime.now(UTC)
    partner_body = load_partners(EXAMPLES_DIR / "partners.yaml").by_id(PARTNER).body.value
    with Session(ledger, expire_on_commit=False) as session, session.begin():
        record_submission(session=session, partner_id=PARTNER, requester_body=partner_body,
                          channel=Channel.API, raw_body=body,
                          parsed=read_request(json.loads(body), received_on=received_on(now)),
                          received_at=now, pseudonymizer=pseudonymizer)
    return now


def pickup(args: argparse.Namespace, api_url: str, ledger: Any, settings: Any,
           subjects: list[Any]) -> None:
    pseudonymizer = Pseudonymizer.from_settings(settings)
    rows: dict[str, list[dict[str, float]]] = {"ledger": [], "dropoff": []}
    for i in range(args.arrivals):
        kind = ("ledger", "dropoff")[i % 2]
        wait("the engine to be idle", lambda: settled(api_url))
        time.sleep(args.gap)
        reference = f"IDLE-{kind}-{i}"
        arrived = arrive(kind, reference, subjects[i], ledger=ledger, settings=settings,
                         pseudonymizer=pseudonymizer)
        request_row, decision = wait(f"{reference} decided",
                                     lambda r=reference: decision_of(ledger, r), 60)
        runs = {str(r.id): r for _, r in all_runs(api_url)}
        run = runs[decision.flow_run_id or ""]
        # the first run that answered the arrival (the drop-off run for a file)
        first = min(r.created for r in runs.values()
                    if r.created and r.created >= arrived - timedelta(seconds=1))
        assert run.created is not None
        assert run.start_time is not None
        pending = pending_at(api_url, run.id) or run.start_time
        row = {"decided": (decision.decided_at - arrived).total_seconds(),
               "run_created": (first - arrived).total_seconds(),
               "created_to_pending": (pending - run.created).total_seconds(),
               "pending_to_running": (run.start_time - pending).total_seconds(),
               "running_to_decided": (decision.decided_at - run.start_time).total_seconds()}
        if kind == "dropoff":
            row["taken_in"] = (request_row.received_at - arrived).total_seconds()
        by = "schedule" if run.auto_scheduled else (run.idempotency_key or "?").split("-")[0]
        print(f"  {kind:8s} " + "  ".join(f"{k}={v:.1f}s" for k, v in row.items())
              + f"  (decided by a run of: {by})", flush=True)
        rows[kind].append(row)
    for kind, found in rows.items():
        if not found:
            continue
        for figure in ("taken_in", "decided"):
            values = [r[figure] for r in found if figure in r]
            if values:
                print(f"pick-up, {kind}, arrival → {figure.replace('_', ' ')}: median "
                      f"{statistics.median(values):.1f} s, max {max(values):.1f} s "
                      f"(n={len(values)}; target ≤ 5 s)")
        for part, said in [("run_created", "arrival → first run asked for (the watch)"),
                           ("created_to_pending", "deciding run asked for → taken by serve"),
                           ("pending_to_running", "taken → its process running"),
                           ("running_to_decided", "running → decided")]:
            values = [r[part] for r in found]
            print(f"    where it goes, {said}: median {statistics.median(values):.1f} s, "
                  f"max {max(values):.1f} s")


def idle(args: argparse.Namespace, api_url: str, before: set[Any]) -> None:
    wait("the start-up runs to end", lambda: settled(api_url, before))
    time.sleep(3)
    since = datetime.now(UTC)
    window = args.minutes * 60
    time.sleep(window)
    runs = [(flow, r) for flow, r in all_runs(api_url)
            if (r.start_time is not None and r.start_time >= since)
            or (r.created is not None and r.created >= since and not r.auto_scheduled)]
    scheduled = Counter(flow for flow, r in runs if r.auto_scheduled)
    other = Counter(flow for flow, r in runs if not r.auto_scheduled)
    idle_hours = window * args.scale / 3600
    per_hour = sum(scheduled.values()) / idle_hours + sum(other.values()) / (window / 3600)
    per_hour += 1 / 24  # the nightly verification (cron, not scaled)
    print(f"idle {args.minutes:g} min with intervals ÷{args.scale} = {idle_hours:.1f} idle "
          f"hours: scheduled runs {dict(scheduled) or 0}, other runs {dict(other) or 0}")
    expected = 3600 / limits.DISPATCH_SWEEP_SECONDS + 3600 / limits.DROPOFF_SWEEP_SECONDS + 1 / 24
    print(f"flow runs per idle hour: {per_hour:.2f} (target ≤ 2; expected {expected:.2f}"
          f" = 3600/{limits.DISPATCH_SWEEP_SECONDS} + 3600/{limits.DROPOFF_SWEEP_SECONDS} "
          "+ 1/24); per quiet day: "
          f"{round(per_hour * 24)} runs, plus 1 per start of serve")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5, help="idle phase, real minutes")
    parser.add_argument("--scale", type=int, default=60,
                        help="divide the sweepers' intervals by this in the idle phase")
    parser.add_argument("--arrivals", type=int, default=6)
    parser.add_argument("--gap", type=float, default=8,
                        help="seconds of nothing to do before each arrival")
    args = parser.parse_args()
    print("$ " + shlex.join([".venv/bin/python", "benchmarks/idle.py", *sys.argv[1:]]),
          flush=True)
    data = Path(tempfile.mkdtemp(prefix="disclosure-idle-"))
    os.environ["DISCLOSURE_DATA_DIR"] = str(data)
    settings = load_settings()
    register = make_register_engine(settings.resolved_register_url)
    ensure_register(engine=register, persons=200, seed=7)
    subjects = sample_subjects(engine=register, count=args.arrivals, seed=7)
    set_shielded(engine=register, subjects=subjects, shielded=False)
    ledger = open_ledger(settings)
    home, logs = data / "prefect", data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with local_server(port=free_port(), home=home, log_dir=logs) as api_url:
        print(f"phase 1: pick-up, disclosure serve as shipped (watch every "
              f"{limits.WATCH_SECONDS:g} s)", flush=True)
        with serving(api_url, home, logs / "serve.log"):
            pickup(args, api_url, ledger, settings, subjects)
        print(f"phase 2: idle, intervals {limits.DISPATCH_SWEEP_SECONDS} s and "
              f"{limits.DROPOFF_SWEEP_SECONDS} s ÷ {args.scale}", flush=True)
        before = {r.id for _, r in all_runs(api_url)}
        with serving(api_url, home, logs / "serve-scaled.log", scale=args.scale):
            idle(args, api_url, before)
        started = [flow for flow, r in all_runs(api_url) if r.id not in before
                   and not r.auto_scheduled and (r.idempotency_key or "").startswith("start-")]
        print(f"at the start of serve: {len(started)} run(s) {started}")
    print(f"data folder: {data}")


if __name__ == "__main__":
    main()
