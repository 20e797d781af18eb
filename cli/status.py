"""``disclosure status [REQUEST]``: where requests stand."""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from cli.arguments import print_table
from flows.runtime import open_ledger
from records.ledger import latest_decision
from records.models import RequestRow, RequestStatus
from records.settings import Settings, load_settings


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
    print_table(rows)
    if not args.request:
        print(f"\n{total} request(s) in {settings.resolved_database_url}")
    return 0


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="where requests stand")
    status.add_argument("request", nargs="?", default=None, metavar="REQUEST")
    status.set_defaults(handler=cmd_status)
