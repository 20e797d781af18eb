"""Benchmark of one bulk request through the real flows: the reviewer's approval to delivered.

    .venv/bin/python benchmarks/bulk.py [--subjects 100000] [--persons 200000]

In a fresh temporary data folder it seeds a register of ``--persons`` persons, starts a local
Prefect server on SQLite and ``disclosure serve`` (as ``disclosure up`` does), drops one CBS
request (cbs-33, two categories) naming ``--subjects`` unshielded persons — more than the
ground's automatic limit, so it waits for a reviewer — and approves it through the review run's
form as a reviewer would (``resume_flow_run`` with a current one-time code). It measures

* wall time from the approval to the request's state ``delivered`` (file-drop delivery, in
  parts with a manifest: flows/pipeline/bulk.py);
* the peak resident memory of every process of the set-up (sampled from /proc every 0.2 s);
* the plain-call floor: the same delivery done again by ``bulk.deliver_in_parts`` in this
  process, into a fresh folder, without Prefect — and the ratio of the two.

Targets (issue 12): ≤ 60 s, every process ≤ 1 GiB, ≤ 1.5× the plain-call floor.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.flow_runs import resume_flow_run
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import select
from sqlmodel import Session, col

from cli.local_prefect import flow_server, local_server
from connectors.destinations import FileDrop
from connectors.partners import load_partners
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register, sample_subjects, set_shielded
from flows.pipeline import bulk, deliver
from flows.runtime import Runtime
from flows.starts import DROPOFF
from records.db import open_ledger
from records.models import AuditEvent, DecisionRow, RequestRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.reviews import enroll_reviewer
from records.settings import load_settings
from records.totp import SecretSeal, code_at, step_of

EXAMPLES = Path(__file__).parents[1] / "examples"
MOTIVATION = "Statistical research under CBS-wet art. 33; the whole cohort is needed."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PeakMemory:
    """Samples the resident memory of this process's descendants; keeps each one's peak."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            parents: dict[int, int] = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                        parents[int(entry.name)] = int(stat[1])
                    except (OSError, IndexError, ValueError):
                        continue
            for pid in parents:
                ancestor, hops = pid, 0
                while ancestor not in (me, 0, 1) and hops < 20:
                    ancestor, hops = parents.get(ancestor, 0), hops + 1
                if me not in (ancestor, pid):
                    continue
                try:
                    status = (Path("/proc") / str(pid) / "status").read_text()
                    rss = int(next(line.split()[1] for line in status.splitlines()
                                   if line.startswith("VmRSS:"))) * 1024
                    command = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                except (OSError, StopIteration, ValueError):
                    continue
                name = " ".join(command.decode(errors="replace").split("\0"))[:90]
                if rss > self.peaks.get(pid, (0, ""))[0]:
                    self.peaks[pid] = (rss, name)


def wait(what: str, probe: object, timeout: float) -> None:
    start = time.monotonic()
    while not probe():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def state_of(ledger: object, request_id: str) -> str | None:
    with Session(ledger) as session:  # type: ignore[arg-type]
        status = session.get(RequestStatus, request_id)
        return status.state if status else None


