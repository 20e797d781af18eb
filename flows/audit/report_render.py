"""The transparency report said: the CSV rows, the summary JSON, the Markdown summary for
people, the hand-written SVG chart, and the totals the command prints. Pure functions of the
counted :class:`records.statistics.Report` (no I/O, no Prefect), shared by ``disclosure report``
(:mod:`cli.report`, which writes the files) and the ``transparency-report`` flow
(:mod:`flows.audit.report`, which publishes the Markdown and the rows as artifacts).
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import date
from typing import Any

from legal_bases.vocabulary import Category, Outcome
from records.statistics import (
    CATEGORIES,
    OUTCOMES,
    UNDECIDED,
    Report,
    ReportRow,
    Tally,
    rounded_days,
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


# --- the rows and the summary --------------------------------------------------------------------

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


def csv_text(report: Report) -> str:
    """The CSV file: a header of :data:`CSV_COLUMNS`, then :func:`csv_rows` (CRLF lines)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


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


def summary_json(report: Report) -> str:
    """The summary file: :func:`summary` as JSON."""
    return json.dumps(summary(report), indent=2, ensure_ascii=False) + "\n"


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


# --- the files and the command's totals ---------------------------------------------------------

def file_names(report: Report) -> dict[str, str]:
    """The report's files by kind, in the order the command lists them."""
    stem = report_name(report)
    return {"csv": f"{stem}.csv", "summary": f"{stem}-summary.json", "markdown": f"{stem}.md",
            "chart": f"{stem}.svg"}


def totals_lines(report: Report) -> list[str]:
    """What ``disclosure report`` prints of the report: its period and its totals."""
    period, total = report.period, report.total
    per = f" per {report.breakdown.value}" if report.breakdown else ""
    return [
        f"Transparency report {period.label}{per} "
        f"({period.first.isoformat()} – {period.last.isoformat()}, Dutch time)",
        f"  {total.requests:,} requests ({total.invalid:,} invalid); "
        + ", ".join(f"{total.outcomes.get(o, 0):,} {_OUTCOME_NAMES[o]}" for o in OUTCOMES),
        f"  {total.subjects:,} subjects named; {total.subjects_affected:,} distinct persons "
        "whose data was released",
        f"  {total.reviewed:,} decided by a reviewer ({total.overridden:,} overriding the "
        f"engine's proposal); {total.deadlines_missed:,} deadlines missed",
        f"  median time to decision {duration(total.median_days)} (engine alone "
        f"{duration(total.median_days_engine)}, after review "
        f"{duration(total.median_days_reviewed)})",
    ]
