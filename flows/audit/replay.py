"""``disclosure replay``: re-derive recorded decisions from the ledger, and the flow that does it
inside Prefect (``replay-decisions``).

``disclosure replay REQUEST_ID`` gives a full account of one request: who asked what under which
ground version, the table it was decided with, the decision as recorded and as replayed, and
for a reviewed request the engine's proposal, every reviewer's answer and the checks of the
reviewed decision. ``disclosure replay --from DATE --to DATE`` replays every request received on
those days (Europe/Amsterdam) and prints the totals and one line per request that does not
agree. ``--against-current`` replays against today's table instead and lists the requests that
would now be decided differently. ``--publish`` runs the period's replay as the Prefect flow
``replay-decisions``, which publishes a Markdown and a table artifact (ids, no personal data).

Exit status: 0 when every replayed decision agrees (with ``--against-current`` always 0: the
differences are the finding), 1 when a recorded decision does not re-derive or cannot be
replayed, 2 for usage errors. Replay writes nothing to the ledger (see :mod:`records.replay`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from sqlalchemy import Engine

from cli.local_prefect import answering_api_url
from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases import limits
from legal_bases.table import GroundTable, load_table
from records.ledger import RECEIPT_TIMEZONE
from records.replay import (
    Replay,
    ReplayStatus,
    Summary,
    Tally,
    replay_period,
    replay_request,
)
from records.settings import load_settings

#: Artifact keys of the replay flow (the latest of each is on the Artifacts page).
MARKDOWN_KEY = "replay-decisions"
TABLE_KEY = "replay-decisions-table"

_STATUS_WORD = {ReplayStatus.AGREES: "AGREES", ReplayStatus.DIFFERS: "DIFFERS",
                ReplayStatus.CANNOT_REPLAY: "CANNOT REPLAY", ReplayStatus.UNDECIDED: "UNDECIDED"}


def _write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _list(values: Any) -> str:
    if values is None:
        return "—"
    if isinstance(values, dict):  # a proposal
        return (f"release {_list(values.get('released'))}; "
                f"withhold {_list(values.get('withheld'))}")
    return ", ".join(str(v) for v in values) or "—"


# -- the rows shared by the command line and the flow's artifacts -------------------------------

def row_of(replay: Replay) -> dict[str, Any]:
    """One request's replay as ids and outcomes (what an artifact may hold: no personal data)."""
    return {"request_id": replay.request_id, "partner": replay.partner_id,
            "ground": replay.ground_id or "", "version": replay.ground_version or "",
            "recorded_outcome": replay.recorded_outcome or "",
            "replayed_outcome": replay.replayed_outcome or "",
            "agrees": replay.agrees, "status": replay.status.value,
            "fields": list(replay.differing_fields), "problem": replay.problem}


def _line(row: dict[str, Any], *, against_current: bool) -> str:
    status = ReplayStatus(row["status"])
    word = ("WOULD CHANGE" if against_current and status is ReplayStatus.DIFFERS
            else _STATUS_WORD[status])
    head = f"{word:<13} {row['request_id']}  {row['partner']}  {row['ground'] or '—'}"
    if status is ReplayStatus.CANNOT_REPLAY:
        return f"{head}: {row['problem']}"
    if status is ReplayStatus.UNDECIDED:
        return f"{head}: no decision recorded yet"
    change = f"recorded {row['recorded_outcome']}"
    if row["replayed_outcome"] != row["recorded_outcome"]:
        change += f" → replayed {row['replayed_outcome']}"
    fields = ", ".join(row["fields"])
    return f"{head}: {change}" + (f"; differs in {fields}" if fields else "")


def _period_text(first: date, last: date) -> str:
    days = first.isoformat() if first == last else f"{first.isoformat()} – {last.isoformat()}"
    return f"{days} (days of receipt, {RECEIPT_TIMEZONE.key})"


