"""The flow ``replay-decisions``: replay the requests received in a period inside Prefect and
publish the result as a Markdown and a table artifact (ids, no personal data).

``disclosure replay --from DATE --to DATE --publish`` runs it (:mod:`cli.replay`); the replay
itself is :mod:`records.replay`, what it says :mod:`flows.audit.replay_render`. Replay writes
nothing to the ledger.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from sqlalchemy import Engine

from flows.audit.replay_render import artifact_rows, markdown, row_of
from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases import limits
from legal_bases.table import GroundTable, load_table
from records.replay import replay_period
from records.replay_summary import Summary, Tally
from records.settings import load_settings

#: Artifact keys of the replay flow (the latest of each is on the Artifacts page).
MARKDOWN_KEY = "replay-decisions"
TABLE_KEY = "replay-decisions-table"


def _replay_with_rows(engine: Engine, first: date, last: date, against: GroundTable | None,
                      ) -> tuple[Summary, list[dict[str, Any]]]:
    """Replay a period; the rows of every request that does not agree, then agreeing ones, at
    most :data:`limits.REPLAY_ARTIFACT_MAX_ROWS` in all."""
    tally = Tally(first=first, last=last, against=against.hash if against else None)
    agreeing: list[dict[str, Any]] = []
    for replay in replay_period(engine, first=first, last=last, against=against):
        tally.add(replay)
        if replay.agrees and len(agreeing) < limits.REPLAY_ARTIFACT_MAX_ROWS:
            agreeing.append(row_of(replay))
    summary = tally.summary()
    rows = [row_of(r) for r in summary.not_agreeing] + agreeing
    return summary, rows[:limits.REPLAY_ARTIFACT_MAX_ROWS]


@flow(name="replay-decisions", persist_result=False,
      description="Re-derive the recorded decisions of the requests received in a period from "
                  "the ledger (or against today's table) and publish the result as artifacts.")
def replay_decisions(date_from: date, date_to: date,
                     against_current: bool = False) -> dict[str, Any]:
    """Replay the requests received ``date_from`` through ``date_to``; publish a Markdown and a
    table artifact; return the totals and the rows of the requests that do not agree."""
    log = get_logger("replay")
    settings = load_settings()
    engine = open_ledger(settings)
    against = load_table(settings.grounds_dir) if against_current else None
    try:
        summary, rows = _replay_with_rows(engine, date_from, date_to, against)
    finally:
        engine.dispose()
    table_rows = artifact_rows(rows)
    create_markdown_artifact(markdown=markdown(summary, rows, limits.REPLAY_ARTIFACT_MAX_ROWS),
                             key=MARKDOWN_KEY,
                             description="Replay of recorded decisions: totals and the requests "
                                         "that do not agree")
    create_table_artifact(table=table_rows, key=TABLE_KEY,
                          description=f"Replay per request ({len(table_rows)} of "
                                      f"{summary.requests}; those that do not agree first)")
    counts = summary.to_dict()
    log.info("replay_published", requests=summary.requests, agrees=summary.agrees,
             differs=summary.differs, cannot_replay=summary.cannot_replay,
             against_current=against_current)
    return {"flow_run_id": str(flow_run.id) if flow_run.id else None, "summary": counts,
            "not_agreeing": [r for r in rows if not r["agrees"]]}
