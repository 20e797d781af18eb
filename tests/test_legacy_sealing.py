"""A ledger written by 0.7.0 (submissions and motivations in clear) opened by this version: the
first open with the KEK seals it, after which it verifies, replays, and can be shredded like any
other (issue #14). The old ledger is written by the code of 0.7.0 itself, taken from git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session
from test_retention import LONG_AFTER, database_bytes

from legal_bases.accountability import load_accountability
from records import data_keys
from records.db import open_ledger
from records.legacy_sealing import PendingSealing
from records.models import AuditEvent, RequestRow
from records.replay import replay_period
from records.replay_results import ReplayStatus
from records.retention import run_retention
from records.reviews import ReviewAnswerRow, answers_for
from records.settings import load_settings
from records.verification import verify_record

REPOSITORY = Path(__file__).resolve().parents[1]
#: the last commit of 0.7.0, before submissions were sealed
RELEASE_070 = "e645370"
WRITE_070 = """
import json, sys
from datetime import UTC, datetime
from legal_bases.table import load_table
from records.db import open_ledger
from records.pseudonym import Pseudonymizer
from records.settings import load_settings
from records.synthetic_history import write_history
settings = load_settings()
engine = open_ledger(settings)
start = datetime(2026, 1, 5, 8, tzinfo=UTC)
history = write_history(engine=engine, pseudonymizer=Pseudonymizer.from_settings(settings),
                        tables=[(start, load_table())], requests=80, seed=6, start=start,
                        end=datetime(2026, 3, 27, 17, tzinfo=UTC), persons=30,
                        invalid_share=0.1)
engine.dispose()
json.dump({"numbers": sorted({s.number for t in history.truths for s in t.subjects}),
           "reviewed": sum(t.reviewed for t in history.truths)}, sys.stdout)
"""


def code_of_070(folder: Path) -> Path:
    archive = folder / "070.tar"
    found = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--format=tar", "-o",
                            str(archive), RELEASE_070, "records", "legal_bases"],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.fail(f"the code of 0.7.0 ({RELEASE_070}) is not in this clone's history: "
                    f"{found.stderr.strip()}")
    code = folder / "code-070"
    with tarfile.open(archive) as tar:
        tar.extractall(code, filter="data")
    return code


def test_a_ledger_of_070_is_sealed_at_its_first_open_and_then_shredded_like_any(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "var"
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(data))
    env = {**os.environ, "PYTHONPATH": str(code_of_070(tmp_path))}
    written = subprocess.run([sys.executable, "-c", WRITE_070], env=env, capture_output=True,
                             text=True, timeout=300, check=False, cwd=tmp_path)
    assert written.returncode == 0, written.stderr[-2000:]
    facts = json.loads(written.stdout)
    ledger = data / "ledger.db"
    assert any(n.encode() in database_bytes(ledger) for n in facts["numbers"])  # in clear
    assert facts["reviewed"] > 0

    engine = open_ledger(load_settings())  # migrates to 0007 and seals, with the new KEK file
    try:
        with Session(engine) as session:
            assert session.execute(select(func.count()).select_from(
                PendingSealing)).scalar_one() == 0
            bodies = session.execute(select(RequestRow.raw_body)).scalars().all()  # type: ignore[call-overload]
            assert bodies
            assert all(data_keys.is_sealed(b) for b in bodies)
            motivations = session.execute(select(ReviewAnswerRow.motivation)).scalars().all()  # type: ignore[call-overload]
            assert motivations
            assert all(data_keys.is_sealed(m) for m in motivations)
            request_id = session.execute(select(ReviewAnswerRow.request_id)).scalars().first()  # type: ignore[call-overload]
            assert request_id is not None
            assert answers_for(session=session, request_id=request_id)[0].motivation  # opens
            assert session.execute(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.kind == "requests_sealed")).scalar_one() >= 1  # type: ignore[arg-type]
            report = verify_record(session=session)
        assert report.ok, report.problems[:5]
        replays = list(replay_period(engine, first=date(2026, 1, 1), last=date(2026, 12, 31)))
        assert replays
        assert {r.status for r in replays} <= {ReplayStatus.AGREES, ReplayStatus.UNDECIDED}
        engine.dispose()
        assert not [n for n in facts["numbers"] if n.encode() in database_bytes(ledger)]

        run = run_retention(engine, accountability=load_accountability(), now=LONG_AFTER)
        assert run.shredded > 0
        with Session(engine) as session:
            assert verify_record(session=session).ok
        statuses = {r.status for r in replay_period(engine, first=date(2026, 1, 1),
                                                    last=date(2026, 12, 31))}
        assert ReplayStatus.SHREDDED in statuses
        assert ReplayStatus.DIFFERS not in statuses
    finally:
        engine.dispose()
