"""The review flow ``review-request``: one run per request whose decision needs a person.

For now it parks the request in ``awaiting_review`` and says so; the legal reviewer's form in
the Prefect UI comes next. When a reviewer has decided, the run delivers with the same task the
dispatcher uses (:func:`flows.tasks.deliver_batch`).
"""

from __future__ import annotations

import structlog
from prefect import flow
from prefect.runtime import flow_run
from sqlmodel import Session

from flows.logs import get_logger
from flows.runtime import runtime
from records.ledger import status_of


@flow(name="review-request", persist_result=False,
      description="Hold one request for a legal reviewer's decision, then deliver what was "
                  "decided.")
def review_request(request_id: str) -> str:
    """Park ``request_id`` for review; returns its state."""
    run_id = str(flow_run.id) if flow_run.id else None
    structlog.contextvars.bind_contextvars(flow_run_id=run_id, request_id=request_id)
    rt = runtime()
    with Session(rt.ledger) as session:
        status = status_of(session=session, request_id=request_id)
    state = status.state if status else "unknown"
    get_logger("review").info("review_waiting", state=state)
    structlog.contextvars.unbind_contextvars("flow_run_id", "request_id")
    return state
