"""What replay found, said for people and for artifacts: the full account of one request, the
text report of a period, the Markdown and the table rows the ``replay-decisions`` flow
publishes, and the JSON the command prints. Pure functions of the replays (no I/O, no Prefect),
shared by ``disclosure replay`` (:mod:`cli.replay`) and the flow (:mod:`flows.audit.replay`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from records.ledger import RECEIPT_TIMEZONE
from records.replay_results import Answer, Replay, ReplayStatus
from records.replay_summary import Summary

_STATUS_WORD = {ReplayStatus.AGREES: "AGREES", ReplayStatus.DIFFERS: "DIFFERS",
                ReplayStatus.CANNOT_REPLAY: "CANNOT REPLAY", ReplayStatus.UNDECIDED: "UNDECIDED",
                ReplayStatus.SHREDDED: "SHREDDED"}


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
            "fields": list(replay.differing_fields), "problem": replay.problem,
            "shredded_on": replay.shredded_on.isoformat() if replay.shredded_on else None}


def _line(row: dict[str, Any], *, against_current: bool) -> str:
    status = ReplayStatus(row["status"])
    word = ("WOULD CHANGE" if against_current and status is ReplayStatus.DIFFERS
            else _STATUS_WORD[status])
    head = f"{word:<13} {row['request_id']}  {row['partner']}  {row['ground'] or '—'}"
    if status is ReplayStatus.CANNOT_REPLAY:
        return f"{head}: {row['problem']}"
    if status is ReplayStatus.UNDECIDED:
        return f"{head}: no decision recorded yet"
    if status is ReplayStatus.SHREDDED:
        return (f"{head}: shredded under retention on {row['shredded_on']}; recorded "
                f"{row['recorded_outcome']} holds against its table snapshot")
    change = f"recorded {row['recorded_outcome']}"
    if row["replayed_outcome"] != row["recorded_outcome"]:
        change += f" → replayed {row['replayed_outcome']}"
    fields = ", ".join(row["fields"])
    return f"{head}: {change}" + (f"; differs in {fields}" if fields else "")


def _period_text(first: date, last: date) -> str:
    days = first.isoformat() if first == last else f"{first.isoformat()} – {last.isoformat()}"
    return f"{days} (days of receipt, {RECEIPT_TIMEZONE.key})"


#: The width of a label in the period's summary.
_LABEL = 24


def summary_lines(summary: dict[str, Any], rows: Sequence[dict[str, Any]], *,
                  table_source: str | None = None, seconds: float | None = None) -> list[str]:
    """The text report of a period's replay (``summary`` is :meth:`Summary.to_dict`)."""
    against = summary["against"]
    first, last = date.fromisoformat(summary["first"]), date.fromisoformat(summary["last"])
    lines = [f"Replay of {summary['requests']} request(s) received {_period_text(first, last)}",
             (f"against today's table {against}" + (f" ({table_source})" if table_source else "")
              if against else "against the table recorded with each decision (ledger snapshots)"),
             ""]
    # the first five add up to the requests in all; the lines after them count again
    differ_label = "would change" if against else "differ"
    counts = [("agree", summary["agrees"]), (differ_label, summary["differs"]),
              ("cannot replay", summary["cannot_replay"]),
              ("not yet decided", summary["undecided"]),
              ("shredded", summary.get("shredded", 0)),
              ("requests in all", summary["requests"])]
    lines += [f"  {label:<{_LABEL}}{value:>6}" for label, value in counts]
    reviewed = (f"  {'of which reviewed':<{_LABEL}}{summary['reviewed']:>6}  (decided by a "
                "legal reviewer")
    lines.append(reviewed + (")" if against else
                             f"; review checks failed: {summary['review_checks_failed']})"))
    tables = summary["tables"]
    lines.append(f"  {'tables of grounds used':<{_LABEL}}{len(tables):>6}")
    lines += [f"    table {table['table_hash']}: {table['requests']} request(s) replayed "
              "against it" for table in tables]
    if seconds is not None and seconds > 0:
        lines.append(f"  {'time':<{_LABEL}}{seconds:>6.1f} s  "
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
    if replay.shredded_on is not None or replay.status is ReplayStatus.SHREDDED:
        lines.append(f"SHREDDED under retention on "
                     f"{replay.shredded_on.isoformat() if replay.shredded_on else '—'}: the "
                     "submission, its subjects and the reviewers' motivations can no longer "
                     "be read")
        lines += [f"  {note}" for note in replay.notes[1:]]
        if replay.status is ReplayStatus.SHREDDED:
            return [*lines, "the recorded decision in force holds against its table snapshot "
                            "(ground version, requesting body, releasable categories)"]
        if replay.status is ReplayStatus.CANNOT_REPLAY:
            return [*lines, f"CANNOT REPLAY: {replay.problem}"]
        return [*lines, "DIFFERS: the recorded decision does not hold against its table "
                        "snapshot, in " + ", ".join(d.field for d in replay.differences),
                *(f"  {d.field}: recorded {json.dumps(d.recorded, ensure_ascii=False)}, "
                  f"snapshot allows {json.dumps(d.replayed, ensure_ascii=False)}"
                  for d in replay.differences)]
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
        lines.append(f"  answer {a.seq}  {a.answered_at.isoformat()}  {answer_text(a)}")
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


def answer_text(answer: Answer) -> str:
    """Who answered in which role, the verdict and what it released (or would have), and
    whether it was accepted or refused and why."""
    role = answer.reviewer_role or "not enrolled"
    releases = ", ".join(answer.releases) or "nothing"
    if answer.accepted:
        return (f"{answer.reviewer_id} ({role})  {answer.verdict}: releases {releases}  "
                f"step {answer.step or '—'}  accepted")
    return (f"{answer.reviewer_id} ({role})  {answer.verdict}: would release {releases}  "
            f"refused ({answer.refusal_code}: {answer.refusal_message})")


# -- the flow's artifacts ------------------------------------------------------------------------

def markdown(summary: Summary, rows: Sequence[dict[str, Any]], shown: int) -> str:
    """The Markdown artifact: the totals, the tables used, and at most ``shown`` of the rows
    that do not agree."""
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
           f"| shredded under retention | {summary.shredded} |",
           f"| reviewed | {summary.reviewed} |", ""]
    if not summary.against:
        out += [f"Review checks failed: {summary.review_checks_failed}.", ""]
    out += [f"Tables of grounds used: {len(data['tables'])}", ""]
    out += [f"* `{t['table_hash']}`: {t['requests']} request(s) replayed against it"
            for t in data["tables"]]
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


#: The columns of the flow's table artifact, in their order.
ARTIFACT_COLUMNS = ("request_id", "partner", "ground", "version", "recorded_outcome",
                    "replayed_outcome", "agrees")


def artifact_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the flow's table artifact (:data:`ARTIFACT_COLUMNS` of each row)."""
    return [{k: r[k] for k in ARTIFACT_COLUMNS} for r in rows]


# -- JSON ----------------------------------------------------------------------------------------

def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def account_json(replay: Replay) -> str:
    """One request's replay as JSON."""
    return _json(replay.to_dict())


def period_json(summary: Summary, shown: Sequence[Replay], *, seconds: float) -> str:
    """A period's replay as JSON: the totals (and the time taken), and the requests shown."""
    return _json({"summary": {**summary.to_dict(), "seconds": round(seconds, 3)},
                  "requests": [r.to_dict() for r in shown]})


def published_json(result: dict[str, Any]) -> str:
    """What the ``replay-decisions`` flow returned, as JSON."""
    return _json(result)
