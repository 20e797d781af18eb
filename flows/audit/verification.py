"""The record's verification as a Prefect flow, ``verify-record``, run every night.

It does what ``disclosure audit verify`` does (:func:`records.verification.verify_record`, with
the signed checkpoints of the checkpoint folder) and tells operators the result where they look:
a Markdown artifact on the run with the counts, the problems (codes and ids, never personal
data) and the chain head; a Prefect event ``disclosure.record.verified`` or
``disclosure.record.broken`` for automations (a page to whoever is on call); and a **Failed**
run when the record is broken. When the record is intact it writes a signed checkpoint of the
head it verified outside the ledger — a file in the checkpoint folder and an artifact of its own
(``chain-checkpoint``) on the Prefect server — which every later verification checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from sqlalchemy import Engine
from sqlmodel import Session

from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases import limits
from legal_bases.errors import DisclosureError
from records.chain import keys_of
from records.checkpoints import Checkpoint, read_checkpoints, seal_checkpoint, write_checkpoint
from records.settings import Settings, load_settings
from records.verification import snapshot_reader, verify_record
from records.verification_report import RecordReport

VERIFIED = "disclosure.record.verified"
BROKEN = "disclosure.record.broken"
ARTIFACT_KEY = "record-verification"
CHECKPOINT_ARTIFACT_KEY = "chain-checkpoint"


def check_record(engine: Engine, settings: Settings, *,
                 expect_head: tuple[int, str] | None = None) -> RecordReport:
    """Verify the record in one snapshot, against the checkpoints in the checkpoint folder."""
    found = read_checkpoints(settings.resolved_checkpoint_dir)
    with Session(snapshot_reader(engine)) as session:
        return verify_record(session=session, expect_head=expect_head, checkpoints=found)


def checkpoint_head(engine: Engine, settings: Settings,
                    report: RecordReport) -> tuple[Checkpoint, Path] | None:
    """Seal the head ``report`` verified intact and write it to the checkpoint folder; None for
    an empty chain or a broken record (a checkpoint must never vouch for a tampered state)."""
    if not report.ok or not report.head_seq:
        return None
    with Session(engine) as session:
        keys = keys_of(session)
    assert keys is not None  # opened with its key ring
    checkpoint = seal_checkpoint(keys=keys, seq=report.head_seq, head_hash=report.head_hash,
                                 now=datetime.now(UTC))
    return checkpoint, write_checkpoint(checkpoint, settings.resolved_checkpoint_dir)


class RecordBrokenError(DisclosureError):
    """Raised (failing the run) when the scheduled verification finds the record broken."""


def report_markdown(report: RecordReport) -> str:
    """The artifact: what was checked, the verdict, the head to anchor, the problems."""
    counts = report.counts.to_dict()
    lines = ["# Verification of the record", "",
             f"**{'Intact' if report.ok else 'BROKEN'}**: {report.breaks} problem(s), "
             f"{report.warnings} warning(s).", "", "| checked | rows |", "|---|---:|",
             *(f"| {name.replace('_', ' ')} | {count:,} |" for name, count in counts.items()),
             "", f"Chain head: seq {report.head_seq or 0}, `{report.head_hash}`; "
             f"{report.checkpoints} signed checkpoint(s) of earlier heads checked."]
    shown = report.problems[:limits.VERIFY_ARTIFACT_PROBLEMS]
    if shown:
        lines += ["", "| | code | where | detail |", "|---|---|---|---|",
                  *(f"| {'warning' if p.warning else 'broken'} | {p.code} | {p.where} | "
                    f"{p.detail.replace('|', '/')} |" for p in shown)]
        more = report.breaks + report.warnings - len(shown)
        if more > 0:
            lines.append(f"\n… and {more} more; `disclosure audit verify` lists them.")
    return "\n".join(lines) + "\n"


def verify_and_checkpoint(settings: Settings) -> tuple[RecordReport,
                                                      tuple[Checkpoint, Path] | None]:
    """Verify the record; if it is intact, checkpoint the head it verified (the nightly run's
    work, and ``disclosure audit checkpoint``'s)."""
    engine = open_ledger(settings)
    try:
        report = check_record(engine, settings)
        return report, checkpoint_head(engine, settings, report)
    finally:
        engine.dispose()


@flow(name="verify-record", persist_result=False,
      description="Verify the whole record (hash chain, table snapshots, every row against its "
                  "event); publish the result and the chain head; fail if it is broken.")
def verify_record_flow() -> dict[str, Any]:
    """Verify the ledger and checkpoint its head; the run fails when the record is broken."""
    report, written = verify_and_checkpoint(load_settings())
    summary = {"ok": report.ok, "breaks": report.breaks, "warnings": report.warnings,
               "head_seq": report.head_seq, "head_hash": report.head_hash,
               "events_checked": report.counts.audit_events,
               "checkpoints_checked": report.checkpoints,
               "checkpoint_written": written[1].name if written else None}
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=report_markdown(report),
                             description="The record's verification and its chain head")
    if written is not None:
        checkpoint, path = written
        create_markdown_artifact(
            key=CHECKPOINT_ARTIFACT_KEY, description="A signed checkpoint of the chain head",
            markdown=(f"# Checkpoint of the chain head\n\nWritten to `{path}`; a copy here, "
                      "outside the ledger. `disclosure audit verify` checks the folder's "
                      "checkpoints; save this one there to check it too.\n\n```json\n"
                      f"{json.dumps(checkpoint.to_dict(), indent=2)}\n```\n"))
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
