"""The transparency report (``disclosure report``, the flow ``transparency-report``) against a
generated history, on SQLite and PostgreSQL.

Every expected number is counted here from the history's truths (what the generator recorded
for each request), never by the code under test: per body × ground × outcome the requests,
subjects and released categories; the reviews and overrides; the deadlines missed (deadlines are
dates: missed when the decision in force falls on a later Dutch day, or when a review still waits
on a later Dutch day at the cut-off); the medians. The day of receipt is checked against
hand-written UTC instants of Dutch midnight, winter and summer. The files are read back the way
a user would: the CSV with the csv module, the SVG with xml.etree, the artifacts with the Prefect
client.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from conftest import TEST_CHAIN_KEY_RING, ledger_on
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from sqlalchemy import Engine
from sqlmodel import Session

from cli.main import main
from cli.report import write_report
from flows.audit.report import make_report, transparency_report
from legal_bases.request import Subject, read_request
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body
from records.ledger import record_submission
from records.pseudonym import Pseudonymizer
from records.settings import load_settings
from records.statistics import Breakdown, parse_period
from records.synthetic_history import History, write_history
from records.vocabulary import Channel

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
KEY = bytes.fromhex("cd" * 32)
SVG = "{http://www.w3.org/2000/svg}"
CATEGORY_COLUMNS = ["personalia", "opleidingsgegevens", "financiele_gegevens",
                    "identificerende_nummers", "contacthistorie", "accountgegevens",
                    "technische_gegevens", "nationaliteit", "gezondheid",
                    "strafrechtelijke_gegevens"]
COLUMNS = ["period", "body", "ground", "outcome", "requests", "subjects", "subjects_affected",
           "reviewed", "overridden", "deadlines_missed", "median_days_to_decision",
           *CATEGORY_COLUMNS]
#: Dutch midnight starting 2026, in UTC (CET, UTC+1), and starting 2027.
YEAR_START = datetime(2025, 12, 31, 23, tzinfo=UTC)
YEAR_END = datetime(2026, 12, 31, 23, tzinfo=UTC)
#: "Now" for the reports: after the year (the cut-off is the end of 2026) ...
AFTER = datetime(2027, 3, 1, 12, tzinfo=UTC)
#: ... and inside it (the cut-off is now).
MIDYEAR = datetime(2026, 8, 15, 9, 30, tzinfo=UTC)


# -- what the report should say, from the truths ----------------------------------------------

@dataclass(frozen=True)
class Case:
    """One request as this test expects the report to count it."""

    received_at: datetime
    body: str
    ground: str
    outcome: str
    subjects: tuple[Subject, ...]
    released: tuple[str, ...]
    reviewed: bool
    overridden: bool
    decided_at: datetime | None  # None: not (yet) decided for good
    deadline: date | None
    valid: bool = True


def dutch_day(at: datetime) -> date:
    return at.astimezone(AMSTERDAM).date()


def missed(case: Case, cutoff: datetime) -> bool:
    if case.deadline is None:
        return False
    if case.decided_at is not None:
        return dutch_day(case.decided_at) > case.deadline
    return case.outcome == "needs_review" and dutch_day(cutoff) > case.deadline


def label(case: Case, by: str | None) -> str:
    day = dutch_day(case.received_at)
    if by == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if by == "month":
        return f"{day.year}-{day.month:02d}"
    return str(day.year)


def in_year(case: Case, year: int = 2026) -> bool:
    return dutch_day(case.received_at).year == year


def days(case: Case) -> float:
    assert case.decided_at is not None
    return (case.decided_at - case.received_at).total_seconds() / 86400


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def expected_rows(cases: list[Case], *, by: str | None, cutoff: datetime
                  ) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    groups: dict[tuple[str, str, str, str], list[Case]] = defaultdict(list)
    for case in cases:
        groups[(label(case, by), case.body, case.ground, case.outcome)].append(case)
    out = {}
    for key, members in groups.items():
        released = [c for c in members if c.released]
        out[key] = {
            "requests": len(members),
            "subjects": sum(len(c.subjects) for c in members),
            "subjects_affected": len({s for c in released for s in c.subjects}),
            "reviewed": sum(c.reviewed for c in members),
            "overridden": sum(c.overridden for c in members),
            "deadlines_missed": sum(missed(c, cutoff) for c in members),
            "median_days_to_decision": median(
                [days(c) for c in members if c.decided_at is not None]),
            **{cat: sum(cat in c.released for c in members) for cat in CATEGORY_COLUMNS},
        }
    return out


@dataclass
class Ledger:
    engine: Engine
    url: str
    history: History
    cases: list[Case]
    backend: str


def cases_of(history: History) -> list[Case]:
    out = []
    for t in history.truths:
        pending = t.review_pending
        out.append(Case(
            received_at=t.received_at, body=t.body.value, ground=t.ground or "—",
            outcome="needs_review" if pending else t.outcome,
            subjects=t.subjects if t.valid else (), released=() if pending else t.released,
            reviewed=t.reviewed, overridden=t.overridden,
            decided_at=None if pending else t.decided_at, deadline=t.deadline, valid=t.valid))
    return out


def undecided_submissions(engine: Engine, history: History) -> list[Case]:
    """Two submissions the dispatcher has not reached yet: a valid one (undecided) and an
    invalid one (rejected all the same)."""
    pseudonymizer = Pseudonymizer(KEY)
    out = []
    for n, (received_at, subjects, valid) in enumerate([
            (datetime(2026, 5, 5, 10, tzinfo=UTC), history.persons[:3], True),
            (datetime(2026, 6, 6, 10, tzinfo=UTC), history.persons[3:4], False)]):
        wire = [{s.id_type.value: s.number} for s in subjects] if valid else [
            {"bsn": "123456789"}]
        body = {"reference": f"WAIT-{n}", "legal_basis": "cbs-33", "purpose": "statistiek",
                "subjects": wire, "categories": ["opleidingsgegevens"]}
        parsed = read_request(body, received_on=dutch_day(received_at))
        with Session(engine) as session, session.begin():
            record_submission(session=session, partner_id="cbs-test", requester_body=Body.CBS,
                              channel=Channel.API, raw_body=json.dumps(body), parsed=parsed,
                              received_at=received_at, pseudonymizer=pseudonymizer)
        out.append(Case(received_at=received_at, body="cbs", ground="cbs-33",
                        outcome="undecided" if valid else "rejected",
                        subjects=tuple(subjects) if valid else (), released=(), reviewed=False,
                        overridden=False, decided_at=None, deadline=None, valid=valid))
    return out


@pytest.fixture(scope="module", params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, shipped_table: GroundTable,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A history of 320 requests from December 2025 to January 2027 (2026 and both ends)."""
    with ledger_on(request.param, request, tmp_path_factory.mktemp("report")) as engine:
        history = write_history(
            engine=engine, pseudonymizer=Pseudonymizer(KEY),
            tables=[(datetime(2020, 8, 1, tzinfo=UTC), shipped_table)], requests=320, seed=6,
            start=datetime(2025, 12, 1, tzinfo=UTC), end=datetime(2027, 1, 20, tzinfo=UTC),
            persons=150)
        cases = cases_of(history) + undecided_submissions(engine, history)
        yield Ledger(engine, engine.url.render_as_string(hide_password=False), history, cases,
                     request.param)