def summary_lines(summary: dict[str, Any], rows: Sequence[dict[str, Any]], *,
                  table_source: str | None = None, seconds: float | None = None) -> list[str]:
    """The text report of a period's replay (``summary`` is :meth:`Summary.to_dict`)."""
    against = summary["against"]
    first, last = date.fromisoformat(summary["first"]), date.fromisoformat(summary["last"])
    lines = [f"Replay of {summary['requests']} request(s) received {_period_text(first, last)}",
             (f"against today's table {against}" + (f" ({table_source})" if table_source else "")
              if against else "against the table recorded with each decision (ledger snapshots)"),
             ""]
    differ_label = "would change" if against else "differ"
    counts = [("agree", summary["agrees"]), (differ_label, summary["differs"]),
              ("cannot replay", summary["cannot_replay"]),
              ("not yet decided", summary["undecided"])]
    lines += [f"  {label:<16}{value:>8}" for label, value in counts]
    reviewed = f"  {'reviewed':<16}{summary['reviewed']:>8}"
    if not against:
        reviewed += f"  (review checks failed: {summary['review_checks_failed']})"
    lines.append(reviewed)
    for n, table in enumerate(summary["tables"]):
        label = "tables used" if n == 0 else ""
        lines.append(f"  {label:<16}{table['requests']:>8}  {table['table_hash']}")
    if seconds is not None and seconds > 0:
        lines.append(f"  {'time':<16}{seconds:>8.1f} s  "
                     f"({summary['requests'] / seconds:,.0f} requests/s)")
    if rows:
        lines.append("")
        lines += [_line(row, against_current=bool(against)) for row in rows]
    lines.append("")
    failing = summary["differs"] + summary["cannot_replay"]
    if against:
        lines.append(f"{summary['differs']} request(s) would now be decided differently"
                     + (f"; {summary['cannot_replay']} cannot be replayed"
                        if summary["cannot_replay"] else ""))
    elif failing:
        lines.append(f"{failing} recorded decision(s) do not re-derive or cannot be replayed")
    else:
        lines.append("every recorded decision re-derives from its recorded table")
    return lines


# -- one request ------------------------------------------------------------------------------

def account_lines(replay: Replay) -> list[str]:
    """The full account of one request's replay, for a person."""
    lines = [
        f"request        {replay.request_id}" + (f"  (partner reference {replay.reference})"
                                                 if replay.reference else ""),
        f"partner        {replay.partner_id} ({replay.requester_body})",
        f"received       {replay.received_on.isoformat()} ({RECEIPT_TIMEZONE.key})",
        f"reference date {replay.reference_date.isoformat() if replay.reference_date else '—'}",
        f"subjects       {replay.subject_count if replay.subject_count is not None else '—'}",
        f"ground         {replay.ground_id or '—'}"
        + (f", version {replay.ground_version}" if replay.ground_version else ""),
    ]
    if replay.citation:
        lines.append(f"               {replay.citation}  {replay.citation_url or ''}".rstrip())
    lines.append(f"table          {replay.table_hash or '—'} (recorded)")
    if replay.replay_table_hash is not None:
        whose = "today's table" if replay.against_current else "the recorded snapshot"
        lines.append(f"replayed with  {replay.replay_table_hash} ({whose})")
    lines.append("")
    if replay.status is ReplayStatus.UNDECIDED:
        return [*lines, "UNDECIDED: no decision is recorded yet; nothing to replay"]
    lines += _decision_lines(replay)
    lines.append("")
    if replay.status is ReplayStatus.CANNOT_REPLAY:
        lines.append(f"CANNOT REPLAY: {replay.problem}")
    elif replay.differences:
        fields = ", ".join(d.field for d in replay.differences)
        lines.append(f"DIFFERS: today's table decides this request differently, in {fields}"
                     if replay.against_current else
                     f"DIFFERS: the recorded decision does not re-derive, in {fields}")
        lines += [f"  {d.field}: recorded {json.dumps(d.recorded, ensure_ascii=False)}, "
                  f"replayed {json.dumps(d.replayed, ensure_ascii=False)}"
                  for d in replay.differences]
    elif replay.review is not None and not replay.review.ok:
        lines.append("DIFFERS: the engine's decision re-derives, but the review checks below "
                     "fail")
    else:
        lines.append("AGREES: the engine decides the same"
                     + (" against today's table" if replay.against_current else ""))
    lines += [f"note: {note}" for note in replay.notes]
    if replay.review is not None:
        lines += ["", *_review_lines(replay)]
    return lines


def _decision_lines(replay: Replay) -> list[str]:
    recorded, replayed = replay.recorded or {}, replay.replayed or {}

    def cells(decision: dict[str, Any]) -> dict[str, str]:
        if not decision:
            return {}
        return {"outcome": decision["outcome"], "released": _list(decision["released"]),
                "withheld": _list(decision["withheld"]),
                "reasons": _list(r["code"] for r in decision["reasons"]),
                "review triggers": _list(t["code"] for t in decision["review_triggers"]),
                "proposal": _list(decision["proposal"]),
                "ground version": decision["ground_version"] or "—"}

    was, now = cells(recorded), cells(replayed)
    width = max([len("recorded"), *(len(v) for v in was.values())]) + 2
    lines = [f"{'':<16}{'recorded':<{width}}replayed"]
    for key, value in was.items():
        lines.append(f"{key:<16}{value:<{width}}{now.get(key, '—')}".rstrip())
    citations = {r["code"]: r["citation"] for r in recorded.get("reasons", [])}
    for code, citation in citations.items():
        lines.append(f"  {code}: {citation.get('law')} art. {citation.get('article')}"
                     + (f" lid {citation['paragraph']}" if citation.get("paragraph") else ""))
    return lines


