"""``disclosure retention``: shred what is past its retention term, clean the outbox.

The same work as the nightly ``apply-retention`` flow (:mod:`flows.retention`), from the command
line: ``--dry-run`` lists what would go and changes nothing. Ids and counts only are printed.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from typing import Any

from sqlmodel import Session

from cli.arguments import say
from flows.faults import fault
from flows.retention import summary_markdown, sweep_dropoffs, sweep_outboxes
from flows.runtime import open_ledger
from legal_bases import limits
from legal_bases.accountability import load_accountability
from records.data_keys import keys_by_kek, rewrap, vault_of
from records.ledger import received_on
from records.retention import run_retention
from records.settings import load_settings


def cmd_retention(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        now = datetime.now(UTC)
        run = run_retention(engine, accountability=load_accountability(),
                            today=args.today or received_on(now), dry_run=args.dry_run,
                            batch_size=args.batch_size, after_batch=lambda _: fault("shredded"))
        removed = sweep_outboxes(engine, settings, now=now, dry_run=args.dry_run)
        dropped = sweep_dropoffs(engine, settings, now=now, dry_run=args.dry_run)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(run.to_dict() | {
            "requests": [{"request_id": d.request_id, "ground_id": d.ground_id,
                          "term": d.term.describe(), "started": d.started.isoformat(),
                          "ended": d.ended.isoformat()} for d in run.due],
            "outbox_removed": [{"partner_id": r.partner_id, "key": r.key, "reason": r.reason}
                               for r in removed],
            "dropoff_files_removed": len(dropped)}, indent=2))
    else:
        say(summary_markdown(run, removed, settings.outbox_keep_days, dropped).rstrip())
    return 0


def cmd_rewrap(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        with Session(engine) as session:
            before = keys_by_kek(session)
        total = 0
        while True:
            with Session(engine) as session, session.begin():
                done = rewrap(session)
            total += done
            if done == 0:
                break
        with Session(engine) as session:
            after = keys_by_kek(session)
            current = vault_of(session).keks.current.key_id
    finally:
        engine.dispose()
    say(f"{total} key(s) rewrapped under the current KEK {current}")
    say("keys per KEK before: " + (", ".join(f"{k} {n}" for k, n in sorted(before.items()))
                                    or "none"))
    say("keys per KEK now:    " + (", ".join(f"{k} {n}" for k, n in sorted(after.items()))
                                    or "none"))
    retired = sorted(set(before) - set(after))
    if retired:
        say(f"nothing is wrapped by {', '.join(retired)} any more: remove it from the KEK ring "
            "and destroy it; backups taken before then can no longer be opened")
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(sub: Any) -> None:
    """Add ``retention`` to the command line."""
    parser = sub.add_parser(
        "retention", help="shred requests past their retention term; clean the outbox",
        description="Destroy the data keys and subjects' pseudonyms of the requests whose "
                    "retention term (legal_bases/accountability.yaml) has ended, each with a "
                    "request_shredded audit event, and remove file-drop deliveries that were "
                    "collected or kept long enough. What the nightly apply-retention flow does. "
                    "Exit 0.")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would go; change nothing")
    parser.add_argument("--today", type=_day, default=None, metavar="YYYY-MM-DD",
                        help="count terms as on this day (default: today in the Netherlands)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--batch-size", type=int, default=limits.SHRED_BATCH_SIZE, metavar="N",
                        help="requests shredded per transaction (default "
                             f"{limits.SHRED_BATCH_SIZE})")
    parser.set_defaults(handler=cmd_retention)
    rsub = parser.add_subparsers(dest="retention_command", required=False, metavar="ACTION")
    rsub.add_parser(
        "rewrap", help="wrap every data key under the current KEK (after adding a new one)",
        description="After a new KEK is added at the end of the KEK ring (it becomes current), "
                    "wrap every request's data key and every subject-tag key under it, in "
                    "batches; then the retired KEK wraps nothing and may be destroyed, which "
                    "makes every backup taken before unreadable. Exit 0.",
    ).set_defaults(handler=cmd_rewrap)
