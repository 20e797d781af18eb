"""Where a partner's requests stand, as the intake API tells it: status documents and pages.

:func:`status_document` is the answer of ``GET /v1/requests/{id}`` (state, decision with its
citations, deadline, delivery); :func:`status_url` the address it is found at. The list of a
partner's requests is paged by an opaque cursor (:func:`encode_cursor`, :func:`decode_cursor`):
the time of receipt and id of the last request of the page before.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, date, datetime
from typing import Any

from fastapi import Request
from sqlalchemy import Engine, Select, and_, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from connectors.intake_problems import REQUESTS_PATH, ApiError, origin_of
from legal_bases import limits
from legal_bases.errors import FieldError
from legal_bases.request import read_json
from legal_bases.table import GroundTable
from records.decisions import compute_deadline
from records.ledger import latest_decision, raw_body_of, received_on
from records.models import DeliveryRow, RequestRow, RequestStatus
from records.vocabulary import RequestState

_DELIVERY_BY_STATE = {RequestState.DELIVERED.value: "delivered",
                      RequestState.FAILED.value: "failed",
                      RequestState.REJECTED.value: "not_applicable",
                      RequestState.INVALID.value: "not_applicable"}


def status_url(request: Request, request_id: str) -> str:
    """The absolute URL of a request's status, as the caller addressed us (cheaper than
    ``url_for``, which this hot path would otherwise spend a tenth of its time in)."""
    return f"{origin_of(request.scope)}{REQUESTS_PATH}/{request_id}"


def _deadline(row: RequestRow, table: GroundTable) -> date | None:
    if not row.valid or row.legal_basis is None or row.reference_date is None:
        return None
    ground = table.get(row.legal_basis)
    version = ground.version_on(row.reference_date) if ground is not None else None
    if version is None:
        return None
    return compute_deadline(received_on=received_on(row.received_at),
                            response_days=version.response_days, due_date=row.due_date)


def _claimed_purpose(raw_body: str | None) -> str | None:
    """The purpose an invalid submission claimed, where its raw body reads (strictly) as a JSON
    object whose ``purpose`` is a string that fits a slug; else None. The ledger keeps a purpose
    for valid requests only; this reads it back for the status document, the ledger unchanged.
    """
    if raw_body is None:
        return None  # shredded under retention
    data, refused = read_json(raw_body)
    if refused is not None or not isinstance(data, dict):
        return None
    purpose = data.get("purpose")
    if not isinstance(purpose, str) or len(purpose) > limits.MAX_SLUG_LENGTH:
        return None
    if "\x00" in purpose or any(0xD800 <= ord(c) <= 0xDFFF for c in purpose):
        return None  # not text an answer should carry
    return purpose


def status_document(session: Session, row: RequestRow, state: str, table: GroundTable,
                    self_url: str) -> dict[str, Any]:
    """Where one request stands, as ``GET /v1/requests/{id}`` answers."""
    decision = latest_decision(session=session, request_id=row.id)
    decision_out: dict[str, Any] | None = None
    deadline = _deadline(row, table)
    if decision is not None:
        decision_out = {
            "outcome": decision.outcome, "released": decision.released,
            "withheld": decision.withheld, "reasons": decision.reasons,
            "review_triggers": decision.review_triggers, "ground": decision.ground_id,
            "ground_version": decision.ground_version,
            "decided_by": "engine" if decision.decided_by == "engine" else "reviewer",
            "decided_at": decision.decided_at}
        deadline = decision.deadline or deadline
    delivery: dict[str, Any] = {"status": _DELIVERY_BY_STATE.get(state, "pending")}
    if state == RequestState.DELIVERED.value:
        found = session.execute(
            select(DeliveryRow).where(col(DeliveryRow.request_id) == row.id)
            .order_by(col(DeliveryRow.delivered_at).desc()).limit(1)).scalars().first()
        if found is not None:
            delivery |= {"delivered_at": found.delivered_at, "destination": found.destination,
                         "sha256": found.receipt.get("sha256"),
                         "size": found.receipt.get("size")}
    return {
        "id": row.id, "reference": row.reference, "channel": row.channel,
        "received_at": row.received_at, "correlation_id": row.correlation_id, "state": state,
        "valid": row.valid, "errors": row.validation_errors, "legal_basis": row.legal_basis,
        "purpose": row.purpose if row.valid else _claimed_purpose(raw_body_of(
            session=session, row=row)),
        "reference_date": row.reference_date, "due_date": row.due_date,
        "subject_count": row.subject_count, "decision": decision_out, "deadline": deadline,
        "delivery": delivery, "links": {"self": self_url}}


def find_request(session: Session, request_id: str) -> tuple[RequestRow, str] | None:
    """A request and its state, by id (whoever's it is: the caller checks that)."""
    found = session.execute(
        select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
        .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
        .where(col(RequestRow.id) == request_id)).first()
    return None if found is None else (found[0], found[1])


def current_state(reads: Engine, request_id: str) -> tuple[str | None, datetime | None]:
    """The state and time of receipt of an accepted request (for a repeat's answer); None and
    None if the ledger cannot tell now."""
    try:
        with Session(reads) as session:
            found = session.execute(
                select(RequestStatus.state, RequestRow.received_at)  # type: ignore[call-overload]
                .join(RequestRow, col(RequestStatus.request_id) == col(RequestRow.id))
                .where(col(RequestRow.id) == request_id)).first()
    except SQLAlchemyError:
        return None, None
    return (found[0], found[1]) if found is not None else (None, None)


def requests_query(partner_id: str, *, state: RequestState | None, since: datetime | None,
                   cursor: str | None, limit: int) -> Select[Any]:
    """The query of a page of a partner's requests, oldest first: ``limit`` of them and one more
    if there is a next page. Raises :class:`ApiError` ``400`` for a cursor this API did not give
    out."""
    query: Select[Any] = (
        select(RequestRow.id, RequestRow.reference,  # type: ignore[call-overload]
               RequestRow.valid, RequestRow.legal_basis, RequestRow.received_at,
               RequestStatus.state)
        .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
        .where(col(RequestRow.partner_id) == partner_id))
    if state is not None:
        query = query.where(col(RequestStatus.state) == state.value)
    if since is not None:
        query = query.where(col(RequestRow.received_at) >= _utc_moment(since))
    if cursor is not None:
        at, last_id = _decode_cursor(cursor)
        query = query.where(or_(col(RequestRow.received_at) > at,
                                and_(col(RequestRow.received_at) == at,
                                     col(RequestRow.id) > last_id)))
    return query.order_by(col(RequestRow.received_at), col(RequestRow.id)).limit(limit + 1)


def _utc_moment(moment: datetime) -> datetime:
    """``moment`` in UTC (no offset: UTC), clamped to what a timestamp can hold."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 and the like
        if moment.year < 2:
            return datetime.min.replace(tzinfo=UTC)
        return datetime.max.replace(tzinfo=UTC)


def encode_cursor(received_at: datetime, request_id: str) -> str:
    """The cursor of the page after the request received at ``received_at`` with this id."""
    raw = json.dumps([received_at.astimezone(UTC).isoformat(), request_id])
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    """What :func:`encode_cursor` encoded; raises :class:`ApiError` ``400`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, request_id = json.loads(raw)
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(request_id, str):
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_parameters", "the cursor is not one this API gave out",
                       errors=(FieldError("query.cursor", "bad_cursor",
                                          "use the next link of the previous page"),)) from None
    return moment, request_id