@pytest.fixture
def use_ledger(ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """The settings point at the history's ledger; the data folder is the test's own."""
    for name in [n for n in os.environ if n.startswith("DISCLOSURE_")]:
        if name != "DISCLOSURE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL", ledger.url)
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISCLOSURE_PSEUDONYM_KEY", KEY.hex())
    return ledger


def write(out: Path, period: str, by: str | None = None, *, now: datetime = AFTER
          ) -> dict[str, Path]:
    """The report of ``period`` as of ``now`` from the configured ledger, written into ``out``
    (what ``disclosure report`` does, with the clock set); returns the files by kind."""
    report = make_report(settings=load_settings(), period=parse_period(period),
                         breakdown=Breakdown(by) if by else None, now=now)
    return write_report(report, out)


def read_csv(path: Path) -> tuple[list[str], dict[tuple[str, str, str, str], dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        header = list(reader.fieldnames or [])
    out = {}
    for row in rows:
        key = (row["period"], row["body"], row["ground"], row["outcome"])
        assert key not in out, f"two rows for {key}"
        median_text = row["median_days_to_decision"]
        out[key] = {name: int(value) for name, value in row.items()
                    if name not in ("period", "body", "ground", "outcome",
                                    "median_days_to_decision")}
        out[key]["median_days_to_decision"] = float(median_text) if median_text else None
    return header, out


def assert_rows_equal(got: dict[Any, dict[str, Any]], want: dict[Any, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(want)
    for key, expected in want.items():
        row = dict(got[key])
        median_got = row.pop("median_days_to_decision")
        median_want = expected["median_days_to_decision"]
        assert row == {k: v for k, v in expected.items() if k != "median_days_to_decision"}, key
        if median_want is None:
            assert median_got is None, key
        else:
            assert median_got == pytest.approx(median_want, abs=6e-4), key


# -- the tests ----------------------------------------------------------------------------------

def test_the_history_has_every_kind_of_case(ledger: Ledger) -> None:
    """The checks below mean something only if 2026 holds each case they count."""
    year = [c for c in ledger.cases if in_year(c)]
    assert 200 < len(year) < len(ledger.cases)
    assert {c.outcome for c in year} == {"approved", "partially_approved", "rejected",
                                         "needs_review", "undecided"}
    assert any(not c.valid for c in year)
    assert sum(c.reviewed for c in year) >= 10
    assert any(c.overridden for c in year)
    late = [c for c in year if c.decided_at is not None and missed(c, AFTER)]
    waiting = [c for c in year if c.decided_at is None and missed(c, AFTER)]
    assert late
    assert waiting
    # a review that waits past its deadline by the end of the year but not yet in mid-August
    assert any(missed(c, AFTER) and not missed(c, MIDYEAR) for c in waiting)


def test_the_csv_has_the_counts_of_the_history(use_ledger: Ledger, tmp_path: Path) -> None:
    files = write(tmp_path / "out", "2026")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "transparency-2026-summary.json", "transparency-2026.csv", "transparency-2026.md",
        "transparency-2026.svg"]
    header, rows = read_csv(files["csv"])
    assert header == COLUMNS
    year = [c for c in use_ledger.cases if in_year(c)]
    assert_rows_equal(rows, expected_rows(year, by=None, cutoff=YEAR_END))


def test_the_summary_has_the_totals_of_the_history(use_ledger: Ledger, tmp_path: Path) -> None:
    files = write(tmp_path / "out", "2026")
    totals = json.loads(files["summary"].read_text("utf-8"))["totals"]
    year = [c for c in use_ledger.cases if in_year(c)]
    decided = [c for c in year if c.decided_at is not None]
    releasing = [c for c in year if c.released]
    assert totals["requests"] == len(year)
    assert totals["invalid"] == sum(not c.valid for c in year)
    assert totals["outcomes"] == {o: sum(c.outcome == o for c in year) for o in (
        "approved", "partially_approved", "rejected", "needs_review", "undecided")}
    assert totals["subjects"] == sum(len(c.subjects) for c in year)
    assert totals["subjects_affected"] == len({s for c in releasing for s in c.subjects})
    assert totals["subjects_affected"] < sum(len(c.subjects) for c in releasing)  # repeats
    assert totals["reviewed"] == sum(c.reviewed for c in year)
    assert totals["overridden"] == sum(c.overridden for c in year)
    assert totals["deadlines_missed"] == sum(missed(c, YEAR_END) for c in year)
    assert totals["categories_released"] == {
        cat: {"requests": sum(cat in c.released for c in year),
              "subject_releases": sum(len(c.subjects) for c in year if cat in c.released)}
        for cat in CATEGORY_COLUMNS}
    for key, members in (("median_days_to_decision", decided),
                         ("median_days_engine_only", [c for c in decided if not c.reviewed]),
                         ("median_days_reviewed", [c for c in decided if c.reviewed])):
        assert totals[key] == pytest.approx(median([days(c) for c in members]), abs=6e-4), key
    assert totals["median_days_reviewed"] > 10 * totals["median_days_engine_only"]


def test_a_review_waiting_counts_as_missed_only_once_its_deadline_day_is_over_by_now(
        use_ledger: Ledger, tmp_path: Path) -> None:
    """Made in mid-August, the report judges waiting reviews as of then, not the year's end."""
    files = write(tmp_path / "out", "2026", "quarter", now=MIDYEAR)
    year = [c for c in use_ledger.cases if in_year(c)]
    _, rows = read_csv(files["csv"])
    assert_rows_equal(rows, expected_rows(year, by="quarter", cutoff=MIDYEAR))
    summary = json.loads(files["summary"].read_text("utf-8"))
    assert summary["deadline_cutoff"] == MIDYEAR.isoformat()
    assert summary["totals"]["deadlines_missed"] == sum(missed(c, MIDYEAR) for c in year)
    assert sum(missed(c, MIDYEAR) for c in year) < sum(missed(c, YEAR_END) for c in year)


@pytest.mark.parametrize("by", ["quarter", "month"])
def test_quarters_and_months_add_up_to_the_year(use_ledger: Ledger, by: str,
                                                tmp_path: Path) -> None:
    parts = write(tmp_path / "parts", "2026", by)
    whole = write(tmp_path / "year", "2026")
    year = [c for c in use_ledger.cases if in_year(c)]
    _, part_rows = read_csv(parts["csv"])
    assert_rows_equal(part_rows, expected_rows(year, by=by, cutoff=YEAR_END))
    assert len({key[0] for key in part_rows}) == (4 if by == "quarter" else 12)

    _, year_rows = read_csv(whole["csv"])
    additive = [c for c in COLUMNS[4:] if c not in ("median_days_to_decision",
                                                    "subjects_affected")]
    summed: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(
        additive, 0))
    for (_, *rest), row in part_rows.items():
        for column in additive:
            summed[tuple(rest)][column] += row[column]  # type: ignore[index]
    assert summed == {key[1:]: {c: row[c] for c in additive} for key, row in year_rows.items()}

    summary = json.loads(parts["summary"].read_text("utf-8"))
    year_totals = json.loads(whole["summary"].read_text("utf-8"))["totals"]
    periods = summary["periods"]
    assert [p["period"] for p in periods] == sorted({label(c, by) for c in year})
    for name in ("requests", "subjects", "invalid", "reviewed", "overridden",
                 "deadlines_missed"):
        assert sum(p[name] for p in periods) == year_totals[name] == summary["totals"][name]
    for p in periods:  # distinct persons per period, counted here
        members = [c for c in year if label(c, by) == p["period"] and c.released]
        assert p["subjects_affected"] == len({s for c in members for s in c.subjects})


@pytest.mark.parametrize(("boundary", "before", "after"), [
    (datetime(2025, 12, 31, 23, tzinfo=UTC), "2025", "2026"),  # winter: CET, UTC+1
    (datetime(2026, 3, 31, 22, tzinfo=UTC), "2026-Q1", "2026-04"),  # summer: CEST, UTC+2
])
@pytest.mark.parametrize("ledger_engine", ["sqlite", "postgresql"], indirect=True)
def test_a_request_belongs_to_its_dutch_day_of_receipt(
        ledger_engine: Engine, shipped_table: GroundTable, boundary: datetime, before: str,
        after: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Received at 23:30 UTC on 31 March, a request is 1 April's (01:30 in Amsterdam)."""
    history = write_history(engine=ledger_engine, pseudonymizer=Pseudonymizer(KEY),
                            tables=[(datetime(2020, 8, 1, tzinfo=UTC), shipped_table)],
                            requests=40, seed=11, start=boundary - timedelta(hours=2),
                            end=boundary + timedelta(hours=2))
    early = [t for t in history.truths if t.received_at < boundary]
    late = [t for t in history.truths if t.received_at >= boundary]
    # some arrive after Dutch midnight on a UTC day that has not ended yet (23:30 UTC ...)
    assert early
    assert any(t.received_at.date() == boundary.date() for t in late)
    monkeypatch.setenv("DISCLOSURE_DATABASE_URL",
                       ledger_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DISCLOSURE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DISCLOSURE_CHAIN_KEY", TEST_CHAIN_KEY_RING)
    for period, members in ((before, early), (after, late)):
        files = write(tmp_path / period, period)
        totals = json.loads(files["summary"].read_text("utf-8"))["totals"]
        assert totals["requests"] == len(members), period
        assert totals["subjects"] == sum(len(t.subjects) for t in members), period


def test_an_empty_period_is_a_report_of_zeros(use_ledger: Ledger, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["report", "--period", "2024-Q2", "--by", "month", "--out", str(out)]) == 0
    files = {"csv": out / "transparency-2024-q2-by-month.csv",
             "summary": out / "transparency-2024-q2-by-month-summary.json",
             "chart": out / "transparency-2024-q2-by-month.svg"}
    header, rows = read_csv(files["csv"])
    assert header == COLUMNS
    assert rows == {}
    summary = json.loads(files["summary"].read_text("utf-8"))
    assert summary["totals"]["requests"] == 0
    assert summary["totals"]["median_days_to_decision"] is None
    assert [p["requests"] for p in summary["periods"]] == [0, 0, 0]
    bars = ET.parse(files["chart"]).getroot().iter(f"{SVG}g")
    assert len([g for g in bars if "body-bar" in g.get("class", "")]) == len(Body)
    assert "0 requests" in capsys.readouterr().out
    assert "No requests" in files["chart"].read_text("utf-8")


def test_the_chart_has_one_bar_per_body_split_by_outcome(use_ledger: Ledger,
                                                         tmp_path: Path) -> None:
    files = write(tmp_path / "out", "2026", "quarter")
    root = ET.parse(files["chart"]).getroot()  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "Transparency report 2026: requests by outcome" in texts
    assert {"Requesting body", "Quarter", "Requests received"} <= set(texts)
    legend = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "legend")
    assert len(legend.findall(f"{SVG}rect")) == 5
    year = [c for c in use_ledger.cases if in_year(c)]
    groups = list(root.iter(f"{SVG}g"))
    body_bars = {g.get("data-body"): g for g in groups if "body-bar" in g.get("class", "")}
    assert list(body_bars) == [b.value for b in Body]
    widths_per_request = []
    for body, bar in body_bars.items():
        members = [c for c in year if c.body == body]
        segments = bar.findall(f"{SVG}rect")
        assert [s.get("data-outcome") for s in segments] == [
            o for o in ("approved", "partially_approved", "rejected", "needs_review",
                        "undecided") if any(c.outcome == o for c in members)]
        assert [t.text for t in bar.findall(f"{SVG}text")] == [body, f"{len(members):,}"]
        widths_per_request += [
            float(s.get("width", "0")) / sum(c.outcome == s.get("data-outcome") for c in members)
            for s in segments]
    # one scale for every segment: a segment's length tells its number of requests
    assert max(widths_per_request) - min(widths_per_request) < 0.01
    quarter_bars = [g.get("data-period") for g in groups if "period-bar" in g.get("class", "")]
    assert quarter_bars == ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]
    text = files["markdown"].read_text("utf-8")
    assert "# Transparency report 2026" in text
    assert "## Per quarter" in text
    assert f"({files['chart'].name})" in text


@pytest.mark.parametrize(("args", "message"), [
    (["--period", "2026-13"], "a month is 01 to 12"),
    (["--period", "2026-Q5"], "a quarter is Q1 to Q4"),
    (["--period", "twenty"], "is not a period"),
    (["--period", "2026-00"], "a month is 01 to 12"),
    (["--period", "2026", "--by", "week"], "invalid choice"),
])
def test_a_bad_period_is_a_usage_error(args: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("text", "label", "first", "last"), [
    ("2026", "2026", date(2026, 1, 1), date(2026, 12, 31)),
    ("2026-q3", "2026-Q3", date(2026, 7, 1), date(2026, 9, 30)),
    ("2026-Q1", "2026-Q1", date(2026, 1, 1), date(2026, 3, 31)),
    ("2026-02", "2026-02", date(2026, 2, 1), date(2026, 2, 28)),
    ("2028-02", "2028-02", date(2028, 2, 1), date(2028, 2, 29)),
    ("2026-12", "2026-12", date(2026, 12, 1), date(2026, 12, 31)),
])
def test_a_period_is_its_calendar_days(text: str, label: str, first: date, last: date) -> None:
    period = parse_period(text)
    assert (period.label, period.first, period.last) == (label, first, last)


def test_a_month_cannot_be_broken_down_into_quarters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--period", "2026-07", "--by", "quarter"]) == 2
    assert "cannot be broken down by quarter" in capsys.readouterr().err


# -- the flow -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect(prefect_harness: None) -> None:
    """The Prefect test server (tests/conftest.py)."""


def artifacts(key: str, flow_run_id: UUID | None = None) -> list[Any]:
    """The artifacts with ``key`` (of one flow run, if given)."""
    runs = ArtifactFilterFlowRunId(any_=[flow_run_id]) if flow_run_id else None
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=runs))


