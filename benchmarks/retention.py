"""Benchmark of what sealing and retention cost: recording submissions (requests/s), replaying
them (requests/s), and shredding them (requests/s), on a SQLite ledger (or ``--postgres URL``).

    .venv/bin/python benchmarks/retention.py [--requests 20000] [--postgres URL]

The submissions are the intake API's: one subject each, recorded 500 per transaction as its
group commit does (:func:`records.submissions.record_submissions`), then the engine's
decisions, then replayed (:func:`records.replay.replay_period`) and, where this version of the
code has retention, shredded as on a day long after their terms
(:func:`records.retention.run_retention`). The script also runs on the code of 0.7.0 (before
sealing), for the figures before: ``PYTHONPATH=<checkout of 0.7.0> python benchmarks/retention.py``
(it leaves out what that version does not have).
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlmodel import Session

from legal_bases.assessment import assess
from legal_bases.identifiers import random_bsn
from legal_bases.request import read_request
from legal_bases.table import load_table
from legal_bases.vocabulary import Body
from records.chain_keys import ChainKey, ChainKeys
from records.db import database_url, make_engine, migrate
from records.decisions import DecisionItem, record_decisions
from records.ledger import received_on
from records.pseudonym import Pseudonymizer
from records.replay import replay_period
from records.submissions import Submission, record_submissions
from records.vocabulary import Channel

KEYS = ChainKeys(current=ChainKey("bench", bytes(32)))
KEKS = ChainKeys(current=ChainKey("bench-kek", bytes(range(32))))
BATCH = 500
DAY = datetime(2026, 3, 2, 9, tzinfo=UTC)


def engine_for(url: str) -> Engine:
    options: dict[str, Any] = {"chain_keys": KEYS}
    if "data_keks" in inspect.signature(make_engine).parameters:
        options["data_keks"] = KEKS
    engine = make_engine(url, **options)
    migrate(engine)
    return engine


def submissions(count: int, rng: random.Random) -> list[Submission]:
    out = []
    for n in range(count):
        body = {"reference": f"BENCH-{n:07d}", "legal_basis": "awr-55",
                "purpose": "belastingheffing", "reference_date": "2026-03-02",
                "subjects": [{"bsn": random_bsn(rng)}], "categories": ["personalia"]}
        raw = json.dumps(body)
        out.append(Submission(partner_id="belastingdienst", requester_body=Body.BELASTINGDIENST,
                              raw_body=raw, parsed=read_request(body, received_on=DAY.date()),
                              received_at=DAY + timedelta(milliseconds=n), data=body,
                              channel=Channel.API))
    return out


def measure(engine: Engine, count: int) -> dict[str, float]:
    rng = random.Random(2026)  # synthetic data, not secrets
    drafts = submissions(count, rng)
    pseudonymizer = Pseudonymizer(bytes(range(32)))
    table = load_table()
    figures: dict[str, float] = {}
    started = time.perf_counter()
    ids: list[str] = []
    for first in range(0, count, BATCH):
        with Session(engine) as session, session.begin():
            ids += [r.request_id for r in record_submissions(
                session=session, submissions=drafts[first:first + BATCH],
                pseudonymizer=pseudonymizer)]
    figures["record_per_s"] = count / (time.perf_counter() - started)
    flow_run = str(uuid.uuid4())
    for first in range(0, count, BATCH):
        with Session(engine) as session, session.begin():
            record_decisions(session=session, table=table, items=[
                DecisionItem(request_id=rid, decision=assess(d.parsed, Body.BELASTINGDIENST,
                                                             table),
                             decided_at=DAY + timedelta(minutes=5), flow_run_id=flow_run)
                for rid, d in zip(ids[first:first + BATCH], drafts[first:first + BATCH],
                                  strict=True)])
    started = time.perf_counter()
    replayed = sum(1 for _ in replay_period(engine, first=received_on(DAY),
                                            last=received_on(DAY)))
    figures["replay_per_s"] = replayed / (time.perf_counter() - started)
    try:
        from legal_bases.accountability import load_accountability  # noqa: PLC0415
        from records.retention import run_retention  # noqa: PLC0415
    except ImportError:  # the code of 0.7.0 has no retention
        return figures
    # the decisions in force make them done; shred as on a day after every term
    with Session(engine) as session, session.begin():
        session.execute(text("UPDATE request_status SET state = 'rejected'"))
    started = time.perf_counter()
    run = run_retention(engine, accountability=load_accountability(),
                        now=datetime(2050, 1, 3, 2, 30, tzinfo=UTC))
    figures["shred_per_s"] = run.shredded / (time.perf_counter() - started)
    figures["shredded"] = run.shredded
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (a schema of its own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.postgres:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            admin = make_engine(database_url(args.postgres))
            with admin.begin() as connection:
                connection.execute(text(f"CREATE SCHEMA {schema}"))
            url = database_url(args.postgres).update_query_dict(
                {"options": f"-csearch_path={schema}"})
            engine = engine_for(url.render_as_string(hide_password=False))
        else:
            engine = engine_for(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            figures = measure(engine, args.requests)
        finally:
            engine.dispose()
            if args.postgres:
                with admin.begin() as connection:
                    connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    sealed = "sealed (0.8.0)" if "data_keks" in inspect.signature(make_engine).parameters \
        else "in clear (0.7.0)"
    print(f"{args.requests} requests, {'PostgreSQL' if args.postgres else 'SQLite'}, "
          f"submissions {sealed}")
    for name, value in figures.items():
        print(f"  {name:<14}{value:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
