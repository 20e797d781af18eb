"""``disclosure report``: the transparency report — what other organisations asked DUO for in a
period, and what became of it — as files for publication.

    disclosure report --period 2026 [--by quarter|month] [--out DIR] [--publish]

The period is a year (``2026``), a quarter (``2026-Q3``) or a month (``2026-07``) of days of
receipt in Dutch time; ``--by`` divides it into quarters or months. Into ``--out`` (default
``<DISCLOSURE_DATA_DIR>/reports``, i.e. ``var/reports``) go, named
``transparency-<period>[-by-<quarter|month>]``:

* ``.csv``: one row per period × requesting body × ground × outcome
  (:data:`flows.audit.report_render.CSV_COLUMNS`);
* ``-summary.json``: the totals of the whole period and of each quarter or month;
* ``.md``: the summary for people, with the chart;
* ``.svg``: the chart: requests per body (and per quarter or month) by outcome.

``--publish`` makes the report as the Prefect flow ``transparency-report``
(:mod:`flows.audit.report`), which publishes it as artifacts, and writes the files too.
Everything in the report is a count: no identifier, no pseudonym (records/statistics.py says
how each number is counted).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from cli.arguments import UsageError
from cli.local_prefect import answering_api_url
from flows.audit.report import make_report, transparency_report
from flows.audit.report_render import (
    chart_svg,
    csv_text,
    file_names,
    markdown,
    report_name,
    summary_json,
    totals_lines,
)
from records.settings import Settings, load_settings
from records.statistics import Breakdown, Period, PeriodError, Report, parse_period


def write_report(report: Report, out: Path) -> dict[str, Path]:
    """Write the CSV, the summary JSON, the Markdown and the chart into ``out``; return them."""
    out.mkdir(parents=True, exist_ok=True)
    files = {kind: out / name for kind, name in file_names(report).items()}
    files["csv"].write_text(csv_text(report), "utf-8", newline="")
    files["summary"].write_text(summary_json(report), "utf-8")
    files["chart"].write_text(chart_svg(report), "utf-8")
    files["markdown"].write_text(markdown(report, chart=files["chart"].name), "utf-8")
    return files


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


def cmd_report(args: argparse.Namespace) -> int:
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
    for line in totals_lines(report):
        print(line)
    print()
    width = max(len(name) for name in files)
    for name, path in files.items():
        print(f"  {name.ljust(width)}  {path}")
    if published:
        print(f"\nPublished as artifacts {report_name(report)} and {report_name(report)}-rows: "
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
