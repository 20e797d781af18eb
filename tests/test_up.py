"""End to end: the README's first command against a real ``prefect server`` process.

``disclosure up --once`` seeds the register, starts a local Prefect server and the flow server,
drops the bundled examples off, and waits until each is delivered, rejected or waiting for a
reviewer. The test then checks what a user would: the outcomes, the files delivered (the
released categories and nothing else), the reports beside the dropped files, the ledger, and
that neither Prefect's database nor any log holds a BSN.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from records.db import open_ledger
from records.ledger import raw_body_of
from records.models import RequestRow
from records.settings import Settings

EXAMPLES = Path(__file__).parents[1] / "examples"
SCRIPT = Path(sys.executable).parent / "disclosure"

EXPECTED = {
    "BD-2026-000123": ("approved", "delivered"),
    "CBS-ONW-2026-Q4-01": ("needs_review", "awaiting_review"),  # a shielded subject
    "UTR-WI-2026-5512": ("partially_approved", "delivered"),
    "UTR-LP-2026-0203": ("needs_review", "awaiting_review"),
    "IVHO-2026-0077": ("partially_approved", "delivered"),
    "OM-MN-2026-1188": ("rejected", "rejected"),
    "OM-MN-2026-1190": ("needs_review", "awaiting_review"),
    "SVB-KB-2026-7781": ("approved", "delivered"),
    "TS-2026-0042": ("rejected", "rejected"),
    "UWV-2026-11-0031": ("rejected", "rejected"),
}


def example_numbers() -> set[str]:
    numbers = set()
    for path in (EXAMPLES / "requests").glob("*/*.json"):
        for subject in json.loads(path.read_text())["subjects"]:
            numbers.update(str(v) for v in subject.values())
    return numbers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def disclosure(cwd: Path, *argv: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCLOSURE_", "PREFECT_"))}
    env["DISCLOSURE_REGISTER_PERSONS"] = "300"
    return subprocess.run([str(SCRIPT), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("up")
    return cwd, disclosure(cwd, "--log-level", "DEBUG", "up", "--once", "--port",
                           str(free_port()), timeout=400)


def test_up_processes_every_example_to_the_policys_outcome(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = first_run
    assert result.returncode == 0, result.stdout + result.stderr
    found = {m[0]: (m[1], m[2]) for m in re.findall(
        r"^\S+\s+(\S+)\s+\S+\s+(approved|partially_approved|rejected|needs_review)\s+(\S+)",
        result.stdout, re.MULTILINE)}
    assert found == EXPECTED
    assert re.search(r"Prefect UI\s+http://127\.0\.0\.1:\d+/runs", result.stdout)
    assert re.search(r"Audit chain\s+\d+ events, intact", result.stdout)


def test_partners_receive_exactly_the_released_categories(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    outbox = cwd / "var" / "outbox"
    delivered = {p.parent.name: json.loads(p.read_text()) for p in outbox.glob("*/*.json")}
    assert sorted(delivered) == ["belastingdienst", "gemeente-utrecht", "inspectie", "svb"]
    for partner, document in delivered.items():
        released = set(document["disclosure"]["released"])
        for record in document["records"]:
            assert set(record) - {"subject"} == released, partner
    bijstand = delivered["gemeente-utrecht"]
    assert bijstand["disclosure"]["withheld"] == ["gezondheid"]
    assert len(bijstand["records"]) == 1
    svb = delivered["svb"]
    assert sorted(r["subject"].popitem()[0] for r in svb["records"]) == ["bsn", "onderwijsnummer"]
    inspectie = delivered["inspectie"]
    assert inspectie["subjects_pseudonymised"] is True
    assert all(set(r["subject"]) == {"pseudonym"} for r in inspectie["records"])
    assert inspectie["not_found"] == {"count": 0}
    assert not any(n in json.dumps(inspectie) for n in example_numbers())


def test_every_dropped_file_is_filed_away_with_a_report(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    dropoff = cwd / "var" / "dropoff"
    assert sorted(p.name for p in dropoff.glob("*/*.json")) == []  # nothing left waiting
    rejected = [json.loads(p.read_text()) for p in dropoff.glob("*/rejected/*.report.json")]
    assert [(r["file"], r["invalid"], r["entries"][0]["errors"][0]["code"]) for r in rejected] == [
        ("awir38-invalid-bsn.json", 1, "invalid_bsn")]
    assert len(list(dropoff.glob("*/processed/*.report.json"))) == 9


def test_no_bsn_in_prefects_database_the_logs_or_the_output(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, result = first_run
    prefect_db = cwd / "var" / "prefect" / "prefect.db"
    with sqlite3.connect(prefect_db) as db:
        tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
        dump = "\n".join(str(row) for t in tables for row in db.execute(f'select * from "{t}"'))
        runs = db.execute("select count(*) from flow_run").fetchone()[0]
        logs = db.execute("select count(*) from log").fetchone()[0]
    assert runs >= 5  # drop-off, dispatcher, three reviews: Prefect did hold the history
    assert logs > 10
    assert "batch_decided · decided=" in dump  # our structlog lines reached the run logs
    texts = [dump, result.stdout, result.stderr]
    texts += [p.read_text(errors="replace") for p in (cwd / "var" / "logs").glob("*.log")]
    for number in example_numbers():
        assert not any(number in text for text in texts), number


def test_the_ledger_records_which_flow_run_handled_each_request(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    with sqlite3.connect(cwd / "var" / "ledger.db") as db:
        undecided = db.execute("select count(*) from requests r where not exists (select 1 "
                               "from decisions d where d.request_id = r.id and "
                               "d.flow_run_id is not null)").fetchone()[0]
        deliveries = db.execute("select count(*), count(distinct decision_id), "
                                "count(flow_run_id) from deliveries").fetchone()
        stored = " ".join(r[0] for r in db.execute("select raw_body from requests"))
        audit = " ".join(str(r) for r in db.execute("select * from audit_events"))
    # the submissions as received, opened with their data keys (the KEK file up made in var/)
    ledger = open_ledger(Settings(data_dir=cwd / "var"))
    try:
        with Session(ledger) as session:
            opened = [raw_body_of(session=session, row=row)
                      for row in session.scalars(select(RequestRow))]
    finally:
        ledger.dispose()
    assert undecided == 0
    assert deliveries == (4, 4, 4)
    numbers = example_numbers()
    assert None not in opened
    raw = " ".join(text for text in opened if text is not None)
    assert all(n in raw for n in numbers)  # nothing received is lost
    assert not any(n in stored for n in numbers)  # sealed: no number in clear in the database
    assert not any(n in audit for n in numbers)


def test_status_audit_and_a_second_run_change_nothing(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    status = disclosure(cwd, "status")
    assert status.returncode == 0
    assert status.stdout.count("delivered") >= 4
    assert disclosure(cwd, "audit", "verify").returncode == 0
    again = disclosure(cwd, "up", "--once", "--port", str(free_port()), timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(cwd / "var" / "ledger.db") as db:
        assert db.execute("select count(*) from requests").fetchone()[0] == 10
        assert db.execute("select count(*) from deliveries").fetchone()[0] == 4
        assert db.execute("select count(*) from decisions").fetchone()[0] == 10
    assert len(list((cwd / "var" / "outbox").glob("*/*.json"))) == 4
