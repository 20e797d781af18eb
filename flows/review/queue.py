"""The review queue as a reviewer opens it first: a Prefect artifact and ``disclosure reviews``.

Both show the same rows (:func:`queue_rows`, from :func:`records.review_queue.waiting_reviews`):
every waiting review, oldest deadline first, overdue and escalated marked, the step (first
reviewer, or second after whom), and the review run to open. The dispatcher's sweep publishes
the Markdown artifact ``review-queue`` (:func:`publish_review_queue`), a new version only when
the queue changed, so the Artifacts page always shows the queue as it stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from prefect.settings import PREFECT_UI_URL
from sqlmodel import Session

from flows.artifacts import publish_markdown
from flows.logs import get_logger
from flows.review.labels import review_run_name, shown_reference
from flows.runtime import Runtime
from records.ledger import received_on
from records.review_queue import WaitingReview, waiting_reviews

QUEUE_KEY = "review-queue"


@dataclass(frozen=True)
class QueueRow:
    """One line of the queue, in words (the same on the artifact and the command line)."""

    due: str
    when: str
    mark: str
    request_id: str
    reference: str
    ground: str
    requester: str
    step: str
    run_name: str
    run_id: str | None


def when(deadline: date | None, today: date) -> str:
    """``3 days left``, ``due today``, ``2 days overdue``, or ``no deadline``."""
    if deadline is None:
        return "no deadline"
    days = (deadline - today).days
    if days == 0:
        return "due today"
    return f"{abs(days)} day{'s' if abs(days) != 1 else ''} {'left' if days > 0 else 'overdue'}"


def queue_rows(reviews: list[WaitingReview], today: date) -> list[QueueRow]:
    """The queue's lines: oldest deadline first, as :func:`waiting_reviews` orders them."""
    rows = []
    for review in reviews:
        mark = ("ESCALATED" if review.escalated
                else "OVERDUE" if review.overdue(today) else "")
        first = review.first
        step = ("first reviewer" if first is None else
                f"second reviewer (first: {first.reviewer_name}, {first.role or 'no role'}, "
                f"{first.verdict})")
        if review.refused_answers:
            step += f"; {review.refused_answers} answer(s) refused"
        rows.append(QueueRow(
            due=review.deadline.isoformat() if review.deadline else "—",
            when=when(review.deadline, today), mark=mark, request_id=review.request_id,
            reference=shown_reference(review.reference), ground=review.ground_id or "—",
            requester=review.partner_id, step=step,
            run_name=review_run_name(reference=review.reference, ground_id=review.ground_id,
                                     deadline=review.deadline),
            run_id=review.review_run_id))
    return rows


def run_url(ui_url: str | None, run_id: str) -> str:
    """The Prefect UI page of a flow run (relative when the UI's address is not known)."""
    return f"{(ui_url or '').rstrip('/')}/runs/flow-run/{run_id}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def queue_markdown(rows: list[QueueRow], today: date, ui_url: str | None) -> str:
    """The queue as the Markdown artifact shows it."""
    overdue = sum(1 for r in rows if r.mark == "OVERDUE")
    escalated = sum(1 for r in rows if r.mark == "ESCALATED")
    lines = [f"# Review queue: {len(rows)} waiting "
             f"({overdue} overdue, {escalated} escalated)", "",
             f"As of {today.isoformat()}. Oldest deadline first. Open the run, then "
             "**Resume** to read the case and decide. Overdue: the deadline is today or past; "
             "escalated: past it and reported to the legal department "
             "(`disclosure reviews` shows the same list).", ""]
    if not rows:
        lines.append("*No review is waiting.*")
        return "\n".join(lines)
    lines += ["| Deadline | Request (opens its review run) | Ground | From | Step |",
              "|---|---|---|---|---|"]
    for row in rows:
        mark = f"**{row.mark}** " if row.mark else ""
        request = (f"[{_cell(row.reference)}]({run_url(ui_url, row.run_id)})" if row.run_id
                   else f"{_cell(row.reference)} (its run starts with the next dispatcher run)")
        lines.append(f"| {mark}{row.due} ({row.when}) | {request} | `{row.ground}` "
                     f"| {_cell(row.requester)} | {_cell(row.step)} |")
    return "\n".join(lines)


def publish_review_queue(rt: Runtime) -> bool:
    """Publish the queue as the artifact ``review-queue`` if it changed; True if published.
    Called by the dispatcher's every run (the sweep) and when a review run ends. The queue
    is a view: if Prefect cannot take it now, the next dispatcher run publishes it."""
    today = received_on(datetime.now(UTC))
    with Session(rt.ledger) as session:
        rows = queue_rows(waiting_reviews(session=session), today)
    markdown = queue_markdown(rows, today, PREFECT_UI_URL.value())
    try:
        if not publish_markdown(QUEUE_KEY, markdown, description=f"Reviews waiting: "
                                f"{len(rows)}, oldest deadline first"):
            return False
    except Exception as exc:
        get_logger("review").warning("review_queue_not_published", error=type(exc).__name__)
        return False
    get_logger("review").info("review_queue_published", waiting=len(rows))
    return True
