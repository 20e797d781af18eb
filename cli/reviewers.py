"""``disclosure reviewers add|list|remove``, ``disclosure reviews`` and ``disclosure overdue``:
the review desk."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from cli.arguments import date_argument, print_table
from cli.local_prefect import command_api_url
from flows.pipeline import deadlines
from flows.review.queue import queue_rows, run_url
from flows.runtime import open_ledger, runtime
from legal_bases import limits
from records.review_queue import waiting_reviews
from records.reviews import ROLES, enroll_reviewer, remove_reviewer, reviewers
from records.settings import load_settings
from records.totp import SecretSeal, provisioning_uri

_ID = re.compile(rf"^[a-z0-9][a-z0-9._-]{{0,{limits.MAX_REVIEWER_ID_LENGTH - 1}}}$")


def cmd_reviewers_add(args: argparse.Namespace) -> int:
    if not _ID.match(args.id):
        print(f"disclosure: a reviewer id is 1-{limits.MAX_REVIEWER_ID_LENGTH} of a-z 0-9 . _ - "
              "(a letter or digit first)")
        return 2
    settings = load_settings()
    engine = open_ledger(settings)
    with Session(engine) as session, session.begin():
        secret = enroll_reviewer(session=session, reviewer_id=args.id, name=args.name,
                                 role=args.role, seal=SecretSeal(settings.pseudonym_key_bytes()),
                                 now=datetime.now(UTC))
    print(f"Enrolled reviewer {args.id} ({args.name}, {args.role}).")
    print("Add this secret to their authenticator app now; it is shown only this once:")
    print(f"  secret: {secret}")
    print(f"  uri:    {provisioning_uri(secret, account=args.id)}")
    return 0


def cmd_reviewers_list(_args: argparse.Namespace) -> int:
    engine = open_ledger(load_settings())
    with Session(engine) as session:
        found = reviewers(session=session)
    for reviewer in found:
        state = "active" if reviewer.active else "removed"
        print(f"{reviewer.id:<24} {reviewer.role:<16} {state:<8} {reviewer.name}")
    print(f"\n{len(found)} reviewer(s)")
    return 0


def cmd_reviewers_remove(args: argparse.Namespace) -> int:
    engine = open_ledger(load_settings())
    with Session(engine) as session, session.begin():
        remove_reviewer(session=session, reviewer_id=args.id, now=datetime.now(UTC))
    print(f"Reviewer {args.id} can no longer decide.")
    return 0


def cmd_overdue(args: argparse.Namespace) -> int:
    on = args.on or deadlines.today()
    found = deadlines.overdue(runtime(), on=on)
    for item in found:
        print(f"{item.request_id}  {item.partner_id:<20} {item.reference or '—':<22} "
              f"{item.state:<16} deadline {item.deadline.isoformat()}")
    print(f"\n{len(found)} request(s) at or past their deadline on {on.isoformat()}")
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    """The review queue, as the ``review-queue`` artifact shows it (:mod:`flows.review.queue`)."""
    settings = load_settings()
    on = args.on or deadlines.today()
    engine = open_ledger(settings)
    with Session(engine) as session:
        rows = queue_rows(waiting_reviews(session=session), on)
    engine.dispose()
    ui = command_api_url(settings.prefect_port,
                         settings.data_dir / "prefect").removesuffix("/api")
    table = [("deadline", "", "request", "reference", "ground", "from", "step", "review run")]
    table += [(f"{r.due} ({r.when})", r.mark, r.request_id, r.reference, r.ground, r.requester,
               r.step, run_url(ui, r.run_id) if r.run_id else "not started yet")
              for r in rows]
    if rows:
        print_table(table)
        print()
    overdue = sum(1 for r in rows if r.mark == "OVERDUE")
    escalated = sum(1 for r in rows if r.mark == "ESCALATED")
    print(f"{len(rows)} review(s) waiting on {on.isoformat()}: {overdue} overdue, "
          f"{escalated} escalated. Open a review run, then Resume to decide.")
    return 0


def register(sub: Any) -> None:
    """Add ``reviewers``, ``reviews`` and ``overdue`` to the command line."""
    rev = sub.add_parser("reviewers", help="enrol, list and remove legal reviewers")
    rsub = rev.add_subparsers(dest="reviewers_command", required=True, metavar="ACTION")
    add = rsub.add_parser("add", help="enrol a reviewer; prints their TOTP secret once")
    add.add_argument("id", help="the reviewer id they type on the form")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=ROLES)
    add.set_defaults(handler=cmd_reviewers_add)
    rsub.add_parser("list", help="the enrolled reviewers").set_defaults(handler=cmd_reviewers_list)
    remove = rsub.add_parser("remove", help="stop a reviewer from deciding")
    remove.add_argument("id")
    remove.set_defaults(handler=cmd_reviewers_remove)
    reviews = sub.add_parser("reviews", help="the review queue: every waiting review, oldest "
                                             "deadline first, with the run to open")
    reviews.add_argument("--on", type=date_argument, default=None, metavar="DATE",
                         help="the day to count from (default today, Europe/Amsterdam)")
    reviews.set_defaults(handler=cmd_reviews)
    overdue = sub.add_parser("overdue", help="requests at or past their deadline")
    overdue.add_argument("--on", type=date_argument, default=None, metavar="DATE",
                         help="the day to count from (default today, Europe/Amsterdam)")
    overdue.set_defaults(handler=cmd_overdue)
