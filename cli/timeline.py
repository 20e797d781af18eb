"""``disclosure timeline REQUEST_ID``: one ordered history of a request, from the ledger and from
Prefect, with every gap and every disagreement between the two flagged.

What the rows are and what each flag means: :mod:`flows.audit.request_timeline`. Exit status: 0
without flags, 1 with any flag (Prefect unreachable is one), 2 when the ledger holds no such
request (as ``status`` and ``replay``). Prefect is found as the other commands find it:
``PREFECT_API_URL``, else the local server ``disclosure up`` starts on
``DISCLOSURE_PREFECT_PORT``; this command never starts a server. ``--ledger-only`` leaves
Prefect out on purpose, without a flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.local_prefect import command_api_url
from cli.status import unknown_request
from flows.audit.request_timeline import timeline_of
from flows.audit.timeline_render import render_text, timeline_json
from flows.runtime import open_ledger
from records.settings import load_settings


def cmd_timeline(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = open_ledger(settings)
    try:
        found = timeline_of(engine, args.request_id, prefect_api_url=None if args.ledger_only
                            else command_api_url(settings.prefect_port,
                                                 settings.data_dir / "prefect"))
    finally:
        engine.dispose()
    if found is None:
        raise unknown_request(args.request_id)
    sys.stdout.write(timeline_json(found) if args.json else render_text(found))
    return 1 if found.flags else 0


def register(sub: Any) -> None:
    """Add ``timeline`` to the ``disclosure`` command line."""
    parser = sub.add_parser(
        "timeline", help="one request's history from the ledger and Prefect, gaps flagged",
        description="One ordered history of a request: the ledger's audit events joined with "
                    "the state history and log lines of the Prefect flow runs that acted on "
                    "it; every gap or disagreement is flagged. Exit 0: no flags; 1: flags "
                    "(Prefect unreachable is one); 2: no such request.")
    parser.add_argument("request_id", metavar="REQUEST_ID", help="the request's id (a uuid)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--ledger-only", action="store_true",
                        help="leave Prefect out: the ledger's timeline and its own checks only")
    parser.set_defaults(handler=cmd_timeline)
