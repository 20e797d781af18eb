"""``disclosure timeline``, said: the timeline of a request as a person reads it (a header, the
table of rows, the flow runs, notes and flags) and as JSON.

Pure functions of a built :class:`flows.audit.request_timeline.Timeline`: no I/O, no Prefect.
"""

from __future__ import annotations

import json

from flows.audit.request_timeline import Timeline
from flows.audit.run_history import RunView
from flows.audit.timeline_words import mask, short_id, utc_text
from legal_bases import limits


def render_text(timeline: Timeline) -> str:
    """The timeline as a person reads it: a header, the table, the runs, notes and flags."""
    facts, prefect = timeline.facts, timeline.prefect
    request = facts.request
    lines = [f"Timeline of request {request.id}",
             f"  partner {request.partner_id} ({request.requester_body}), reference "
             f"{mask(request.reference or '—')}, via {request.channel}; received "
             f"{utc_text(request.received_at)}; now {facts.state or 'unknown'}"]
    if not prefect.consulted:
        lines.append("  Prefect: not consulted (--ledger-only): the ledger's timeline alone")
    elif not prefect.reachable:
        lines.append(f"  Prefect: NOT REACHED — {prefect.note}; the ledger's timeline alone")
    else:
        lines.append(f"  Prefect: {prefect.api_url}, {len(prefect.runs)} flow run(s) read")
    table = [("flag", "time (UTC)", "source", "what", "actor", "run", "detail")]
    width = limits.TIMELINE_DETAIL_CHARS
    for row in timeline.rows:
        detail = row.detail if len(row.detail) <= width else row.detail[:width - 1] + "…"
        table.append(("!" + ",".join(map(str, row.flags)) if row.flags else "",
                      utc_text(row.at), row.source, row.what, row.actor,
                      short_id(row.flow_run_id), detail))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines.append("")
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True))
              + "  " + r[-1] for r in table]
    if prefect.runs:
        lines += ["", "Flow runs:"]
        for run in prefect.runs.values():
            lines.append("  " + _run_line(run))
    if timeline.notes:
        lines += ["", "Notes:"] + [f"  - {note}" for note in timeline.notes]
    lines.append("")
    if timeline.flags:
        lines.append(f"FLAGS ({len(timeline.flags)}):")
        lines += [f"  [!{f.number}] {f.code}: {f.message}" for f in timeline.flags]
    else:
        lines.append("No flags: " + ("the ledger and Prefect agree, and no expected step is "
                                     "missing." if prefect.checked
                                     else "no expected step is missing in the ledger."))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _run_line(run: RunView) -> str:
    if not run.known:
        return f"{run.id}  UNKNOWN to Prefect"
    state = run.last.name if run.last else "no state"
    shown = ("all shown (the run works on this request alone)" if run.per_request
             else f"{len(run.logs)} mention this request")
    capped = f" (read the first {limits.TIMELINE_MAX_LOG_LINES})" if run.log_capped else ""
    return (f"{run.id}  {run.flow} '{run.name}'  {state}; {run.log_lines} log line(s){capped}, "
            f"{shown}")


def timeline_json(timeline: Timeline) -> str:
    """The timeline as JSON: its :meth:`Timeline.to_dict`, indented, non-ASCII kept."""
    return json.dumps(timeline.to_dict(), indent=2, ensure_ascii=False) + "\n"
