"""``disclosure report``: the transparency report — what other organisations asked DUO for in a
period, and what became of it — as files for publication and as a Prefect flow.

    disclosure report --period 2026 [--by quarter|month] [--out DIR] [--publish]

The period is a year (``2026``), a quarter (``2026-Q3``) or a month (``2026-07``) of days of
receipt in Dutch time; ``--by`` divides it into quarters or months. Into ``--out`` (default
``<DISCLOSURE_DATA_DIR>/reports``, i.e. ``var/reports``) go, named
``transparency-<period>[-by-<quarter|month>]``:

* ``.csv``: one row per period × requesting body × ground × outcome (:data:`CSV_COLUMNS`);
* ``-summary.json``: the totals of the whole period and of each quarter or month;
* ``.md``: the summary for people, with the chart;
* ``.svg``: the chart: requests per body (and per quarter or month) by outcome.

The flow ``transparency-report`` (parameters: the period and the breakdown, nothing else) makes
the same report and publishes it as two artifacts: the Markdown summary (key
``transparency-<period>[-by-…]``) and the CSV rows as a table (the same key + ``-rows``).
``--publish`` runs that flow against the configured Prefect server and writes the files too.
Everything in the report is a count: no identifier, no pseudonym (records/statistics.py says
how each number is counted).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from sqlmodel import Session

from cli.local_prefect import answering_api_url
from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases.vocabulary import Category, Outcome
from records.db import read_only
from records.settings import Settings, load_settings
from records.statistics import (
    CATEGORIES,
    OUTCOMES,
    UNDECIDED,
    Breakdown,
    Period,
    PeriodError,
    Report,
    ReportRow,
    Tally,
    parse_breakdown,
    parse_period,
    rounded_days,
    transparency_statistics,
)

#: The columns of the CSV, in their fixed order: the categories released (requests that released
#: each) come last, one column per category slug in vocabulary order.
CSV_COLUMNS: tuple[str, ...] = (
    "period", "body", "ground", "outcome", "requests", "subjects", "subjects_affected",
    "reviewed", "overridden", "deadlines_missed", "median_days_to_decision", *CATEGORIES)

_OUTCOME_NAMES = {
    Outcome.APPROVED.value: "approved",
    Outcome.PARTIALLY_APPROVED.value: "partially approved",
    Outcome.REJECTED.value: "rejected",
    Outcome.NEEDS_REVIEW.value: "awaiting review",
    UNDECIDED: "not yet decided",
}
#: Okabe–Ito colours (safe for colour-blind readers), one per outcome.
_COLOURS = {
    Outcome.APPROVED.value: "#009E73",
    Outcome.PARTIALLY_APPROVED.value: "#E69F00",
    Outcome.REJECTED.value: "#D55E00",
    Outcome.NEEDS_REVIEW.value: "#0072B2",
    UNDECIDED: "#999999",
}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


# --- making the report ---------------------------------------------------------------------------

def make_report(*, settings: Settings, period: Period, breakdown: Breakdown | None,
                now: datetime | None = None) -> Report:
    """The statistics of ``period`` from the configured ledger (read only)."""
    engine = open_ledger(settings)
    try:
        with Session(read_only(engine)) as session:
            return transparency_statistics(session=session, period=period, breakdown=breakdown,
                                           now=now or datetime.now(UTC))
    finally:
        engine.dispose()


def report_name(report: Report) -> str:
    """The files' stem and the artifacts' key: ``transparency-2026-q3``, ``…-by-month``."""
    by = f"-by-{report.breakdown.value}" if report.breakdown else ""
    return f"transparency-{report.period.label.lower()}{by}"


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """The report's rows as the CSV has them (``None`` where no request was decided)."""
    return [_csv_row(row) for row in report.rows()]


def _csv_row(row: ReportRow) -> dict[str, Any]:
    tally = row.tally
    return {"period": row.period, "body": row.body, "ground": row.ground,
            "outcome": row.outcome, "requests": tally.requests, "subjects": tally.subjects,
            "subjects_affected": tally.subjects_affected, "reviewed": tally.reviewed,
            "overridden": tally.overridden, "deadlines_missed": tally.deadlines_missed,
            "median_days_to_decision": rounded_days(tally.median_days),
            **{c: tally.category_requests[c] for c in CATEGORIES}}


