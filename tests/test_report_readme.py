"""``disclosure report`` read the way an auditor reads it, against the README and the ledger.

A small synthetic history of 2026 (``records.synthetic_history``) on a SQLite ledger. The
commands are the README's own: step 6 of its audit block and the ``report --period …`` it names
in paragraph 6. What is checked is what a person would check with the files in front of them:
that the files are called what the README says, that the printed totals, the CSV, the summary,
the Markdown and the chart tell the same numbers, that totals are the sums of their rows, and
that the counts are those of the ledger itself (plain SQL on its tables, not the report's query).
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CHAIN_KEY_RING, ledger_on
from sqlalchemy import Engine, text

from cli.main import main
from legal_bases.table import GroundTable
from records.pseudonym import Pseudonymizer
from records.synthetic_history import write_history

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text("utf-8")
KEY = bytes.fromhex("e1" * 32)
SVG = "{http://www.w3.org/2000/svg}"
OUTCOMES = {"approved": "approved", "partially approved": "partially_approved",
            "rejected": "rejected", "awaiting review": "needs_review",
            "not yet decided": "undecided"}
ADDITIVE = ("requests", "subjects", "reviewed", "overridden", "deadlines_missed")
#: 2026 in Dutch days of receipt, as instants (CET: UTC+1 at both ends).
YEAR = (datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))


def paragraph(opening: str) -> str:
    """The README paragraph that starts with ``opening`` (up to the next blank line)."""
    start = README.index(opening)
    end = README.find("\n\n", start)
    return " ".join(README[start:end if end > 0 else None].split())


SIX = paragraph("**6. Transparency report.**")


def step_six() -> list[str]:
    """The README's audit step 6, as argv after the program name."""
    [line] = [line for line in README.splitlines() if "disclosure report --period" in line
              and "# 6." in line]
    argv = shlex.split(line.split("#")[0])
    return argv[argv.index("report"):]


def named_commands() -> list[list[str]]:
    """Step 6 and every ``report --period …`` paragraph 6 names in backticks."""
    found = [step_six(), *(shlex.split(c) for c in re.findall(r"`(report --period [^`]+)`", SIX))]
    return [list(c) for c in dict.fromkeys(tuple(c) for c in found)]


def named_files() -> set[str]:
    return set(re.findall(r"`(transparency-[a-z0-9-]+\.(?:csv|json|md|svg))`", SIX))


@dataclass
class History:
    engine: Engine
    url: str


@pytest.fixture(scope="module")
def history(request: pytest.FixtureRequest, shipped_table: GroundTable,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    with ledger_on("sqlite", request, tmp_path_factory.mktemp("report-readme")) as engine:
        write_history(engine=engine, pseudonymizer=Pseudonymizer(KEY),
                      tables=[(datetime(2020, 8, 1, tzinfo=UTC), shipped_table)], requests=90,
                      seed=17, start=datetime(2025, 12, 20, tzinfo=UTC),
                      end=datetime(2026, 11, 30, tzinfo=UTC), persons=40)
        yield History(engine, engine.url.render_as_string(hide_password=False))


@pytest.fixture
def configured(history: History, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> History:
    for name in ("DISCLOSURE_GROUNDS_DIR", "DISCLOSURE_PARTNERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", history.url)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "var"))
    return history


