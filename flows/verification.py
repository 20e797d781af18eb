"""The record's verification as a Prefect flow, ``verify-record``, run every night.

It does what ``disclosure audit verify`` does (:func:`records.verification.verify_record`) and
tells operators the result where they look: a Markdown artifact on the run with the counts, the
problems (codes and ids, never personal data) and the chain head to write down as an anchor; a
Prefect event ``disclosure.record.verified`` or ``disclosure.record.broken`` for automations
(a page to whoever is on call); and a **Failed** run when the record is broken.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from sqlmodel import Session

from flows.logs import get_logger
from legal_bases import limits
from legal_bases.errors import DisclosureError
from records.db import open_ledger
from records.settings import load_settings
from records.verification import RecordReport, snapshot_reader, verify_record

VERIFIED = "disclosure.record.verified"
BROKEN = "disclosure.record.broken"
ARTIFACT_KEY = "record-verification"


class RecordBrokenError(DisclosureError):
    """Raised (failing the run) when the scheduled verification finds the record broken."""


def report_markdown(report: RecordReport) -> str:
    """The artifact: what was checked, the verdict, the head to anchor, the problems."""
    counts = report.counts.to_dict()
    lines = ["# Verification of the record", "",
             f"**{'Intact' if report.ok else 'BROKEN'}**: {report.breaks} problem(s), "
             f"{report.warnings} warning(s).", "", "| checked | rows |", "|---|---:|",
             *(f"| {name.replace('_', ' ')} | {count:,} |" for name, count in counts.items()),
             "", f"Chain head: seq {report.head_seq or 0}, `{report.head_hash}` — write it down "
             "outside the database and check it later with `disclosure audit verify "
             "--expect-head SEQ:HASH`."]
    shown = report.problems[:limits.VERIFY_ARTIFACT_PROBLEMS]
    if shown:
        lines += ["", "| | code | where | detail |", "|---|---|---|---|",
                  *(f"| {'warning' if p.warning else 'broken'} | {p.code} | {p.where} | "
                    f"{p.detail.replace('|', '/')} |" for p in shown)]
        more = report.breaks + report.warnings - len(shown)
        if more > 0:
            lines.append(f"\n… and {more} more; `disclosure audit verify` lists them.")
    return "\n".join(lines) + "\n"


@flow(name="verify-record", persist_result=False,
      description="Verify the whole record (hash chain, table snapshots, every row against its "
                  "event); publish the result and the chain head; fail if it is broken.")
def verify_record_flow() -> dict[str, Any]:
    """Verify the ledger; the run fails when the record is broken."""
    engine = open_ledger(load_settings())
    try:
        with Session(snapshot_reader(engine)) as session:
            report = verify_record(session=session)
    finally:
        engine.dispose()
    summary = {"ok": report.ok, "breaks": report.breaks, "warnings": report.warnings,
               "head_seq": report.head_seq, "head_hash": report.head_hash,
               "events_checked": report.counts.audit_events}
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=report_markdown(report),
                             description="The record's verification and its chain head")
    emit_event(event=VERIFIED if report.ok else BROKEN,
               resource={"prefect.resource.id": "disclosure.ledger",
                         "prefect.resource.name": "the disclosure ledger"},
               payload=summary)
    log = get_logger("verification")
    if not report.ok:
        first = report.first_break
        log.error("record_broken", breaks=report.breaks,
                  first=first.code if first is not None else None)
        raise RecordBrokenError(f"the record is broken: {report.breaks} problem(s); see the "
                                "run's artifact or run `disclosure audit verify`")
    log.info("record_verified", events=report.counts.audit_events, head_seq=report.head_seq)
    return summary
