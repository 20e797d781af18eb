"""``disclosure status [REQUEST]``: where requests stand.

Without a request id, one line per request (id, partner, partner's reference, state, outcome of
the decision in force, deadline) and the number of requests in the ledger; with one, that
request's line. Exit status: 0, or 2 when the ledger holds no request with the id given — the
answer ``replay`` and ``timeline`` give to an unknown id too (:func:`unknown_request`).
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy import func, make_url, select
from sqlmodel import Session

from cli.arguments import UsageError, print_table
from flows.runtime import open_ledger
from records.ledger import latest_decision
from records.models import RequestRow, RequestStatus
from records.settings import Settings, load_settings


def unknown_request(request_id: str) -> UsageError:
    """The one answer of ``status``, ``replay`` and ``timeline`` to a request id the ledger does
    not hold: a usage error (stderr, exit 2) that names the id."""
    return UsageError(f"no request {request_id!r} in the ledger "
                      "(`disclosure status` lists the requests)")


def cmd_status(args: argparse.Namespace) -> int:
    settings: Settings = load_settings()
    engine = open_ledger(settings)
    with Session(engine) as session:
        query = (select(RequestRow, RequestStatus)
                 .join(RequestStatus,
                       RequestStatus.request_id == RequestRow.id)  # type: ignore[arg-type]
                 .order_by(RequestRow.received_at))  # type: ignore[arg-type]
        if args.request is not None:
            query = query.where(RequestRow.id == args.request)
        found = session.execute(query).all()
        if args.request is not None and not found:
            raise unknown_request(args.request)
        rows = [("request", "partner", "reference", "state", "outcome", "deadline")]
        for request, status in found:
            decision = latest_decision(session=session, request_id=request.id)
            rows.append((request.id, request.partner_id, request.reference or "—",
                         status.state, decision.outcome if decision else "—",
                         decision.deadline.isoformat() if decision and decision.deadline
                         else "—"))
        total = session.execute(select(func.count()).select_from(RequestRow)).scalar_one()
    print_table(rows)
    if args.request is None:
        where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        print(f"\n{total} request(s) in {where}")
    return 0


def register(sub: Any) -> None:
    status = sub.add_parser(
        "status", help="where requests stand",
        description="One line per request: id, partner, reference, state, outcome of the "
                    "decision in force, deadline. Exit 0; 2 for an unknown request id.")
    status.add_argument("request", nargs="?", default=None, metavar="REQUEST",
                        help="one request's id: only its line")
    status.set_defaults(handler=cmd_status)
