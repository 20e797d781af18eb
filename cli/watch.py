"""``disclosure watch``: start the sweepers when there is work, on its own.

``disclosure serve`` (and so ``disclosure up``) runs the watch itself (:mod:`flows.watch`). A
scaled-out installation, where workers pull the runs from a work pool, runs this command once,
on the host of the intake API: it reads the ledger and the drop folders (``DISCLOSURE_*``) and
starts runs on the Prefect server (``--prefect-api-url``, default ``PREFECT_API_URL``, else the
local server of a running ``disclosure up``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings

from cli.arguments import say
from cli.local_prefect import answering_api_url
from flows.watch import watch_forever
from legal_bases import limits
from records.settings import load_settings


def cmd_watch(args: argparse.Namespace) -> int:
    settings = load_settings()
    api_url = args.prefect_api_url or answering_api_url(
        settings.prefect_port, needed_for="disclosure watch", home=settings.data_dir / "prefect")
    say(f"Watching the ledger and {settings.resolved_dropoff_dir} every "
        f"{limits.WATCH_SECONDS:g} s; starting runs on {api_url} (Ctrl-C stops) …")
    with temporary_settings(updates={PREFECT_API_URL: api_url}), \
            contextlib.suppress(KeyboardInterrupt):
        watch_forever(settings=settings)
    return 0


def register(sub: Any) -> None:
    """Add ``watch`` to the command line."""
    watch = sub.add_parser(
        "watch", help="start the sweepers when there is work (serve does this itself)",
        description="Look at the ledger's work queue and the drop folders every "
                    f"{limits.WATCH_SECONDS:g} s and start process-requests or collect-dropoffs "
                    "when they have work, and only then: for the host of the intake API when "
                    "workers pull the runs from a work pool.")
    watch.add_argument("--prefect-api-url", default=os.environ.get("PREFECT_API_URL"),
                       help="the Prefect API to start runs on (default PREFECT_API_URL, else "
                            "the local server of a running `disclosure up`)")
    watch.set_defaults(handler=cmd_watch)
