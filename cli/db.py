"""``disclosure db upgrade|backup|restore``: the ledger's schema, and its backups.

``backup FILE`` copies a SQLite ledger consistently while the engine runs; ``restore FILE`` puts
a backup in place (stop the engine first), brings it up to date, shreds at once whatever is past
its retention term (a backup may be older than a shredding) and verifies the record. A
PostgreSQL ledger is backed up with ``pg_dump`` (README: Backups and retention).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.arguments import say
from flows.audit.verification import check_record
from flows.runtime import open_ledger
from legal_bases.accountability import load_accountability
from records.backup import backup, restore_file, sqlite_file
from records.db import database_url
from records.retention import run_retention
from records.settings import load_settings


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    settings = load_settings()
    open_ledger(settings)
    print(f"ledger schema up to date: {settings.resolved_database_url}")
    return 0


def cmd_db_backup(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        written = backup(engine, args.file)
    finally:
        engine.dispose()
    say(f"backup of {sqlite_file(engine)} written to {written} (mode 0600). It holds sealed "
        "data and wrapped keys only: keep the KEK ring, the chain key ring and the pseudonym "
        "key apart from it.")
    return 0


def cmd_db_restore(args: argparse.Namespace) -> int:
    settings = load_settings()
    url = database_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        say("restore puts back a SQLite ledger; restore a PostgreSQL ledger with pg_restore, "
            "then run `disclosure retention` and `disclosure audit verify`")
        return 2
    restore_file(args.file, Path(url.database))
    engine = open_ledger(settings)  # migrated, submissions of before 0.8.0 sealed
    try:
        run = run_retention(engine, accountability=load_accountability())
        # as audit verify does: against the checkpoints outside the ledger, so a backup older
        # than the newest checkpoint (a rollback) is not called intact
        report = check_record(engine, settings)
    finally:
        engine.dispose()
    say(f"restored {args.file} as {url.database}; the ledger it replaced is kept as "
        f"{url.database}.replaced — it holds personal data retention will not shred: destroy "
        "it (and its -wal) once the restore is checked")
    say(f"retention: {run.shredded} request(s) past their term shredded again")
    say(f"audit verify: {'intact' if report.ok else 'BROKEN'} ({report.breaks} problem(s), "
        f"{report.warnings} warning(s)); run `disclosure audit verify` for the details"
        + ("" if report.ok else ": a backup older than the newest checkpoint is a rollback of "
           "the record"))
    return 0 if report.ok else 1


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the ledger's database: upgrade, backup, restore")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser("upgrade", help="apply the ledger's migrations"
                    ).set_defaults(handler=cmd_db_upgrade)
    take = dsub.add_parser("backup", help="copy the (SQLite) ledger consistently, while it runs")
    take.add_argument("file", type=Path, help="the backup file to write (must not exist)")
    take.set_defaults(handler=cmd_db_backup)
    put = dsub.add_parser(
        "restore", help="put a backup in place, shred what is past its term, verify",
        description="Stop the engine first. Puts FILE in place as the ledger (the current one "
                    "is kept as <ledger>.replaced), migrates it, shreds at once every request "
                    "past its retention term (the backup may be older than a shredding) and "
                    "verifies the record. Exit 0 intact, 1 broken, 2 not a SQLite ledger.")
    put.add_argument("file", type=Path, help="the backup file")
    put.set_defaults(handler=cmd_db_restore)
