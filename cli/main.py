"""The ``disclosure`` command line: decide a request by hand, read and lint the table of grounds,
and run the main job.

Exit status: 0 when the command did its work (any decision is a result, a rejection too), 1 when
a check found problems (``grounds check``), 2 for usage errors (bad arguments, unreadable input,
a broken table).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cli import (
    api,
    audit,
    cluster,
    db,
    decide,
    grounds,
    inzage,
    logboek,
    partners,
    replay,
    report,
    retention,
    reviewers,
    status,
    timeline,
    up,
    watch,
)
from cli.api_server import ApiCommandError
from cli.arguments import UsageError
from cli.local_prefect import PrefectStartError, PrefectUnreachableError
from flows.logs import configure_logging
from legal_bases.errors import DisclosureError, TableError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disclosure",
        description="DUO's disclosure engine: decide, record and deliver disclosure requests.")
    parser.add_argument("--log-level", default="WARNING",
                        help="structlog level on stderr (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    decide.register(sub)
    grounds.register(sub)
    up.register(sub)
    watch.register(sub)
    cluster.register(sub)
    status.register(sub)
    audit.register(sub)
    db.register(sub)
    reviewers.register(sub)
    api.register(sub)
    partners.register(sub)
    retention.register(sub)
    for audit_tool in (replay, timeline, inzage, report, logboek):
        audit_tool.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level.upper())
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (TableError, UsageError, up.ExamplesError, PrefectStartError, PrefectUnreachableError,
            ApiCommandError) as exc:
        print(f"disclosure: {exc}", file=sys.stderr)
        return 2
    except DisclosureError as exc:
        print(f"disclosure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
