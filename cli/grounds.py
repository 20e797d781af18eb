"""``disclosure grounds list|show|check``: read and lint the table of grounds (``check`` also
lints the accountability file beside it: every ground's processing activity and retention
term)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cli.arguments import UsageError, date_argument, grounds_option, print_table
from legal_bases.accountability import (
    DEFAULT_ACCOUNTABILITY_FILE,
    Accountability,
    AccountabilityError,
    load_accountability,
)
from legal_bases.errors import Problem, TableError
from legal_bases.ground import Ground, GroundVersion
from legal_bases.table import DEFAULT_GROUNDS_DIR, GroundTable, load_table


def _version_line(v: GroundVersion) -> str:
    until = v.valid_until.isoformat() if v.valid_until else "…"
    return f"{v.valid_from.isoformat()} – {until}"


def cmd_grounds_list(args: argparse.Namespace) -> int:
    table = load_table(args.grounds)
    rows = [("ground", "bodies", "purposes", "in force")]
    for ground in table:
        if args.on is not None:
            version = ground.version_on(args.on)
            in_force = _version_line(version) if version else "not in force"
        else:
            in_force = ", ".join(_version_line(v) for v in ground.versions)
        rows.append((ground.id, ",".join(sorted(ground.requesters)),
                     ",".join(sorted(ground.purposes)), in_force))
    print_table(rows)
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
    table = load_table(args.grounds)
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
    accounts = args.accountability or DEFAULT_ACCOUNTABILITY_FILE
    problems: dict[Path, list[Problem]] = {folder: [], accounts: []}
    table: GroundTable | None = None
    accountability: Accountability | None = None
    try:
        table = load_table(folder)
    except TableError as exc:
        problems[folder].extend(exc.problems)
    try:
        accountability = load_accountability(accounts)
        if table is not None:
            accountability.check_covers(table)
    except AccountabilityError as exc:
        problems[accounts].extend(exc.problems)
    found = [p for ps in problems.values() for p in ps]
    if found or table is None or accountability is None:
        for problem in found:
            print(problem, file=sys.stderr)
        places = " and ".join(str(place) for place, ps in problems.items() if ps)
        print(f"\n{len(found)} problem(s) in {places}", file=sys.stderr)
        return 1
    versions = sum(len(g.versions) for g in table)
    print(f"{len(table)} grounds, {versions} versions: OK ({folder}); table hash {table.hash}")
    print(f"{len(table)} grounds with a processing activity and a retention term, and the "
          f"default retention: OK ({accounts})")
    return 0


def register(sub: Any) -> None:
    grounds_opt = grounds_option()
    grounds = sub.add_parser("grounds", help="read and lint the table of grounds")
    gsub = grounds.add_subparsers(dest="grounds_command", required=True, metavar="ACTION")
    glist = gsub.add_parser("list", parents=[grounds_opt], help="list the grounds")
    glist.add_argument("--on", type=date_argument, default=None, metavar="DATE",
                       help="show the version in force on DATE")
    glist.set_defaults(handler=cmd_grounds_list)
    gshow = gsub.add_parser("show", parents=[grounds_opt], help="show one ground")
    gshow.add_argument("id")
    gshow.add_argument("--on", type=date_argument, default=None, metavar="DATE",
                       help="only the version in force on DATE")
    gshow.add_argument("--json", action="store_true", help="print JSON")
    gshow.set_defaults(handler=cmd_grounds_show)
    gcheck = gsub.add_parser("check", parents=[grounds_opt],
                             help="lint a folder of ground files and the accountability file; "
                                  "exit 1 on problems")
    gcheck.add_argument("dir", nargs="?", type=Path, default=None, metavar="DIR")
    gcheck.add_argument("--accountability", type=Path, default=None, metavar="FILE",
                        help="the accountability file that must cover the table, with a "
                             "retention term per ground (default: the shipped one)")
    gcheck.set_defaults(handler=cmd_grounds_check)