def main() -> None:  # noqa: PLR0915 - one measured walk, in order
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--persons", type=int, default=200_000)
    args = parser.parse_args()
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    data = Path(tempfile.mkdtemp(prefix="disclosure-bulk-"))
    os.environ["DISCLOSURE_DATA_DIR"] = str(data)
    settings = load_settings()
    register = make_register_engine(settings.resolved_register_url)
    started = time.monotonic()
    ensure_register(engine=register, persons=args.persons, seed=7)
    subjects = sample_subjects(engine=register, count=args.subjects, seed=7, shielded=False)
    set_shielded(engine=register, subjects=subjects, shielded=False)
    print(f"register of {args.persons:,} persons seeded in {time.monotonic() - started:.0f} s")
    ledger = open_ledger(settings)
    seal = SecretSeal(settings.pseudonym_key_bytes())
    with Session(ledger) as session, session.begin():
        secret = enroll_reviewer(session=session, reviewer_id="bench", name="Bench Reviewer",
                                 role="jurist", seal=seal, now=datetime.now(UTC))
    body = {"reference": "CBS-BULK-BENCH", "legal_basis": "cbs-33", "purpose": "statistiek",
            "subjects": [{s.id_type.value: s.number} for s in subjects],
            "categories": ["personalia", "opleidingsgegevens"]}
    folder = settings.resolved_dropoff_dir / "cbs"
    folder.mkdir(parents=True, exist_ok=True)
    home, logs = data / "prefect", data / "logs"
    with PeakMemory() as memory, \
            local_server(port=free_port(), home=home, log_dir=logs) as api_url, \
            flow_server(api_url=api_url, home=home, log_dir=logs), \
            temporary_settings(updates={PREFECT_API_URL: api_url}):
        time.sleep(8)  # the flow server registers its deployments
        (folder / ".bulk.tmp").write_text(json.dumps(body))
        dropped = time.monotonic()
        (folder / ".bulk.tmp").rename(folder / "bulk.json")
        run_deployment(DROPOFF, timeout=0, as_subflow=False)

        def waiting_run() -> UUID | None:
            with Session(ledger) as session:
                event = session.execute(select(AuditEvent).where(
                    col(AuditEvent.kind) == "review_run_started")).scalars().first()
            if event is None:
                return None
            run_id = UUID(event.payload["review_run_id"])
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(run_id)
            return run_id if run.state is not None and run.state.is_paused() else None
        wait("the review run to wait on its form", waiting_run, 300)
        run_id = waiting_run()
        assert run_id is not None
        print(f"dropped → waiting for a reviewer: {time.monotonic() - dropped:.1f} s")
        with Session(ledger) as session:
            request_id = session.execute(select(RequestRow.id).where(  # type: ignore[call-overload]
                col(RequestRow.reference) == "CBS-BULK-BENCH")).scalar_one()
        approved = time.monotonic()
        resume_flow_run(run_id, run_input={
            "decision": "approve", "motivation": MOTIVATION, "reviewer_id": "bench",
            "code": code_at(secret, step_of(time.time()))})
        wait("the delivery", lambda: state_of(ledger, request_id) == "delivered", 600)
        wall = time.monotonic() - approved
    parts = len(list((settings.resolved_outbox_dir / "cbs").glob("*-part-*.json")))
    print(f"approval → delivered: {wall:.1f} s ({parts} parts and a manifest; target ≤ 60 s)")
    print("peak resident memory per process (target ≤ 1 GiB each):")
    for rss, name in sorted(memory.peaks.values(), reverse=True)[:8]:
        print(f"  {rss / 2**20:8.0f} MiB  {name}")

    # the plain-call floor: the same parts and manifest, in this process, into a fresh folder
    rt = Runtime(settings=settings, ledger=ledger, register_engine=register,
                 table=settings.ground_table(), partners=load_partners(EXAMPLES / "partners.yaml"),
                 pseudonymizer=Pseudonymizer.from_settings(settings))
    floor_root = data / "floor"
    rt.destination = lambda partner_id: FileDrop(floor_root, partner_id)  # type: ignore[method-assign]
    with Session(ledger, expire_on_commit=False) as session:
        request = session.get(RequestRow, request_id)
        decision = session.execute(select(DecisionRow).where(
            col(DecisionRow.request_id) == request_id).order_by(
            col(DecisionRow.sequence).desc())).scalars().first()
    assert request is not None
    assert decision is not None
    start = time.monotonic()
    parsed = deliver.parse_submission(request)
    version = deliver.table_of(rt, decision).version(decision.ground_version or "")
    bulk.deliver_in_parts(rt, request, decision, parsed=parsed, version=version,  # type: ignore[arg-type]
                          header=deliver.delivery_document(
                              request, decision, version,
                              deliver.FetchResult(records=[], not_found=[], shielded=[])
                          )["disclosure"], flow_run_id=None)
    floor = time.monotonic() - start
    print(f"plain-call floor (parse, fetch, encode, write every part and the manifest): "
          f"{floor:.1f} s; through the flows {wall / floor:.2f}× the floor (target ≤ 1.5×)")
    print(f"data folder: {data}")


if __name__ == "__main__":
    main()
