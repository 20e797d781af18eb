"""``disclosure replay``: re-derive recorded decisions from the ledger.

``disclosure replay REQUEST_ID`` gives a full account of one request: who asked what under which
ground version, the table it was decided with, the decision as recorded and as replayed, and
for a reviewed request the engine's proposal, every reviewer's answer and the checks of the
reviewed decision. ``disclosure replay --from DATE --to DATE`` replays every request received on
those days (Europe/Amsterdam) and prints the totals and one line per request that does not
agree. ``--against-current`` replays against today's table instead and lists the requests that
would now be decided differently. ``--publish`` runs the period's replay as the Prefect flow
``replay-decisions``, which publishes a Markdown and a table artifact (ids, no personal data).

Exit status: 0 when every replayed decision agrees (with ``--against-current`` always 0: the
differences are the finding), 1 when a recorded decision does not re-derive or cannot be
replayed, 2 for usage errors and a request id the ledger does not hold (as ``status`` and
``timeline``). Replay writes nothing to the ledger (see :mod:`records.replay`).
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from typing import Any

from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from sqlalchemy import Engine

from cli.arguments import date_argument
from cli.local_prefect import answering_api_url
from cli.status import unknown_request
from flows.audit.replay import MARKDOWN_KEY, TABLE_KEY, replay_decisions
from flows.audit.replay_render import (
    account_json,
    account_lines,
    period_json,
    published_json,
    row_of,
    summary_lines,
)
from flows.runtime import open_ledger
from legal_bases.table import GroundTable, load_table
from records.replay import replay_period, replay_request
from records.replay_results import Replay, ReplayStatus
from records.replay_summary import Tally
from records.settings import load_settings


def _exit_status(against_current: bool, *, differs: int, cannot_replay: int) -> int:
    if against_current:
        return 0
    return 1 if differs or cannot_replay else 0


def cmd_replay(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.replay_parser
    if args.request is not None and (args.date_from is not None or args.date_to is not None):
        parser.error("give a REQUEST_ID or --from/--to, not both")
    if args.request is not None and (args.publish or args.all):
        parser.error("--publish and --all go with --from/--to")
    period: tuple[date, date] | None = None
    if args.request is None:
        if args.date_from is None:
            parser.error("give a REQUEST_ID, or --from DATE (and --to DATE)")
        period = (args.date_from, args.date_to or args.date_from)
        if period[1] < period[0]:
            parser.error(f"--to {period[1]} is before --from {period[0]}")
    if period is not None and args.publish:
        return _publish(args, *period)
    settings = load_settings()
    against = load_table(settings.grounds_dir) if args.against_current else None
    engine = open_ledger(settings)
    try:
        if period is None:
            return _one(engine, args.request, against, as_json=args.json)
        return _period(engine, *period, against, as_json=args.json, everything=args.all)
    finally:
        engine.dispose()


def _one(engine: Engine, request_id: str, against: GroundTable | None, *, as_json: bool) -> int:
    replay = replay_request(engine, request_id, against=against)
    if replay is None:
        raise unknown_request(request_id)
    if as_json:
        print(account_json(replay))
    else:
        for line in account_lines(replay):
            print(line)
    return _exit_status(against is not None,
                        differs=replay.status is ReplayStatus.DIFFERS,
                        cannot_replay=replay.status is ReplayStatus.CANNOT_REPLAY)


def _period(engine: Engine, first: date, last: date, against: GroundTable | None, *,
            as_json: bool, everything: bool) -> int:
    started = time.perf_counter()
    tally = Tally(first=first, last=last, against=against.hash if against else None)
    listed: list[Replay] = []  # with --all: the others, after those that do not agree
    for replay in replay_period(engine, first=first, last=last, against=against):
        tally.add(replay)
        if everything and replay.status in (ReplayStatus.AGREES, ReplayStatus.UNDECIDED):
            listed.append(replay)
    seconds = time.perf_counter() - started
    summary = tally.summary()
    shown = [*summary.not_agreeing, *listed]
    if as_json:
        print(period_json(summary, shown, seconds=seconds))
    else:
        for line in summary_lines(summary.to_dict(), [row_of(r) for r in shown],
                                  table_source=against.source if against else None,
                                  seconds=seconds):
            print(line)
    return _exit_status(against is not None, differs=summary.differs,
                        cannot_replay=summary.cannot_replay)


def _publish(args: argparse.Namespace, first: date, last: date) -> int:
    settings = load_settings()
    with temporary_settings(updates={PREFECT_API_URL: answering_api_url(
            settings.prefect_port, needed_for="--publish",
            home=settings.data_dir / "prefect")}):
        result = replay_decisions(date_from=first, date_to=last,
                                  against_current=args.against_current)
        ui = PREFECT_UI_URL.value()
    summary = result["summary"]
    if args.json:
        print(published_json(result))
    else:
        for line in summary_lines(summary, result["not_agreeing"]):
            print(line)
        where = f" ({ui}/runs/flow-run/{result['flow_run_id']})" if ui else ""
        print(f"published as artifacts {MARKDOWN_KEY} and {TABLE_KEY} of flow run "
              f"{result['flow_run_id']}{where}")
    return _exit_status(args.against_current, differs=summary["differs"],
                        cannot_replay=summary["cannot_replay"])


def register(sub: Any) -> None:
    """Add ``replay`` to the ``disclosure`` command line."""
    replay = sub.add_parser(
        "replay", help="re-derive recorded decisions from the ledger; exit 1 if one does not",
        description="Re-run the assessment of recorded requests against the table recorded "
                    "with each decision (the ledger's snapshots) and report whether the engine "
                    "decides the same; for reviewed requests show the proposal, the answers "
                    "and check the reviewed decision. Writes nothing. Exit 0 when every "
                    "decision agrees (with --against-current always 0), 1 when one does not "
                    "re-derive or cannot be replayed, 2 for usage errors and an unknown "
                    "request id.")
    replay.add_argument("request", nargs="?", default=None, metavar="REQUEST_ID",
                        help="one request: print its full account")
    replay.add_argument("--from", dest="date_from", type=date_argument, default=None,
                        metavar="DATE",
                        help="first day of receipt (Europe/Amsterdam) of a period to replay")
    replay.add_argument("--to", dest="date_to", type=date_argument, default=None,
                        metavar="DATE",
                        help="last day of receipt, inclusive (default: --from)")
    replay.add_argument("--against-current", action="store_true",
                        help="replay against today's table of grounds (DISCLOSURE_GROUNDS_DIR) "
                             "and list the requests that would now be decided differently")
    replay.add_argument("--json", action="store_true", help="print JSON")
    replay.add_argument("--all", action="store_true",
                        help="with a period: list every request, not only those that do not "
                             "agree")
    replay.add_argument("--publish", action="store_true",
                        help="with a period: run it as the Prefect flow replay-decisions, which "
                             "publishes the result as artifacts in the configured Prefect "
                             "server")
    replay.set_defaults(handler=cmd_replay, replay_parser=replay)