def _review_lines(replay: Replay) -> list[str]:
    review = replay.review
    assert review is not None
    lines = ["review", f"  engine's proposal: {_list(review.proposal)}"]
    if not review.answers:
        lines.append("  no answers recorded")
    for a in review.answers:
        state = "accepted" if a.accepted else f"refused ({a.refusal_code}: {a.refusal_message})"
        lines.append(f"  answer {a.seq}  {a.answered_at.isoformat()}  {a.reviewer_id} "
                     f"({a.role or 'role unknown'})  {a.verdict} [{_list(a.categories)}]  "
                     f"step {a.step or '—'}  {state}")
        lines.append(f"           motivation: {a.motivation}")
    for d in review.decisions:
        lines.append(f"  decision {d.sequence}: {d.outcome} by {d.decided_by} on "
                     f"{d.decided_at.isoformat()}; released {_list(d.released)}, "
                     f"withheld {_list(d.withheld)}")
    if review.pending:
        lines.append("  pending: no reviewer has decided yet")
    if replay.against_current:
        lines.append("  (the review checks are made against the recorded table, "
                     "without --against-current)")
    for check in review.checks:
        lines.append(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    return lines


# -- the flow ----------------------------------------------------------------------------------

def _markdown(summary: Summary, rows: Sequence[dict[str, Any]], shown: int) -> str:
    data = summary.to_dict()
    first, last = date.fromisoformat(data["first"]), date.fromisoformat(data["last"])
    against = (f"today's table `{summary.against}`" if summary.against
               else "the table recorded with each decision (ledger snapshots)")
    out = [f"# Replay of recorded decisions, {_period_text(first, last)}", "",
           f"Replayed against {against}.", "",
           "| | requests |", "|---|---:|",
           f"| agree | {summary.agrees} |",
           f"| {'would change' if summary.against else 'differ'} | {summary.differs} |",
           f"| cannot replay | {summary.cannot_replay} |",
           f"| not yet decided | {summary.undecided} |",
           f"| reviewed | {summary.reviewed} |", ""]
    if not summary.against:
        out += [f"Review checks failed: {summary.review_checks_failed}.", ""]
    out += ["Tables used:", ""]
    out += [f"* `{t['table_hash']}`: {t['requests']} requests" for t in data["tables"]]
    out.append("")
    failing = [r for r in rows if not r["agrees"]][:shown]
    if failing:
        out += [f"## Requests that do not agree ({len(summary.not_agreeing)})", "",
                "| request | partner | ground | version | recorded | replayed | differs in |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['request_id']} | {r['partner']} | {r['ground']} | {r['version']} | "
                f"{r['recorded_outcome']} | {r['replayed_outcome']} | "
                f"{', '.join(r['fields']) or r['problem'] or ''} |" for r in failing]
        if len(summary.not_agreeing) > len(failing):
            out.append(f"\n{len(summary.not_agreeing) - len(failing)} more not listed.")
    else:
        out.append("Every replayed decision agrees." if not summary.against
                   else "No request would now be decided differently.")
    return "\n".join(out) + "\n"


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
    table_rows = [{k: r[k] for k in ("request_id", "partner", "ground", "version",
                                     "recorded_outcome", "replayed_outcome", "agrees")}
                  for r in rows]
    create_markdown_artifact(markdown=_markdown(summary, rows, limits.REPLAY_ARTIFACT_MAX_ROWS),
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


# -- the command line --------------------------------------------------------------------------

def _exit_status(against_current: bool, *, differs: int, cannot_replay: int) -> int:
    if against_current:
        return 0
    return 1 if differs or cannot_replay else 0


def cmd_replay(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.replay_parser
    if args.request is not None and (args.date_from is not None or args.date_to is not None):
        parser.error("give a REQUEST_ID or --from/--to, not both")
    if args.request is not None and (args.publish or args.all):
        parser.error("--publish and --all go with --from/--to")
    period: tuple[date, date] | None = None
    if args.request is None:
        if args.date_from is None:
            parser.error("give a REQUEST_ID, or --from DATE (and --to DATE)")
        period = (args.date_from, args.date_to or args.date_from)
        if period[1] < period[0]:
            parser.error(f"--to {period[1]} is before --from {period[0]}")
    if period is not None and args.publish:
        return _publish(args, *period)
    settings = load_settings()
    against = load_table(settings.grounds_dir) if args.against_current else None
    engine = open_ledger(settings)
    try:
        if period is None:
            return _one(engine, args.request, against, as_json=args.json)
        return _period(engine, *period, against, as_json=args.json, everything=args.all)
    finally:
        engine.dispose()


def _one(engine: Engine, request_id: str, against: GroundTable | None, *, as_json: bool) -> int:
    replay = replay_request(engine, request_id, against=against)
    if replay is None:
        sys.stderr.write(f"disclosure: no request {request_id} in the ledger\n")
        return 1
    if as_json:
        _write(json.dumps(replay.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in account_lines(replay):
            _write(line)
    return _exit_status(against is not None,
                        differs=replay.status is ReplayStatus.DIFFERS,
                        cannot_replay=replay.status is ReplayStatus.CANNOT_REPLAY)


def _period(engine: Engine, first: date, last: date, against: GroundTable | None, *,
            as_json: bool, everything: bool) -> int:
    started = time.perf_counter()
    tally = Tally(first=first, last=last, against=against.hash if against else None)
    listed: list[Replay] = []  # with --all: the others, after those that do not agree
    for replay in replay_period(engine, first=first, last=last, against=against):
        tally.add(replay)
        if everything and replay.status in (ReplayStatus.AGREES, ReplayStatus.UNDECIDED):
            listed.append(replay)
    seconds = time.perf_counter() - started
    summary = tally.summary()
    shown = [*summary.not_agreeing, *listed]
    if as_json:
        _write(json.dumps({"summary": {**summary.to_dict(), "seconds": round(seconds, 3)},
                           "requests": [r.to_dict() for r in shown]},
                          indent=2, ensure_ascii=False))
    else:
        for line in summary_lines(summary.to_dict(), [row_of(r) for r in shown],
                                  table_source=against.source if against else None,
                                  seconds=seconds):
            _write(line)
    return _exit_status(against is not None, differs=summary.differs,
                        cannot_replay=summary.cannot_replay)


def _publish(args: argparse.Namespace, first: date, last: date) -> int:
    settings = load_settings()
    with temporary_settings(updates={PREFECT_API_URL: answering_api_url(
            settings.prefect_port, needed_for="--publish",
            home=settings.data_dir / "prefect")}):
        result = replay_decisions(date_from=first, date_to=last,
                                  against_current=args.against_current)
        ui = PREFECT_UI_URL.value()
    summary = result["summary"]
    if args.json:
        _write(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        for line in summary_lines(summary, result["not_agreeing"]):
            _write(line)
        where = f" ({ui}/runs/flow-run/{result['flow_run_id']})" if ui else ""
        _write(f"published as artifacts {MARKDOWN_KEY} and {TABLE_KEY} of flow run "
               f"{result['flow_run_id']}{where}")
    return _exit_status(args.against_current, differs=summary["differs"],
                        cannot_replay=summary["cannot_replay"])


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(sub: Any) -> None:
    """Add ``replay`` to the ``disclosure`` command line."""
    replay = sub.add_parser(
        "replay", help="re-derive recorded decisions from the ledger; exit 1 if one does not",
        description="Re-run the assessment of recorded requests against the table recorded "
                    "with each decision (the ledger's snapshots) and report whether the engine "
                    "decides the same; for reviewed requests show the proposal, the answers "
                    "and check the reviewed decision. Writes nothing. Exit 0 when every "
                    "decision agrees (with --against-current always 0), 1 when one does not "
                    "re-derive or cannot be replayed, 2 for usage errors.")
    replay.add_argument("request", nargs="?", default=None, metavar="REQUEST_ID",
                        help="one request: print its full account")
    replay.add_argument("--from", dest="date_from", type=_date, default=None, metavar="DATE",
                        help="first day of receipt (Europe/Amsterdam) of a period to replay")
    replay.add_argument("--to", dest="date_to", type=_date, default=None, metavar="DATE",
                        help="last day of receipt, inclusive (default: --from)")
    replay.add_argument("--against-current", action="store_true",
                        help="replay against today's table of grounds (DISCLOSURE_GROUNDS_DIR) "
                             "and list the requests that would now be decided differently")
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.add_argument("--all", action="store_true",
                        help="with a period: list every request, not only those that do not "
                             "agree")
    replay.add_argument("--publish", action="store_true",
                        help="with a period: run it as the Prefect flow replay-decisions, which "
                             "publishes the result as artifacts in the configured Prefect "
                             "server")
    replay.set_defaults(handler=cmd_replay, replay_parser=replay)
