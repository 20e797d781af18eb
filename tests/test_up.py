"""The README's first command: ``disclosure up`` decides and records the bundled examples."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
SCRIPT = Path(sys.executable).parent / "disclosure"


def example_numbers() -> set[str]:
    numbers = set()
    for path in (EXAMPLES / "requests").glob("*/*.json"):
        for subject in json.loads(path.read_text())["subjects"]:
            numbers.update(str(v) for v in subject.values())
    return numbers


def disclosure(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCLOSURE_")}
    return subprocess.run([str(SCRIPT), "--log-level", "DEBUG", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path,
                                                                 subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("up")
    return cwd, disclosure(cwd, "up")


def test_up_decides_every_example_with_the_policys_outcome(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = first_run
    assert result.returncode == 0, result.stderr
    outcomes = dict(re.findall(r"^\S+\s+(\S+)\s+\S+\s+(approved|partially_approved|rejected|"
                               r"needs_review)\s", result.stdout, re.MULTILINE))
    assert outcomes == {
        "BD-2026-000123": "approved",
        "CBS-ONW-2026-Q4-01": "approved",
        "UTR-WI-2026-5512": "partially_approved",
        "UTR-LP-2026-0203": "needs_review",
        "IVHO-2026-0077": "partially_approved",
        "OM-MN-2026-1188": "rejected",
        "OM-MN-2026-1190": "needs_review",
        "SVB-KB-2026-7781": "approved",
        "TS-2026-0042": "rejected",
        "UWV-2026-11-0031": "rejected",
    }
    assert "Audit chain: 21 events, intact" in result.stdout


def test_no_bsn_reaches_the_output_or_the_logs(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, result = first_run
    assert '"event": "example_decided"' in result.stderr  # the logs were on, at DEBUG
    status = disclosure(cwd, "status")
    for number in example_numbers():
        assert number not in result.stdout
        assert number not in result.stderr
        assert number not in status.stdout + status.stderr


def test_the_ledger_keeps_raw_bodies_but_audits_only_pseudonyms(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    with sqlite3.connect(cwd / "var" / "ledger.db") as db:
        raw = " ".join(r[0] for r in db.execute("select raw_body from requests"))
        audit = " ".join(str(r) for r in db.execute("select * from audit_events"))
        subjects = " ".join(str(r) for r in db.execute("select * from request_subjects"))
    numbers = example_numbers()
    assert all(n in raw for n in numbers)  # nothing received is lost
    assert not any(n in audit or n in subjects for n in numbers)


def test_running_up_again_decides_nothing_twice(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    again = disclosure(cwd, "up")
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(cwd / "var" / "ledger.db") as db:
        per_request = db.execute("select request_id, count(*) from decisions "
                                 "group by request_id having count(*) > 1").fetchall()
        invalid = db.execute("select count(*) from requests where not valid").fetchone()[0]
    assert per_request == []
    assert invalid == 2  # the invalid example is received again: nothing received is dropped
    verify = disclosure(cwd, "audit", "verify")
    assert verify.returncode == 0
    assert "audit chain intact" in verify.stdout


def test_status_of_one_request_and_of_an_unknown_one(
        first_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, _ = first_run
    with sqlite3.connect(cwd / "var" / "ledger.db") as db:
        (request_id,) = db.execute(
            "select id from requests where reference = 'UTR-LP-2026-0203'").fetchone()
    one = disclosure(cwd, "status", request_id)
    assert one.returncode == 0
    assert "awaiting_review" in one.stdout
    assert "needs_review" in one.stdout
    missing = disclosure(cwd, "status", "no-such-request")
    assert missing.returncode == 1
