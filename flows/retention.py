"""Retention as a Prefect flow, ``apply-retention``, run every night before the verification.

It shreds the requests whose retention term ended (:mod:`records.retention`: their data keys
and subjects' pseudonyms go, a ``request_shredded`` event each; the report's distinct subjects
of their years frozen first), and removes file-drop deliveries from the partners' outbox folders
once collected or kept ``DISCLOSURE_OUTBOX_KEEP_DAYS`` days (:mod:`connectors.outbox`, an
``outbox_cleaned`` event per delivery) and drop-off files filed away
``DISCLOSURE_DROPOFF_KEEP_DAYS`` days (a ``dropoff_files_removed`` event per partner). A
summary artifact, ``retention``, says what went (ids and counts only). ``dry_run`` lists what
would go and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from prefect import flow
from prefect.runtime import flow_run
from sqlalchemy import Engine
from sqlmodel import Session

from connectors.dropoff import DropBox, FiledAway
from connectors.outbox import Removal, delivery_key, sweep_outbox
from flows.artifacts import publish_markdown
from flows.faults import fault
from flows.logs import get_logger
from flows.runtime import open_ledger
from legal_bases.accountability import load_accountability
from records.ledger import received_on
from records.retention import (
    OutboxRemoval,
    RetentionRun,
    delivery_recorded,
    record_dropoff_removals,
    record_outbox_removals,
    run_retention,
)
from records.settings import Settings, load_settings

ARTIFACT_KEY = "retention"


def sweep_outboxes(engine: Engine, settings: Settings, *, now: datetime, dry_run: bool,
                   flow_run_id: str | None = None) -> list[Removal]:
    """Remove collected or expired deliveries from the outbox, each on the record."""
    with Session(engine) as session:
        removed = sweep_outbox(
            settings.resolved_outbox_dir, now=now, keep_days=settings.outbox_keep_days,
            is_recorded=lambda key: delivery_recorded(session=session, key=key),
            dry_run=dry_run)
    if removed and not dry_run:
        with Session(engine) as session, session.begin():
            record_outbox_removals(session=session, now=now, flow_run_id=flow_run_id, removed=[
                OutboxRemoval(delivery_key(r.key), r.key, r.partner_id, r.reason, r.written_at)
                for r in removed])
    return removed


def sweep_dropoffs(engine: Engine, settings: Settings, *, now: datetime, dry_run: bool,
                   flow_run_id: str | None = None) -> list[FiledAway]:
    """Remove drop-off files filed away long enough, on the record per partner."""
    removed = DropBox(settings.resolved_dropoff_dir).sweep_filed(
        now=now, keep_days=settings.dropoff_keep_days, dry_run=dry_run)
    if removed and not dry_run:
        with Session(engine) as session, session.begin():
            record_dropoff_removals(session=session, now=now, flow_run_id=flow_run_id,
                                    removed=[(f.partner_id, f.folder, f.name) for f in removed])
    return removed


def summary_markdown(run: RetentionRun, removed: list[Removal], keep_days: int,
                     dropped: Sequence[FiledAway] = ()) -> str:
    """The artifact: what was due, what went, what left the outbox (ids and counts only)."""
    verb = "would be" if run.dry_run else "were"
    lines = [f"# Retention on {run.today.isoformat()}{' (dry run)' if run.dry_run else ''}", "",
             f"**{len(run.due)}** request(s) past their retention term {verb} shredded"
             f"{'' if run.dry_run else f' ({run.shredded} now, in {run.batches} batch(es))'}.",
             ""]
    if not run.dry_run:
        lines += [f"Removed: {run.shredded} data key(s), {run.subject_rows} subject "
                  f"pseudonym(s), {run.motivations} motivation(s) made unreadable.", ""]
    if run.due:
        lines += ["| request | ground | term | started | ended |", "|---|---|---|---|---|"]
        lines += [f"| `{d.request_id}` | {d.ground_id or '(default)'} | {d.term.describe()} | "
                  f"{d.started.isoformat()} | {d.ended.isoformat()} |" for d in run.due[:200]]
        if len(run.due) > 200:
            lines.append(f"| … and {len(run.due) - 200} more | | | | |")
        lines.append("")
    if run.skipped:
        lines += [f"**{len(run.skipped)}** request(s) kept although old enough to be looked at "
                  "(an operator or the privacy officer acts):", ""]
        lines += [f"* `{request_id}`: {why}" for request_id, why in
                  sorted(run.skipped.items())[:50]]
        lines.append("")
    if not run.purged:
        lines += ["The database could not be cleared of what was deleted now (a reader held an "
                  "old snapshot); the next run tries again.", ""]
    if run.frozen_years:
        lines += [f"The report's distinct subjects of {', '.join(map(str, run.frozen_years))} "
                  "were frozen first (counts only, on the chain).", ""]
    lines += [f"Outbox: {len(removed)} file(s) {verb} removed "
              f"({sum(r.reason == 'collected' for r in removed)} collected, "
              f"{sum(r.reason == 'expired' for r in removed)} kept {keep_days} day(s) or more).",
              "", f"Drop-off: {len(dropped)} request file(s) filed away long enough {verb} "
              "removed (the ledger holds what they said, sealed)."]
    return "\n".join(lines) + "\n"


@flow(name="apply-retention", log_prints=False)
def apply_retention(dry_run: bool = False, today: date | None = None) -> dict[str, object]:
    """Shred what is past its retention term and clean the outbox; ``dry_run`` only lists."""
    settings = load_settings()
    log = get_logger("disclosure.retention")
    engine = open_ledger(settings)
    run_id = flow_run.get_id()
    try:
        now = datetime.now(UTC)
        run = run_retention(engine, accountability=load_accountability(),
                            today=today or received_on(now), dry_run=dry_run,
                            flow_run_id=run_id, after_batch=lambda _: fault("shredded"))
        removed = sweep_outboxes(engine, settings, now=now, dry_run=dry_run,
                                 flow_run_id=run_id)
        dropped = sweep_dropoffs(engine, settings, now=now, dry_run=dry_run,
                                 flow_run_id=run_id)
    finally:
        engine.dispose()
    if run.skipped:
        log.warning("retention_kept", requests=len(run.skipped))
    log.info("retention_applied", dry_run=dry_run, due=len(run.due), shredded=run.shredded,
             subject_rows=run.subject_rows, years_frozen=len(run.frozen_years),
             outbox_removed=len(removed), dropoff_files_removed=len(dropped))
    publish_markdown(ARTIFACT_KEY, summary_markdown(run, removed, settings.outbox_keep_days,
                                                    dropped),
                     description="Retention: requests shredded, outbox cleaned (ids, counts)")
    return run.to_dict() | {"outbox_removed": len(removed),
                            "dropoff_files_removed": len(dropped)}
