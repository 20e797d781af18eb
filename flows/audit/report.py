"""The flow ``transparency-report``: what other organisations asked DUO for in a period, and what
became of it, counted from the ledger and published as artifacts.

The flow (parameters: the period and the breakdown, nothing else) makes the report and publishes
it as two artifacts: the Markdown summary (key ``transparency-<period>[-by-…]``) and the CSV rows
as a table (the same key + ``-rows``). ``disclosure report --publish`` (:mod:`cli.report`) runs
it against the configured Prefect server and writes the files too. Everything in the report is
a count: no identifier, no pseudonym (records/statistics.py says how each number is counted;
flows/audit/report_render.py says it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlmodel import Session

from flows.audit.report_render import csv_rows, markdown, report_name
from flows.logs import get_logger
from flows.runtime import open_ledger
from records.db import read_only
from records.settings import Settings, load_settings
from records.statistics import (
    Breakdown,
    Period,
    Report,
    parse_breakdown,
    parse_period,
    transparency_statistics,
)


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