def summary(report: Report) -> dict[str, Any]:
    """The totals as JSON-ready data: the whole period and each of its quarters or months."""
    return {
        "report": report_name(report),
        "period": report.period.label,
        "first_day": report.period.first.isoformat(),
        "last_day": report.period.last.isoformat(),
        "days_of_receipt_in": "Europe/Amsterdam",
        "breakdown": report.breakdown.value if report.breakdown else None,
        "made_at": report.made_at.isoformat(timespec="seconds"),
        "deadline_cutoff": report.cutoff.isoformat(timespec="seconds"),
        "totals": report.total.to_dict(),
        "bodies": {body: tally.to_dict() for body, tally in report.by_body().items()},
        "periods": [{"period": p.label, **report.part_totals[p.label].to_dict()}
                    for p in report.parts] if report.breakdown else [],
    }


# --- Markdown ------------------------------------------------------------------------------------

def _long_date(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def duration(days: float | None) -> str:
    """A time to decision for people: minutes, hours or days."""
    if days is None:
        return "—"
    if days * 24 * 60 < 90:
        return f"{days * 24 * 60:.0f} min"
    if days * 24 < 48:
        return f"{days * 24:.1f} h"
    return f"{days:.1f} days"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    align = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _outcome_cells(tally: Tally) -> list[int]:
    return [tally.outcomes.get(o, 0) for o in OUTCOMES]


def markdown(report: Report, *, chart: str | None = None) -> str:
    """The summary for people; ``chart`` is the file name of the chart to show, if any."""
    total = report.total
    period = report.period
    lines = [f"# Transparency report {period.label}", "",
             f"Requests for personal data that DUO received from other organisations from "
             f"{_long_date(period.first)} to {_long_date(period.last)} (day of receipt, Dutch "
             f"time), and what was decided on them. Counts only: nobody can be identified from "
             f"this report. Made {report.made_at:%Y-%m-%d %H:%M} UTC from the disclosure "
             "ledger.", ""]
    if chart:
        lines += [f"![Requests per requesting body, by outcome]({chart})", ""]
    lines += ["## In numbers", ""]
    lines += _table(["", "number"], [
        ("Requests received", total.requests),
        ("… of which invalid submissions (rejected)", total.invalid),
        *((f"Outcome: {_OUTCOME_NAMES[o]}", total.outcomes.get(o, 0)) for o in OUTCOMES),
        ("Data subjects named in the requests", total.subjects),
        ("Distinct persons whose data was released", total.subjects_affected),
        ("Decided by a legal reviewer", total.reviewed),
        ("… where the reviewer released other than the engine proposed", total.overridden),
        ("Statutory deadlines missed", total.deadlines_missed),
        ("Median time to decision", duration(total.median_days)),
        ("… decided by the engine alone", duration(total.median_days_engine)),
        ("… decided after legal review", duration(total.median_days_reviewed)),
    ])
    outcome_header = [_OUTCOME_NAMES[o] for o in OUTCOMES]
    lines += ["", "## Per requesting body", ""]
    lines += _table(
        ["body", "requests", *outcome_header, "subjects named", "persons released",
         "reviewed", "overridden", "deadlines missed", "median time"],
        [(body, t.requests, *_outcome_cells(t), t.subjects, t.subjects_affected, t.reviewed,
          t.overridden, t.deadlines_missed, duration(t.median_days))
         for body, t in report.by_body().items()])
    lines += ["", "## Per ground", ""]
    grounds = report.by_ground()
    lines += _table(
        ["ground", "requests", *outcome_header, "subjects named", "reviewed", "overridden",
         "deadlines missed", "median time"],
        [(f"`{ground}`", t.requests, *_outcome_cells(t), t.subjects, t.reviewed, t.overridden,
          t.deadlines_missed, duration(t.median_days)) for ground, t in grounds.items()]
    ) if grounds else ["No requests."]
    lines += ["", "## Categories released", ""]
    lines += _table(
        ["category", "requests that released it", "subject-releases"],
        [(f"{c}{' (special category)' if Category(c).special else ''}",
          total.category_requests[c], total.category_subjects[c]) for c in CATEGORIES])
    if report.breakdown:
        lines += ["", f"## Per {report.breakdown.value}", ""]
        lines += _table(
            [report.breakdown.value, "requests", *outcome_header, "subjects named",
             "persons released", "reviewed", "overridden", "deadlines missed", "median time"],
            [(p.label, t.requests, *_outcome_cells(t), t.subjects, t.subjects_affected,
              t.reviewed, t.overridden, t.deadlines_missed, duration(t.median_days))
             for p in report.parts for t in [report.part_totals[p.label]]])
    lines += ["", "## How this is counted", "",
              "* A request counts in the period of its day of receipt (Dutch time), under the "
              "requesting body, the ground it claimed (`—`: none) and the outcome of the "
              "decision in force (a reviewer's decision replaces the engine's). Invalid "
              "submissions count as rejected.",
              "* *Subjects named* adds up the persons each request named; *persons released* "
              "counts each person once, over the requests that released data.",
              "* *Subject-releases*: for each category, the persons named in the requests that "
              "released it.",
              "* *Overridden*: the reviewer released other categories than the engine proposed.",
              "* *Deadline missed*: decided after the end of the deadline day, or still awaiting "
              f"review after it on {report.cutoff:%Y-%m-%d %H:%M} UTC (the end of the period, "
              "or when the report was made if that is earlier).",
              "* *Time to decision*: from receipt to the decision in force; the median over the "
              "decided requests."]
    return "\n".join(lines) + "\n"


# --- the chart -----------------------------------------------------------------------------------

_SVG_NS = "http://www.w3.org/2000/svg"
_WIDTH = 960
_LEFT = 210  # room for the body names
_RIGHT = 70  # room for the totals beside the bars
_BAR = 22
_GAP = 10
_FONT = "font-family:Helvetica,Arial,sans-serif"


def _nice_max(value: int) -> tuple[int, int]:
    """An axis end at or above ``value`` and its tick step (1, 2 or 5 × 10^n, ≤ 8 ticks)."""
    if value <= 0:
        return 1, 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if value / (step * factor) <= 8:
                top = -(-value // (step * factor)) * step * factor
                return top, step * factor
        step *= 10


def _text(parent: ET.Element, x: float, y: float, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, "text", {"x": f"{x:.1f}", "y": f"{y:.1f}", **attrs})
    element.text = text
    return element


def _panel(svg: ET.Element, *, top: float, heading: str, axis_label: str, kind: str,
           bars: Sequence[tuple[str, Tally]]) -> float:
    """Horizontal stacked bars (one per name, segments per outcome) with their axes; returns
    the y below the panel."""
    plot_width = _WIDTH - _LEFT - _RIGHT
    biggest = max((t.requests for _, t in bars), default=0)
    axis_end, step = _nice_max(biggest)
    _text(svg, _LEFT, top, heading, style=f"{_FONT};font-size:15px;font-weight:bold")
    plot_top = top + 14
    height = len(bars) * (_BAR + _GAP) + _GAP
    group = ET.SubElement(svg, "g", {"class": f"panel {kind}-panel"})
    for tick in range(0, axis_end + 1, step):
        x = _LEFT + plot_width * tick / axis_end
        ET.SubElement(group, "line", {"x1": f"{x:.1f}", "x2": f"{x:.1f}",
                                      "y1": f"{plot_top:.1f}", "y2": f"{plot_top + height:.1f}",
                                      "stroke": "#dddddd", "stroke-width": "1"})
        _text(group, x, plot_top + height + 16, f"{tick:,}",
              style=f"{_FONT};font-size:12px", **{"text-anchor": "middle"})
    for index, (name, tally) in enumerate(bars):
        y = plot_top + _GAP + index * (_BAR + _GAP)
        bar = ET.SubElement(group, "g", {"class": f"bar {kind}-bar", f"data-{kind}": name})
        _text(bar, _LEFT - 8, y + _BAR * 0.7, name,
              style=f"{_FONT};font-size:13px", **{"text-anchor": "end"})
        x = float(_LEFT)
        for outcome in OUTCOMES:
            count = tally.outcomes.get(outcome, 0)
            if not count:
                continue
            width = plot_width * count / axis_end
            segment = ET.SubElement(bar, "rect", {
                "x": f"{x:.1f}", "y": f"{y:.1f}", "width": f"{width:.1f}",
                "height": str(_BAR), "fill": _COLOURS[outcome], "data-outcome": outcome})
            ET.SubElement(segment, "title").text = (
                f"{name}: {count:,} {_OUTCOME_NAMES[outcome]} of {tally.requests:,}")
            x += width
        _text(bar, x + 6, y + _BAR * 0.7, f"{tally.requests:,}",
              style=f"{_FONT};font-size:12px")
    ET.SubElement(group, "line", {"x1": str(_LEFT), "x2": str(_LEFT), "y1": f"{plot_top:.1f}",
                                  "y2": f"{plot_top + height:.1f}", "stroke": "#333333"})
    ET.SubElement(group, "line", {"x1": str(_LEFT), "x2": str(_LEFT + plot_width),
                                  "y1": f"{plot_top + height:.1f}",
                                  "y2": f"{plot_top + height:.1f}", "stroke": "#333333"})
    _text(group, _LEFT + plot_width / 2, plot_top + height + 36, "Requests received",
          style=f"{_FONT};font-size:13px", **{"text-anchor": "middle"})
    middle = plot_top + height / 2
    _text(group, 18, middle, axis_label, style=f"{_FONT};font-size:13px",
          transform=f"rotate(-90 18 {middle:.1f})", **{"text-anchor": "middle"})
    if biggest == 0:
        _text(group, _LEFT + plot_width / 2, middle, "No requests were received in this period.",
              style=f"{_FONT};font-size:14px;fill:#555555", **{"text-anchor": "middle"})
    return plot_top + height + 60


def chart_svg(report: Report) -> str:
    """The chart as SVG text: requests per requesting body stacked by outcome, and per quarter or
    month when the report is broken down; title, axis labels and legend included."""
    period = report.period
    svg = ET.Element("svg", {"xmlns": _SVG_NS, "width": str(_WIDTH), "role": "img",
                             "aria-labelledby": "chart-title chart-desc"})
    title = f"Transparency report {period.label}: requests by outcome"
    ET.SubElement(svg, "title", {"id": "chart-title"}).text = title
    ET.SubElement(svg, "desc", {"id": "chart-desc"}).text = (
        f"{report.total.requests:,} requests received from {period.first.isoformat()} to "
        f"{period.last.isoformat()}, per requesting body"
        + (f" and per {report.breakdown.value}" if report.breakdown else "")
        + ", coloured by the outcome of the decision in force.")
    ET.SubElement(svg, "rect", {"width": "100%", "height": "100%", "fill": "#ffffff"})
    _text(svg, 20, 32, title, style=f"{_FONT};font-size:20px;font-weight:bold")
    _text(svg, 20, 54, f"Requests for personal data received {_long_date(period.first)} – "
          f"{_long_date(period.last)} (Dutch time): {report.total.requests:,}, by outcome of the "
          "decision in force", style=f"{_FONT};font-size:13px;fill:#444444")
    legend = ET.SubElement(svg, "g", {"class": "legend"})
    x = 20.0
    for outcome in OUTCOMES:
        ET.SubElement(legend, "rect", {"x": f"{x:.1f}", "y": "68", "width": "14", "height": "14",
                                       "fill": _COLOURS[outcome]})
        label = f"{_OUTCOME_NAMES[outcome]} ({report.total.outcomes.get(outcome, 0):,})"
        _text(legend, x + 20, 80, label, style=f"{_FONT};font-size:13px")
        x += 20 + 7.0 * len(label) + 22
    bottom = _panel(svg, top=116, heading="Per requesting body", axis_label="Requesting body",
                    kind="body", bars=list(report.by_body().items()))
    if report.breakdown:
        bottom = _panel(svg, top=bottom, heading=f"Per {report.breakdown.value}",
                        axis_label=report.breakdown.value.capitalize(), kind="period",
                        bars=[(p.label, report.part_totals[p.label]) for p in report.parts])
    height = f"{bottom:.0f}"
    svg.set("height", height)
    svg.set("viewBox", f"0 0 {_WIDTH} {height}")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(svg, encoding="unicode") + "\n")


# --- files ---------------------------------------------------------------------------------------

def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write the CSV, the summary JSON, the Markdown and the chart into ``out``; return them."""
    out.mkdir(parents=True, exist_ok=True)
    stem = report_name(report)
    files = {"csv": out / f"{stem}.csv", "summary": out / f"{stem}-summary.json",
             "markdown": out / f"{stem}.md", "chart": out / f"{stem}.svg"}
    with files["csv"].open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(report))
    files["summary"].write_text(json.dumps(summary(report), indent=2, ensure_ascii=False) + "\n",
                                "utf-8")
    files["chart"].write_text(chart_svg(report), "utf-8")
    files["markdown"].write_text(markdown(report, chart=files["chart"].name), "utf-8")
    return files


# --- the flow ------------------------------------------------------------------------------------

@flow(name="transparency-report", persist_result=False,
      description="Count the requests received in a period (per body, ground and outcome) and "
                  "publish the transparency report as Markdown and table artifacts.")
def transparency_report(period: str, breakdown: str | None = None) -> Report:
    """Make the transparency report of ``period`` (``2026``, ``2026-Q3``, ``2026-07``), by
    ``breakdown`` (``quarter``, ``month`` or none), and publish it as artifacts."""
    parsed = parse_period(period)
    by = parse_breakdown(breakdown)
    parsed.split(by)  # refuse an impossible breakdown before touching the ledger
    report = make_report(settings=load_settings(), period=parsed, breakdown=by)
    key = report_name(report)
    create_markdown_artifact(key=key, markdown=markdown(report),
                             description=f"Transparency report {parsed.label} (counts only)")
    create_table_artifact(key=f"{key}-rows", table=csv_rows(report),
                          description=f"Transparency report {parsed.label}: one row per period "
                                      "× body × ground × outcome")
    get_logger("report").info("transparency_report_published", report=key,
                              requests=report.total.requests, rows=len(report.cells))
    return report


# --- the command ---------------------------------------------------------------------------------

def _period(text: str) -> Period:
    try:
        return parse_period(text)
    except PeriodError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _publish(settings: Settings, period: Period, by: Breakdown | None) -> tuple[Report, str]:
    api_url = answering_api_url(settings.prefect_port, needed_for="--publish",
                                home=settings.data_dir / "prefect")
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        state = transparency_report(period=period.label, breakdown=by.value if by else None,
                                    return_state=True)
        report: Report = state.result()  # raises what failed the run
        run_id = str(state.state_details.flow_run_id)
        ui = PREFECT_UI_URL.value()
    return report, f"{ui}/runs/flow-run/{run_id}" if ui else f"flow run {run_id}"


def _say(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def cmd_report(args: argparse.Namespace) -> int:
    from cli.arguments import UsageError  # noqa: PLC0415 - cli.main imports this module

    period: Period = args.period
    by: Breakdown | None = Breakdown(args.by) if args.by else None
    try:
        period.split(by)
    except PeriodError as exc:
        raise UsageError(str(exc)) from None
    settings = load_settings()
    published = None
    if args.publish:
        report, published = _publish(settings, period, by)
    else:
        report = make_report(settings=settings, period=period, breakdown=by)
    files = write_report(report, args.out or settings.data_dir / "reports")
    total = report.total
    per = f" per {by.value}" if by else ""
    _say(f"Transparency report {period.label}{per} "
         f"({period.first.isoformat()} – {period.last.isoformat()}, Dutch time)")
    _say(f"  {total.requests:,} requests ({total.invalid:,} invalid); "
         + ", ".join(f"{total.outcomes.get(o, 0):,} {_OUTCOME_NAMES[o]}" for o in OUTCOMES))
    _say(f"  {total.subjects:,} subjects named; {total.subjects_affected:,} distinct persons "
         "whose data was released")
    _say(f"  {total.reviewed:,} decided by a reviewer ({total.overridden:,} overriding the "
         f"engine's proposal); {total.deadlines_missed:,} deadlines missed")
    _say(f"  median time to decision {duration(total.median_days)} (engine alone "
         f"{duration(total.median_days_engine)}, after review "
         f"{duration(total.median_days_reviewed)})")
    _say()
    width = max(len(name) for name in files)
    for name, path in files.items():
        _say(f"  {name.ljust(width)}  {path}")
    if published:
        _say(f"\nPublished as artifacts {report_name(report)} and {report_name(report)}-rows: "
             f"{published}")
    return 0


def register(sub: Any) -> None:
    """Add ``disclosure report`` to the command line."""
    parser = sub.add_parser(
        "report", help="the transparency report of a period: CSV, summary, Markdown, chart",
        description="Count the requests received in a period (days of receipt, Dutch time) per "
                    "requesting body, ground and outcome of the decision in force, and write "
                    "the transparency report: a CSV (one row per period × body × ground × "
                    "outcome), a summary (JSON), a Markdown summary and an SVG chart. Counts "
                    "only. Exit 0 when written, 2 for a bad period.")
    parser.add_argument("--period", required=True, type=_period, metavar="PERIOD",
                        help="a year (2026), a quarter (2026-Q3) or a month (2026-07)")
    parser.add_argument("--by", choices=[b.value for b in Breakdown], default=None,
                        help="one row (and bar) per quarter or month of the period")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the files (default <DISCLOSURE_DATA_DIR>/reports, "
                             "i.e. var/reports)")
    parser.add_argument("--publish", action="store_true",
                        help="make the report as the Prefect flow transparency-report on the "
                             "configured server (PREFECT_API_URL, else the local one of "
                             "`disclosure up`), which publishes it as artifacts")
    parser.set_defaults(handler=cmd_report)
