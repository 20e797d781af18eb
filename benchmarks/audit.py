"""Benchmark of the audit tools on a large ledger: replay speed (requests per second) and
verification speed (audit events per second), plus the transparency report and the inzage.

    .venv/bin/python benchmarks/audit.py --requests 100000

The ledger is a synthetic history (``flows/synthetic_history.py``: submissions, engine decisions
read from two tables of grounds with a change of the law half-way, reviews, deliveries) written
to a SQLite file under ``--folder`` (default a temporary folder); ``--keep`` keeps it, and a later
run with the same ``--folder`` and ``--requests`` reuses it instead of writing it again.
``--postgres URL`` writes it to that PostgreSQL database instead (in a schema of its own, dropped
afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlmodel import Session

from legal_bases.accountability import load_accountability
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table
from records.chain_keys import ChainKey, ChainKeys
from records.db import database_url, make_engine, migrate
from records.inzage import find_requests
from records.models import AuditEvent, RequestRow
from records.pseudonym import Pseudonymizer
from records.replay import replay_period
from records.replay_summary import summarise
from records.statistics import parse_period, transparency_statistics
from records.synthetic_history import write_history
from records.verification import verify_record

KEY = b"benchmark-pseudonym-key-32-bytes"
#: The key ring that seals the benchmark's chain (a kept ledger is verified with it again).
CHAIN_KEYS = ChainKeys(current=ChainKey("benchmark", b"benchmark-chain-key-of-32-bytes!"))
START = datetime(2026, 1, 1, tzinfo=UTC)
CHANGE = datetime(2026, 7, 1, tzinfo=UTC)
END = datetime(2026, 12, 31, tzinfo=UTC)


def amended_table(folder: Path) -> GroundTable:
    """The shipped table with one ground amended from the change on: awir-38 no longer covers
    financiele_gegevens from 2026-07-01 (a new dated version)."""
    grounds = folder / "grounds"
    shutil.copytree(DEFAULT_GROUNDS_DIR, grounds, dirs_exist_ok=True)
    path = grounds / "awir-38.yaml"
    source = path.read_text("utf-8")
    head, versions = source.split("versions:\n", 1)
    until = '  - valid_from: "2020-08-01"\n    valid_until: "2026-06-30"\n'
    amended = versions.replace('  - valid_from: "2020-08-01"\n', until, 1)
    new = ("  - valid_from: \"2026-07-01\"\n"
           "    categories: [personalia, identificerende_nummers, opleidingsgegevens]\n"
           "    special_categories: []\n    case_reference_required: false\n"
           "    authorisations_required: []\n    single_subject: false\n    auto_limit: 1000\n"
           "    review: never\n    response_days: 28\n    pseudonymise: false\n")
    path.write_text(f"{head}versions:\n{amended}{new}", "utf-8")
    return load_table(grounds)


@contextmanager
def ledger(args: argparse.Namespace, folder: Path) -> Iterator[tuple[Engine, bool]]:
    """The benchmark's ledger and whether it already holds the history."""
    if args.postgres:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = make_engine(database_url(args.postgres))
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(database_url(args.postgres).update_query_dict(
            {"options": f"-csearch_path={schema}"}), chain_keys=CHAIN_KEYS)
        try:
            migrate(engine)
            yield engine, False
        finally:
            engine.dispose()
            with admin.begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
        return
    path = folder / f"ledger-{args.requests}.db"
    existing = path.exists()
    engine = make_engine(f"sqlite:///{path}", chain_keys=CHAIN_KEYS)
    try:
        migrate(engine)
        yield engine, existing
    finally:
        engine.dispose()


def timed(label: str, call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.2f} s")
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the ledger for another run")
    parser.add_argument("--postgres", default=None, metavar="URL",
                        help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    amended = amended_table(folder)
    with ledger(args, folder) as (engine, existing):
        if not existing:
            print(f"writing a synthetic history of {args.requests:,} requests …")
            _, history = timed("history written", lambda: write_history(
                engine=engine, pseudonymizer=Pseudonymizer(KEY),
                tables=[(START, load_table()), (CHANGE, amended)], requests=args.requests,
                seed=args.seed, start=START, end=END, persons=max(200, args.requests // 5)))
            del history
        with Session(engine) as session:
            requests = session.execute(select(func.count()).select_from(RequestRow)).scalar_one()
            events = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
        print(f"ledger: {requests:,} requests, {events:,} audit events "
              f"({engine.dialect.name})")
        measure(engine, args, requests=requests, events=events)
    if not args.keep and args.folder is None:
        shutil.rmtree(folder, ignore_errors=True)


def measure(engine: Engine, args: argparse.Namespace, *, requests: int, events: int) -> None:
    first, last = date(2026, 1, 1), date(2026, 12, 31)
    verify_s, replay_s, current_s = [], [], []
    for _ in range(args.rounds):
        def verify() -> Any:
            with Session(engine) as session:
                return verify_record(session=session)
        seconds, report = timed("audit verify (chain, snapshots, rows against events)", verify)
        assert report.ok, report
        verify_s.append(seconds)
        seconds, summary = timed("replay of the year against the recorded tables", lambda: (
            summarise(replay_period(engine, first=first, last=last), first=first, last=last)))
        replay_s.append(seconds)
        print(f"    {summary.agrees:,} agree, {summary.differs:,} differ, "
              f"{summary.cannot_replay:,} cannot be replayed; {summary.reviewed:,} reviewed, "
              f"{summary.review_checks_failed:,} review checks failed; "
              f"{len(summary.tables)} tables")
        seconds, summary = timed("replay of the year against the current table", lambda: (
            summarise(replay_period(engine, first=first, last=last, against=load_table()),
                      first=first, last=last)))
        current_s.append(seconds)
        print(f"    {summary.differs:,} would now be decided differently (the shipped table "
              "lacks the amendment of awir-38 from 2026-07-01)")
    verify_best, replay_best = min(verify_s), min(replay_s)
    print(f"verify: {events / verify_best:,.0f} events/s ({events:,} events in "
          f"{verify_best:.1f} s; median of {len(verify_s)}: {statistics.median(verify_s):.1f} s)")
    print(f"replay: {requests / replay_best:,.0f} requests/s ({requests:,} requests in "
          f"{replay_best:.1f} s); against the current table: "
          f"{requests / min(current_s):,.0f} requests/s")

    def statistics_of_the_year() -> Any:
        with Session(engine) as session:
            return transparency_statistics(session=session, period=parse_period("2026"))
    timed("transparency report 2026", statistics_of_the_year)

    def inzage() -> Any:
        with Session(engine) as session:
            pseudonym = session.execute(text(
                "SELECT pseudonym FROM request_subjects LIMIT 1")).scalar_one()
            return find_requests(session=session, pseudonyms=[pseudonym], table=load_table(),
                                 accountability=load_accountability())
    timed("inzage of one person", inzage)


if __name__ == "__main__":
    main()