def test_the_flow_publishes_the_report_as_artifacts_without_personal_data(
        prefect: None, use_ledger: Ledger, tmp_path: Path) -> None:
    cutoff = min(YEAR_END, datetime.now(UTC))  # the flow reports as of now
    state = transparency_report(period="2026", breakdown="quarter", return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.parameters == {"period": "2026", "breakdown": "quarter"}

    [summary] = artifacts("transparency-2026-by-quarter", run.id)
    [table] = artifacts("transparency-2026-by-quarter-rows", run.id)
    assert summary.type == "markdown"
    assert table.type == "table"
    year = [c for c in use_ledger.cases if in_year(c)]
    assert "# Transparency report 2026" in summary.data
    assert f"| Requests received | {len(year)} |" in summary.data
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    published = {(r["period"], r["body"], r["ground"], r["outcome"]): {
        k: v for k, v in r.items() if k not in ("period", "body", "ground", "outcome")}
        for r in data}
    assert_rows_equal(published, expected_rows(year, by="quarter", cutoff=cutoff))

    # counts only: no number and no pseudonym of anyone in the history
    pseudonymizer = Pseudonymizer(KEY)
    secrets = {s.number for s in use_ledger.history.persons} | {
        pseudonymizer.of(s) for s in use_ledger.history.persons}
    everything = json.dumps([summary.model_dump(mode="json"), table.model_dump(mode="json"),
                             run.model_dump(mode="json")])
    assert sorted(s for s in secrets if s in everything) == []

    # the command line runs the same flow on the configured server and writes the files too
    out = tmp_path / "published"
    assert main(["report", "--period", "2026-Q3", "--publish", "--out", str(out)]) == 0
    with get_client(sync_client=True) as client:
        q3 = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=["transparency-2026-q3-rows"])))[0]
    data = json.loads(q3.data) if isinstance(q3.data, str) else q3.data
    _, rows = read_csv(out / "transparency-2026-q3.csv")
    assert sum(r["requests"] for r in data) == sum(r["requests"] for r in rows.values()) == len(
        [c for c in year if label(c, "quarter") == "2026-Q3"])
