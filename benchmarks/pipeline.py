"""Benchmark of the pipeline on the embedded set-up: a real Prefect server and flow server.

    .venv/bin/python benchmarks/pipeline.py [--requests 1000] [--singles 5] [--jsonl]

In a fresh temporary data folder it seeds a register, starts a local Prefect server on SQLite
and ``disclosure serve``, then measures

* drop-off to delivered for one request at a time (median of ``--singles``), with the drop-off
  run started at once as ``disclosure up`` does (a request that waits for the sweeper instead
  waits up to DROPOFF_SWEEP_SECONDS longer);
* ``--requests`` single-subject requests dropped at once (one file each, or one JSONL batch with
  ``--jsonl``): seconds until every one is delivered, and requests per second.

Target (issue 3): 1,000 requests delivered within 60 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session, col

from cli.local_prefect import flow_server, local_server
from connectors.register import make_register_engine
from connectors.register_seed import ensure_register, sample_subjects, set_shielded
from flows.starts import DROPOFF
from records.db import open_ledger
from records.models import RequestRow, RequestStatus
from records.settings import load_settings

PARTNER, GROUND, PURPOSE = "svb", "suwi-54-svb", "kinderbijslag"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(reference: str, subject: object) -> dict[str, object]:
    return {"reference": reference, "legal_basis": GROUND, "purpose": PURPOSE,
            "subjects": [{subject.id_type.value: subject.number}],  # type: ignore[attr-defined]
            "categories": ["personalia", "opleidingsgegevens"]}


def delivered_count(engine: object, prefix: str) -> int:
    with Session(engine) as session:  # type: ignore[arg-type]
        return int(session.execute(
            select(func.count()).select_from(RequestRow)
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .where(col(RequestRow.reference).startswith(prefix),
                   col(RequestStatus.state) == "delivered")).scalar_one())


def trigger_dropoff(api_url: str) -> None:
    from prefect.deployments import run_deployment  # noqa: PLC0415
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        run_deployment(DROPOFF, timeout=0, as_subflow=False)


def wait_delivered(engine: object, prefix: str, count: int, timeout: float) -> float:
    start = time.monotonic()
    while delivered_count(engine, prefix) < count:
        if time.monotonic() - start > timeout:
            raise SystemExit(f"only {delivered_count(engine, prefix)}/{count} delivered after "
                             f"{timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--jsonl", action="store_true")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="disclosure-bench-"))
    os.environ["DISCLOSURE_DATA_DIR"] = str(data)
    settings = load_settings()
    register = make_register_engine(settings.resolved_register_url)
    ensure_register(engine=register, persons=args.requests + args.singles + 100, seed=7)
    subjects = sample_subjects(engine=register, count=args.requests + args.singles, seed=7)
    set_shielded(engine=register, subjects=subjects, shielded=False)
    ledger = open_ledger(settings)
    folder = settings.resolved_dropoff_dir / PARTNER
    folder.mkdir(parents=True, exist_ok=True)
    home, logs = data / "prefect", data / "logs"
    with local_server(port=free_port(), home=home, log_dir=logs) as api_url, \
            flow_server(api_url=api_url, home=home, log_dir=logs):
        time.sleep(8)  # the flow server registers its deployments
        singles = []
        for i in range(args.singles):
            (folder / f".s{i}.tmp").write_text(json.dumps(request(f"S{i}-", subjects[i])))
            start = time.monotonic()
            (folder / f".s{i}.tmp").rename(folder / f"s{i}.json")
            trigger_dropoff(api_url)
            wait_delivered(ledger, f"S{i}-", 1, 120)
            singles.append(time.monotonic() - start)
        print(f"drop-off to delivered, one request: median {statistics.median(singles):.1f} s "
              f"(runs: {', '.join(f'{s:.1f}' for s in singles)})")
        batch = subjects[args.singles:]
        start = time.monotonic()
        if args.jsonl:
            lines = "\n".join(json.dumps(request(f"B-{i}", s)) for i, s in enumerate(batch))
            (folder / ".batch.tmp").write_text(lines + "\n")
            (folder / ".batch.tmp").rename(folder / "batch.jsonl")
        else:
            for i, subject in enumerate(batch):
                (folder / f".b{i}.tmp").write_text(json.dumps(request(f"B-{i}", subject)))
                (folder / f".b{i}.tmp").rename(folder / f"b{i}.json")
        trigger_dropoff(api_url)
        wait_delivered(ledger, "B-", len(batch), 600)
        elapsed = time.monotonic() - start
        kind = "one JSONL file" if args.jsonl else "one file each"
        print(f"{len(batch)} requests dropped at once ({kind}): all delivered in {elapsed:.1f} s "
              f"= {len(batch) / elapsed:.1f} requests/s (target: 1,000 within 60 s)")
    print(f"data folder: {data}")


if __name__ == "__main__":
    main()
