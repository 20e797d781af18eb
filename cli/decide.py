"""``disclosure decide``: assess one request by hand and print the decision; no side effects."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cli.arguments import UsageError, date_argument, grounds_option, today
from flows.logs import get_logger
from legal_bases.assessment import assess
from legal_bases.request import read_json, read_request
from legal_bases.table import load_table
from legal_bases.vocabulary import Body, slugs


def cmd_decide(args: argparse.Namespace) -> int:
    source = args.file
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not UTF-8 text") from exc
    raw, refused = read_json(text)
    if refused is not None and refused.errors[0].code in {"bad_json", "too_deep"}:
        raise UsageError(f"{source} is {refused.errors[0].message}"
                         if refused.errors[0].code == "bad_json"
                         else f"{source}: {refused.errors[0].message}")
    table = load_table(args.grounds)
    received_on = args.received_on or today()
    request = refused or read_request(raw, received_on=received_on)
    decision = assess(request, Body(args.body), table)
    get_logger("cli").info("request_decided", outcome=decision.outcome.value,
                           ground_version=decision.ground_version, reasons=decision.reason_codes)
    print(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    return 0


def register(sub: Any) -> None:
    grounds_opt = grounds_option()
    decide = sub.add_parser(
        "decide", parents=[grounds_opt],
        help="assess one request (JSON) and print the decision; no side effects",
        description="Assess one request (DESIGN.md section 5) for a requester of BODY and print "
                    "the decision as JSON. Exit 0 for any decision, 2 for usage errors.")
    decide.add_argument("--body", required=True, choices=slugs(Body),
                        help="the requesting body the request comes from")
    decide.add_argument("--received-on", type=date_argument, default=None, metavar="DATE",
                        help="day of receipt (default today, UTC); the reference date "
                             "defaults to it")
    decide.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="request JSON file, or - for standard input (default)")
    decide.set_defaults(handler=cmd_decide)
