"""Prefect events the engine emits about requests, for automations to act on.

Resource ``disclosure.request.<request id>``; payloads carry ids, dates, codes and counts only.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from flows.logs import get_logger

REVIEW_NEEDED = "disclosure.review.needed"
REVIEW_DECIDED = "disclosure.review.decided"
REVIEW_OVERDUE = "disclosure.review.overdue"
REVIEW_ESCALATED = "disclosure.review.escalated"
#: a request the pipeline set aside (``failed``): a value it cannot record, a release the gate
#: refused; an operator must look (the ledger's ``request_set_aside`` event says why)
REQUEST_SET_ASIDE = "disclosure.request.set_aside"


def emit(event: str, request_id: str, **payload: Any) -> None:
    """Emit ``event`` about a request; a Prefect that cannot take it does not stop the work."""
    try:
        emit_event(event=event,
                   resource={"prefect.resource.id": f"disclosure.request.{request_id}",
                             "prefect.resource.name": request_id},
                   payload={"request_id": request_id, **payload})
    except Exception as exc:  # the ledger holds the fact; the event is a signal
        get_logger("events").warning("event_not_emitted", event_name=event,
                                     request_id=request_id, error=type(exc).__name__)
