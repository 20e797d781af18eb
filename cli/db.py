"""``disclosure db upgrade``: bring the ledger's schema up to date."""

from __future__ import annotations

import argparse
from typing import Any

from flows.runtime import open_ledger
from records.settings import load_settings


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    settings = load_settings()
    open_ledger(settings)
    print(f"ledger schema up to date: {settings.resolved_database_url}")
    return 0


def register(sub: Any) -> None:
    db = sub.add_parser("db", help="the ledger's database")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser("upgrade", help="apply the ledger's migrations"
                    ).set_defaults(handler=cmd_db_upgrade)
