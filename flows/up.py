"""``disclosure up``: the main job on the embedded defaults, and the ledger's operator commands.

Until the Prefect pipeline lands, ``up`` is one pass over the bundled example requests: each is
recorded as received in the SQLite ledger, decided by :func:`legal_bases.assessment.assess`, and
the decision recorded (hash-chained, with the table snapshot); then the chain is verified and a
table of outcomes printed. Running it again is safe: a request already decided is not decided
again (invalid submissions are new receipts each time: nothing received is dropped).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from flows.logs import get_logger
from legal_bases.assessment import assess
from legal_bases.errors import DisclosureError, FieldError
from legal_bases.request import InvalidRequest, read_request
from legal_bases.table import GroundTable
from legal_bases.validator import load_yaml
from legal_bases.vocabulary import Body
from records.chain import verify_chain
from records.db import open_ledger
from records.ledger import (
    compute_deadline,
    latest_decision,
    received_on,
    record_decision,
    record_submission,
)
from records.models import DecisionRow, RequestRow, RequestStatus
from records.pseudonym import Pseudonymizer
from records.settings import Settings, load_settings
from records.vocabulary import Channel

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


class ExamplesError(DisclosureError):
    """Raised when the folder of example requests is missing or its partner list is broken."""


@dataclass(frozen=True)
class Outcome:
    partner_id: str
    file: str
    reference: str
    ground: str
    outcome: str
    detail: str


def _partners(examples: Path) -> dict[str, Body]:
    path = examples / "partners.yaml"
    try:
        entries = load_yaml(path.read_text("utf-8"))
        return {entry["id"]: Body(entry["body"]) for entry in entries}
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ExamplesError(f"{path}: cannot read the example partners: {exc}") from exc


def decide_file(*, session: Session, path: Path, partner_id: str, body: Body,
                table: GroundTable, pseudonymizer: Pseudonymizer) -> Outcome:
    """Record one example submission and decide it (once); returns what was decided."""
    raw_text = path.read_text("utf-8")
    received_at = datetime.now(UTC)
    try:
        raw: Any = json.loads(raw_text)
        parsed = read_request(raw, received_on=received_on(received_at))
    except json.JSONDecodeError as exc:
        raw = None
        parsed = InvalidRequest((FieldError("", "bad_json", f"not JSON: {exc.msg}"),))
    row = record_submission(session=session, partner_id=partner_id, requester_body=body,
                            channel=Channel.CLI, raw_body=raw_text, parsed=parsed,
                            received_at=received_at, pseudonymizer=pseudonymizer)
    decided = latest_decision(session=session, request_id=row.id)
    if decided is None:
        decision = assess(parsed, body, table)
        deadline = None
        if decision.ground_version is not None and not isinstance(parsed, InvalidRequest):
            version = table.version(decision.ground_version)
            deadline = compute_deadline(received_on=received_on(row.received_at),
                                        response_days=version.response_days,
                                        due_date=parsed.due_date)
        decided = record_decision(session=session, request_id=row.id, decision=decision,
                                  table=table, decided_at=datetime.now(UTC), deadline=deadline)
    session.commit()
    get_logger("up").info("example_decided", request_id=row.id, outcome=decided.outcome)
    return Outcome(partner_id, path.name, row.reference or "—", decided.ground_id or "—",
                   decided.outcome, _detail(decided))


def _detail(row: DecisionRow) -> str:
    if row.review_triggers:
        return "review: " + ", ".join(t["code"] for t in row.review_triggers)
    if row.outcome == "rejected":
        return ", ".join(r["code"] for r in row.reasons)
    withheld = f"; withheld {', '.join(row.withheld)}" if row.withheld else ""
    return f"released {', '.join(row.released)}{withheld}"


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings()
    examples: Path = args.examples
    partners = _partners(examples)
    files = sorted((examples / "requests").glob("*/*.json"))
    if not files:
        raise ExamplesError(f"no example requests in {examples / 'requests'}")
    engine = open_ledger(settings)
    table = settings.ground_table()
    pseudonymizer = Pseudonymizer.from_settings(settings)
    outcomes = []
    with Session(engine) as session:
        for path in files:
            partner_id = path.parent.name
            if partner_id not in partners:
                raise ExamplesError(f"{path}: partner {partner_id!r} is not in partners.yaml")
            outcomes.append(decide_file(session=session, path=path, partner_id=partner_id,
                                        body=partners[partner_id], table=table,
                                        pseudonymizer=pseudonymizer))
        report = verify_chain(session=session)
    _print_outcomes(outcomes)
    print(f"\nLedger: {settings.resolved_database_url}")
    print(f"Table of grounds: {len(table)} grounds, hash {table.hash[:16]}…")
    print(f"Audit chain: {report.events_checked} events, "
          f"{'intact' if report.ok else 'BROKEN at ' + str(report.broken_seq)}")
    print("Where requests stand:  .venv/bin/disclosure status")
    print("Decide one by hand:    .venv/bin/disclosure decide --body gemeente FILE.json")
    return 0 if report.ok else 1


def _print_outcomes(outcomes: list[Outcome]) -> None:
    rows = [("partner", "reference", "ground", "outcome", "detail")]
    rows += [(o.partner_id, o.reference, o.ground, o.outcome, o.detail) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])


# -- ledger commands ---------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    settings: Settings = load_settings()
    engine = open_ledger(settings)
    with Session(engine) as session:
        query = (select(RequestRow, RequestStatus)
                 .join(RequestStatus,
                       RequestStatus.request_id == RequestRow.id)  # type: ignore[arg-type]
                 .order_by(RequestRow.received_at))  # type: ignore[arg-type]
        if args.request:
            query = query.where(RequestRow.id == args.request)
        found = session.execute(query).all()
        if args.request and not found:
            print(f"no request {args.request}")
            return 1
        rows = [("request", "partner", "reference", "state", "outcome", "deadline")]
        for request, status in found:
            decision = latest_decision(session=session, request_id=request.id)
            rows.append((request.id, request.partner_id, request.reference or "—",
                         status.state, decision.outcome if decision else "—",
                         decision.deadline.isoformat() if decision and decision.deadline
                         else "—"))
        total = session.execute(select(func.count()).select_from(RequestRow)).scalar_one()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"\n{total} request(s) in {settings.resolved_database_url}")
    return 0


def cmd_audit_verify(_args: argparse.Namespace) -> int:
    engine = open_ledger(load_settings())
    with Session(engine) as session:
        report = verify_chain(session=session)
    if report.ok:
        print(f"audit chain intact: {report.events_checked} events, head {report.head_hash}")
        return 0
    print(f"audit chain BROKEN at event {report.broken_seq}: {report.problem} ({report.detail})")
    return 1


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    settings = load_settings()
    open_ledger(settings)
    print(f"ledger schema up to date: {settings.resolved_database_url}")
    return 0


def register(sub: Any) -> None:
    """Add ``up``, ``status``, ``audit verify`` and ``db upgrade`` to the command line."""
    up = sub.add_parser("up", help="run the main job on the embedded defaults",
                        description="Decide and record the bundled example requests in the "
                                    "local ledger, verify the audit chain, print the outcomes.")
    up.add_argument("--examples", type=Path, default=EXAMPLES_DIR, metavar="DIR",
                    help="folder with partners.yaml and requests/<partner>/*.json")
    up.set_defaults(handler=cmd_up)
    status = sub.add_parser("status", help="where requests stand")
    status.add_argument("request", nargs="?", default=None, metavar="REQUEST")
    status.set_defaults(handler=cmd_status)
    audit = sub.add_parser("audit", help="check the record")
    asub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    asub.add_parser("verify", help="walk the audit hash chain; exit 1 if it is broken"
                    ).set_defaults(handler=cmd_audit_verify)
    db = sub.add_parser("db", help="the ledger's database")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    dsub.add_parser("upgrade", help="apply the ledger's migrations"
                    ).set_defaults(handler=cmd_db_upgrade)
