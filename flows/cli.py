"""The ``disclosure`` command line: decide a request by hand, read and lint the table of grounds,
and run the main job.

Exit status: 0 when the command did its work (any decision is a result, a rejection too), 1 when
a check found problems (``grounds check``), 2 for usage errors (bad arguments, unreadable input,
a broken table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from flows import api_cli, inzage, logboek, replay, report, review_cli, timeline, up
from flows.local_prefect import PrefectStartError, PrefectUnreachableError
from flows.logs import configure_logging, get_logger
from legal_bases.assessment import assess
from legal_bases.errors import DisclosureError, TableError
from legal_bases.ground import Ground, GroundVersion
from legal_bases.request import read_json, read_request
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table
from legal_bases.vocabulary import Body, slugs


class UsageError(DisclosureError):
    """Raised when the command line was called with arguments or input it cannot use."""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _today() -> date:
    """The one place the command line reads the calendar: the day of receipt, in UTC."""
    return datetime.now(UTC).date()


def _table(grounds: Path | None) -> GroundTable:
    return load_table(grounds)


# -- decide -----------------------------------------------------------------------------------

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
    table = _table(args.grounds)
    received_on = args.received_on or _today()
    request = refused or read_request(raw, received_on=received_on)
    decision = assess(request, Body(args.body), table)
    get_logger("cli").info("request_decided", outcome=decision.outcome.value,
                           ground_version=decision.ground_version, reasons=decision.reason_codes)
    print(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
    return 0


# -- grounds ----------------------------------------------------------------------------------

def _version_line(v: GroundVersion) -> str:
    until = v.valid_until.isoformat() if v.valid_until else "…"
    return f"{v.valid_from.isoformat()} – {until}"


def cmd_grounds_list(args: argparse.Namespace) -> int:
    table = _table(args.grounds)
    rows = [("ground", "bodies", "purposes", "in force")]
    for ground in table:
        if args.on is not None:
            version = ground.version_on(args.on)
            in_force = _version_line(version) if version else "not in force"
        else:
            in_force = ", ".join(_version_line(v) for v in ground.versions)
        rows.append((ground.id, ",".join(sorted(ground.requesters)),
                     ",".join(sorted(ground.purposes)), in_force))
    _print_table(rows)
    print(f"\n{len(table)} grounds from {table.source}; table hash {table.hash}")
    return 0


def _version_dict(v: GroundVersion) -> dict[str, Any]:
    return {
        "id": v.id,
        "valid_from": v.valid_from.isoformat(),
        "valid_until": v.valid_until.isoformat() if v.valid_until else None,
        "citation": v.citation.to_dict(),
        "categories": sorted(v.categories),
        "special_categories": sorted(v.special_categories),
        "case_reference_required": v.case_reference_required,
        "authorisations_required": [a.value for a in v.authorisations_required],
        "single_subject": v.single_subject,
        "auto_limit": v.auto_limit,
        "review": v.review.value,
        "response_days": v.response_days,
        "pseudonymise": v.pseudonymise,
    }


def cmd_grounds_show(args: argparse.Namespace) -> int:
    table = _table(args.grounds)
    ground = table.get(args.id)
    if ground is None:
        raise UsageError(f"no ground {args.id!r}; known: {', '.join(sorted(table.grounds))}")
    versions: Sequence[GroundVersion] = ground.versions
    if args.on is not None:
        version = ground.version_on(args.on)
        if version is None:
            print(f"{ground.id} has no version in force on {args.on.isoformat()}",
                  file=sys.stderr)
            return 1
        versions = [version]
    data = _ground_dict(ground, versions)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{ground.id} — {ground.title}")
    print(f"  {ground.citation.short}  {ground.citation.url}")
    if ground.citation.explanation:
        print(f"  {ground.citation.explanation}")
    print(f"  requesters: {', '.join(data['requesters'])}")
    print(f"  purposes:   {', '.join(data['purposes'])}")
    for v in data["versions"]:
        print(f"\n  version {v['id']}  ({v['valid_from']} – {v['valid_until'] or '…'})")
        for key in ("categories", "special_categories", "authorisations_required"):
            print(f"    {key}: {', '.join(v[key]) or '—'}")
        for key in ("case_reference_required", "single_subject", "auto_limit", "review",
                    "response_days", "pseudonymise"):
            print(f"    {key}: {v[key]}")
    return 0


def _ground_dict(ground: Ground, versions: Sequence[GroundVersion]) -> dict[str, Any]:
    return {
        "id": ground.id,
        "title": ground.title,
        "citation": ground.citation.to_dict(),
        "requesters": sorted(ground.requesters),
        "purposes": sorted(ground.purposes),
        "versions": [_version_dict(v) for v in versions],
    }


def cmd_grounds_check(args: argparse.Namespace) -> int:
    folder = args.dir if args.dir is not None else (args.grounds or DEFAULT_GROUNDS_DIR)
    try:
        table = load_table(folder)
    except TableError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"\n{len(exc.problems)} problem(s) in {folder}", file=sys.stderr)
        return 1
    versions = sum(len(g.versions) for g in table)
    print(f"{len(table)} grounds, {versions} versions: OK ({folder}); table hash {table.hash}")
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- wiring -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="disclosure",
        description="DUO's disclosure engine: decide, record and deliver disclosure requests.")
    parser.add_argument("--log-level", default="WARNING",
                        help="structlog level on stderr (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grounds_opt = argparse.ArgumentParser(add_help=False)
    grounds_opt.add_argument("--grounds", type=Path, default=None, metavar="DIR",
                             help="folder of ground files (default: the shipped table)")

    decide = sub.add_parser(
        "decide", parents=[grounds_opt],
        help="assess one request (JSON) and print the decision; no side effects",
        description="Assess one request (DESIGN.md section 5) for a requester of BODY and print "
                    "the decision as JSON. Exit 0 for any decision, 2 for usage errors.")
    decide.add_argument("--body", required=True, choices=slugs(Body),
                        help="the requesting body the request comes from")
    decide.add_argument("--received-on", type=_date, default=None, metavar="DATE",
                        help="day of receipt (default today, UTC); the reference date "
                             "defaults to it")
    decide.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                        help="request JSON file, or - for standard input (default)")
    decide.set_defaults(handler=cmd_decide)

    grounds = sub.add_parser("grounds", help="read and lint the table of grounds")
    gsub = grounds.add_subparsers(dest="grounds_command", required=True, metavar="ACTION")
    glist = gsub.add_parser("list", parents=[grounds_opt], help="list the grounds")
    glist.add_argument("--on", type=_date, default=None, metavar="DATE",
                       help="show the version in force on DATE")
    glist.set_defaults(handler=cmd_grounds_list)
    gshow = gsub.add_parser("show", parents=[grounds_opt], help="show one ground")
    gshow.add_argument("id")
    gshow.add_argument("--on", type=_date, default=None, metavar="DATE",
                       help="only the version in force on DATE")
    gshow.add_argument("--json", action="store_true", help="print JSON")
    gshow.set_defaults(handler=cmd_grounds_show)
    gcheck = gsub.add_parser("check", parents=[grounds_opt],
                             help="lint a folder of ground files; exit 1 on problems")
    gcheck.add_argument("dir", nargs="?", type=Path, default=None, metavar="DIR")
    gcheck.set_defaults(handler=cmd_grounds_check)
    up.register(sub)
    review_cli.register(sub, date_type=_date)
    api_cli.register(sub)
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
            api_cli.ApiCommandError) as exc:
        print(f"disclosure: {exc}", file=sys.stderr)
        return 2
    except DisclosureError as exc:
        print(f"disclosure: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
