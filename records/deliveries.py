"""Deliveries on the record: exactly one per decision, with the destination's receipt.

The pipeline delivers only decisions that have no delivery row yet, sends the decision id as
the idempotency key (a file drop writes the same file name, an HTTPS receiver deduplicates),
and records the receipt right after. A crash between sending and recording therefore repeats
the same delivery under the same key, which the destination recognises; the unique
idempotency key in ``deliveries`` stops a second row whatever happens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from records import chain
from records.chain import NewEvent
from records.decisions import set_states
from records.models import DeliveryRow
from records.timestamps import utc
from records.vocabulary import EventKind, RequestState

_DELIVERIES: Table = DeliveryRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DeliveryItem:
    """A delivery that happened: to record with :func:`record_deliveries`."""

    request_id: str
    decision_id: str
    partner_id: str
    destination: str
    receipt: dict[str, Any]
    delivered_at: datetime
    status: str = "delivered"
    flow_run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: the categories the document carried (the decision's release; ``audit verify`` holds the
    #: two against each other; the delivery step always says, other recorders may not)
    released: tuple[str, ...] = ()

    @property
    def idempotency_key(self) -> str:
        return delivery_key(self.decision_id)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A delivery that did not happen; ``permanent`` when the destination refused it for good."""

    request_id: str
    decision_id: str
    partner_id: str
    error: str
    failed_at: datetime
    permanent: bool
    flow_run_id: str | None = None


def delivery_key(decision_id: str) -> str:
    """The idempotency key of the delivery of a decision: the same on every attempt."""
    return f"delivery-{decision_id}"


def delivered(*, session: Session, decision_ids: Sequence[str]) -> set[str]:
    """Which of ``decision_ids`` already have their delivery recorded."""
    found: set[str] = set()
    for start in range(0, len(decision_ids), 500):
        chunk = list(decision_ids[start:start + 500])
        found.update(session.execute(select(_DELIVERIES.c.decision_id).where(
            _DELIVERIES.c.decision_id.in_(chunk))).scalars())
    return found


def record_deliveries(*, session: Session, items: Sequence[DeliveryItem]) -> list[DeliveryRow]:
    """Record deliveries with their receipts, their events, and move the requests to delivered.

    All or nothing, in the caller's transaction. A decision whose delivery another worker
    recorded meanwhile (its lease ran out while this one was sending; the destination saw the
    same idempotency key twice) is left out: one delivery row per decision.
    """
    done = delivered(session=session, decision_ids=[i.decision_id for i in items])
    items = [i for i in items if i.decision_id not in done]
    if not items:
        return []
    with session.begin_nested():
        rows = [DeliveryRow(
            id=str(uuid.uuid4()), request_id=item.request_id, decision_id=item.decision_id,
            partner_id=item.partner_id, destination=item.destination,
            idempotency_key=item.idempotency_key, status=item.status, receipt=item.receipt,
            delivered_at=utc(item.delivered_at, name="delivered_at"),
            flow_run_id=item.flow_run_id) for item in items]
        session.add_all(rows)
        session.flush()
        set_states(session, {item.request_id: (RequestState.DELIVERED, item.delivered_at)
                             for item in items})
        chain.append_events(session=session, events=[NewEvent(
            kind=EventKind.DELIVERY_RECORDED.value, occurred_at=row.delivered_at,
            actor=row.partner_id, request_id=row.request_id, flow_run_id=row.flow_run_id,
            payload={"state": RequestState.DELIVERED.value, "delivery_id": row.id,
                     "decision_id": row.decision_id, "destination": row.destination,
                     "status": row.status, "receipt_sha256": row.receipt.get("sha256"),
                     **({"released": sorted(item.released)} if item.released else {}),
                     **item.counts})
            for row, item in zip(rows, items, strict=True)])
    return rows


def record_delivery_failures(*, session: Session, failures: Sequence[DeliveryFailure]) -> None:
    """Record failed deliveries as audit events; a permanent failure moves the request to failed.

    A transient failure leaves the request ``decided``: the next sweep delivers it again.
    """
    if not failures:
        return
    with session.begin_nested():
        permanent = {f.request_id: (RequestState.FAILED, f.failed_at)
                     for f in failures if f.permanent}
        if permanent:
            set_states(session, permanent)
        chain.append_events(session=session, events=[NewEvent(
            kind=EventKind.DELIVERY_FAILED.value, occurred_at=utc(f.failed_at),
            actor=f.partner_id, request_id=f.request_id, flow_run_id=f.flow_run_id,
            payload={"decision_id": f.decision_id, "error": f.error, "permanent": f.permanent,
                     **({"state": RequestState.FAILED.value} if f.permanent else {})})
            for f in failures])