def run(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0
    return capsys.readouterr().out


# -- finding: the README names the files the command writes -----------------------------------

def test_the_files_the_readme_names_are_the_files_its_commands_write(
        configured: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = named_commands()
    assert len(commands) >= 2, commands  # step 6 and at least `report --period 2026`
    written: dict[str, set[str]] = {}
    for number, argv in enumerate(commands):
        out = tmp_path / str(number)
        printed = run(argv, out, capsys)
        written[" ".join(argv)] = {p.name for p in out.iterdir()}
        # the command prints where each file went
        assert {Path(p).name for p in re.findall(r"^\s+\w+\s+(\S+)$", printed, re.M)} == written[
            " ".join(argv)]
    named = named_files()
    for files in written.values():
        assert len(files) == 4
    # step 6's four files are named one by one; every name the paragraph gives is written
    assert written[" ".join(step_six())] <= named, sorted(named)
    assert named <= set().union(*written.values()), sorted(named - set().union(*written.values()))


# -- the report read as a person reads it --------------------------------------------------------

def ledger_counts(engine: Engine) -> dict[str, Any]:
    """What the ledger holds about the requests of 2026, read straight from its tables."""
    with engine.connect() as db:
        requests = db.execute(text(
            "select id, valid, coalesce(subject_count, 0) from requests "
            "where received_at >= :lo and received_at < :hi"), {"lo": YEAR[0], "hi": YEAR[1]}
        ).all()
        decisions = db.execute(text("select request_id, sequence, outcome from decisions")).all()
    in_force: dict[str, tuple[int, str]] = {}
    for request_id, sequence, outcome in decisions:
        if request_id not in in_force or sequence > in_force[request_id][0]:
            in_force[request_id] = (sequence, outcome)
    outcomes: Counter[str] = Counter()
    for request_id, valid, _ in requests:
        outcomes["rejected" if not valid else in_force.get(request_id, (0, "undecided"))[1]] += 1
    return {"requests": len(requests), "invalid": sum(not v for _, v, _ in requests),
            "subjects": sum(n for *_, n in requests),
            "reviewed": sum(in_force.get(r, (1, ""))[0] > 1 for r, _, _ in requests),
            "outcomes": {o: outcomes[o] for o in OUTCOMES.values()}}


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def markdown_table(text_: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the Markdown table under ``## heading``."""
    section = text_.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_the_reports_totals_are_the_sums_of_its_rows_and_the_ledgers_counts(
        configured: History, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports"
    printed = run(step_six(), out, capsys)
    ledger = ledger_counts(configured.engine)
    assert ledger["requests"] > 60
    assert ledger["invalid"] > 0
    assert ledger["reviewed"] > 0

    # the files are the README's, and the command said where they are
    files = {p.name: p for p in out.iterdir()}
    assert set(files) <= named_files()
    assert all(str(path) in printed for path in files.values())
    [csv_file] = [p for n, p in files.items() if n.endswith(".csv")]
    [summary_file] = [p for n, p in files.items() if n.endswith("-summary.json")]
    [md_file] = [p for n, p in files.items() if n.endswith(".md")]
    [svg_file] = [p for n, p in files.items() if n.endswith(".svg")]

    # what the command prints: "N requests (M invalid); a approved, b partially approved, …"
    match = re.search(r"^\s+(\d+) requests \((\d+) invalid\); (.+)$", printed, re.M)
    assert match, printed
    said = {OUTCOMES[name]: int(n) for n, name in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)",
                                                             match[3])}
    assert (int(match[1]), int(match[2]), said) == (
        ledger["requests"], ledger["invalid"], ledger["outcomes"])

    # the CSV's rows add up to the same totals, and to the summary's
    rows = csv_rows(csv_file)
    summary = json.loads(summary_file.read_text("utf-8"))
    totals = summary["totals"]
    for column in ADDITIVE:
        assert sum(int(r[column]) for r in rows) == totals[column], column
    assert totals["requests"] == ledger["requests"]
    assert totals["subjects"] == ledger["subjects"]
    assert totals["reviewed"] == ledger["reviewed"]
    assert totals["invalid"] == ledger["invalid"]
    by_outcome: Counter[str] = Counter()
    for row in rows:
        by_outcome[row["outcome"]] += int(row["requests"])
    assert {o: by_outcome[o] for o in OUTCOMES.values()} == totals["outcomes"] == ledger[
        "outcomes"]
    for category, counted in totals["categories_released"].items():
        assert sum(int(r[category]) for r in rows) == counted["requests"], category
    # each quarter: its rows add up to its line of the summary; the quarters to the year
    for part in summary["periods"]:
        mine = [r for r in rows if r["period"] == part["period"]]
        for column in ADDITIVE:
            assert sum(int(r[column]) for r in mine) == part[column], (part["period"], column)
    assert [p["period"] for p in summary["periods"]] == ["2026-Q1", "2026-Q2", "2026-Q3",
                                                         "2026-Q4"]
    assert sum(p["requests"] for p in summary["periods"]) == totals["requests"]

    # the Markdown: the headline numbers, and its tables' columns add up to them
    md = md_file.read_text("utf-8")
    numbers = {cells[0]: cells[1] for cells in markdown_table(md, "In numbers")}
    assert int(numbers["Requests received"]) == ledger["requests"]
    assert int(numbers["… of which invalid submissions (rejected)"]) == ledger["invalid"]
    assert int(numbers["Data subjects named in the requests"]) == ledger["subjects"]
    assert int(numbers["Decided by a legal reviewer"]) == ledger["reviewed"]
    for name, outcome in OUTCOMES.items():
        assert int(numbers[f"Outcome: {name}"]) == ledger["outcomes"][outcome]
    for heading in ("Per requesting body", "Per ground", "Per quarter"):
        assert sum(int(cells[1]) for cells in markdown_table(md, heading)) == ledger[
            "requests"], heading
    assert f"]({svg_file.name})" in md  # the chart it shows is the one beside it

    # the chart: the legend's counts, and the bars per body add up to the total
    root = ET.parse(svg_file).getroot()
    legend = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for name, outcome in OUTCOMES.items():
        assert f"{name} ({ledger['outcomes'][outcome]:,})" in legend
    bars = [g for g in root.iter(f"{SVG}g") if "body-bar" in g.get("class", "")]
    segments = [int(r.find(f"{SVG}title").text.split(": ")[1].split()[0])  # type: ignore[union-attr]
                for g in bars for r in g.iter(f"{SVG}rect")]
    assert sum(segments) == ledger["requests"]
