"""Data access for the ledger: record submissions and read requests back (decisions are
recorded by :mod:`records.decisions`, table snapshots by :mod:`records.snapshots`).

Every function takes keyword arguments and works in the caller's session and transaction; none
commits. Each writing function does its work inside a SAVEPOINT, so if any part of it fails —
the row, the status, the audit event — none of it stays, even if the caller carries on and
commits (fail closed, DESIGN.md section 10).

Personal data: a request's raw body is kept exactly as received (the record of what the partner
sent); subjects are otherwise stored and audited only by their keyed pseudonym.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from sqlmodel import col

from legal_bases.identifiers import mask_identifier_shapes
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.table import canonical_json, sha256
from legal_bases.vocabulary import Body
from records import chain, data_keys
from records.chain import NewEvent
from records.errors import (
    LedgerError,
    ReferenceConflictError,
)
from records.models import (
    REFERENCE_LENGTH,
    SLUG_LENGTH,
    AuditEvent,
    DecisionRow,
    RequestRow,
    RequestStatus,
    RequestSubject,
)
from records.pseudonym import Pseudonymizer
from records.timestamps import utc
from records.vocabulary import Channel, EventKind, RequestState

#: Whose calendar day a request is received on: DUO's, for the statutory response term.
RECEIPT_TIMEZONE = ZoneInfo("Europe/Amsterdam")
#: ``decided_by`` of the engine's own decisions.
ENGINE = "engine"

_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_V = TypeVar("_V", Body, Channel)


# --- submissions -------------------------------------------------------------------------------

def body_hash(raw_body: str) -> str:
    """sha256 of the canonical JSON of a submission, or of its text if it is not JSON.

    Two submissions with the same hash say the same thing, whatever their key order or spacing.
    """
    is_json, data = _loads(raw_body)
    return sha256(canonical_json(data)) if is_json else sha256(raw_body)


def received_on(received_at: datetime) -> date:
    """The calendar day in the Netherlands of ``received_at`` (the day of receipt in law)."""
    return utc(received_at, name="received_at").astimezone(RECEIPT_TIMEZONE).date()


def local_midnight(day: date) -> datetime:
    """The start of ``day`` in the Netherlands, in UTC (midnight is never skipped by DST there)."""
    return datetime.combine(day, time(), tzinfo=RECEIPT_TIMEZONE).astimezone(UTC)


def local_days(first: date, last: date) -> tuple[datetime, datetime]:
    """The instants (UTC) from the start of day ``first`` up to, not including, the start of the
    day after ``last``, days as calendared in the Netherlands (audit periods)."""
    return local_midnight(first), local_midnight(last + timedelta(days=1))


def record_submission(*, session: Session, partner_id: str, requester_body: Body | str,
                      channel: Channel | str, raw_body: str,
                      parsed: DisclosureRequest | InvalidRequest, received_at: datetime,
                      pseudonymizer: Pseudonymizer,
                      correlation_id: str | None = None,
                      intake_key: str | None = None,
                      flow_run_id: str | None = None) -> RequestRow:
    """Record a submission as received, valid or not, and return its row.

    Writes the request (with the raw body exactly as received), its subjects by pseudonym, its
    status (``received`` or ``invalid``) and the audit event (``request_received`` or
    ``request_invalid``). A valid request whose partner and reference match an accepted one is a
    repeat: with the same body the existing row is returned and nothing is written; with a
    different body :class:`ReferenceConflictError` is raised. Invalid submissions never conflict.

    ``intake_key`` is the source's own key for the submission (a drop-off file's line): a
    submission whose key was recorded before returns that row, valid or not, and writes nothing.
    """
    received_at = utc(received_at, name="received_at")
    body, via = _vocabulary(Body, requester_body, "requester_body"), _vocabulary(
        Channel, channel, "channel")
    is_json, data = _loads(raw_body)
    basis = canonical_json(data) if is_json else raw_body
    request = parsed if isinstance(parsed, DisclosureRequest) else None
    if intake_key is not None:
        seen = session.execute(select(RequestRow).where(
            col(RequestRow.intake_key) == intake_key)).scalar_one_or_none()
        if seen is not None:
            return seen
    if request is not None:
        existing = _accepted(session, partner_id, request.reference)
        if existing is not None:
            return _repeat_or_conflict(session, existing, basis, partner_id)
    request_id = str(uuid.uuid4())
    key, key_row = data_keys.vault_of(session).new_key(request_id)
    row = RequestRow(**request_values(
        partner_id=partner_id, body=body, channel=via, raw_body=raw_body,
        data=data if is_json else None, digest=data_keys.body_digest(key, basis), parsed=parsed,
        received_at=received_at, correlation_id=correlation_id, key=key, request_id=request_id,
    ) | {"intake_key": intake_key})
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            session.execute(insert(data_keys.DATA_KEYS), [key_row])
            pseudonyms = _record_subjects(session, row, request, pseudonymizer)
            state = RequestState.RECEIVED if request is not None else RequestState.INVALID
            session.execute(insert(_STATUS), [{"request_id": row.id, "state": state.value,
                                               "updated_at": received_at}])
            chain.append_events(session=session, events=[submission_event(
                row, request, parsed, state, pseudonyms, key=key, flow_run_id=flow_run_id)])
    except IntegrityError:
        # Another transaction accepted the same reference first (PostgreSQL: it committed
        # while we waited on the unique index). Answer as if we had seen it before inserting.
        existing = _accepted(session, partner_id, request.reference) if request else None
        if existing is None:
            raise
        return _repeat_or_conflict(session, existing, basis, partner_id)
    return row


def _loads(raw_body: str) -> tuple[bool, Any]:
    """The body as JSON data, if it reads as JSON at all (leniently: only its hash depends on
    this); text nested too deeply to read counts as text, like text that is not JSON."""
    try:
        return True, json.loads(raw_body)
    except (ValueError, RecursionError):
        return False, None


def _vocabulary(kind: type[_V], value: _V | str, name: str) -> _V:
    try:
        return kind(value)
    except ValueError:
        raise LedgerError(f"{name} {value!r} is not one of {[v.value for v in kind]}") from None


def _accepted(session: Session, partner_id: str, reference: str) -> RequestRow | None:
    # `requests.valid` as the partial index's own predicate (not `valid = 1`), so SQLite
    # answers from uq_requests_partner_reference instead of scanning every request.
    return session.scalars(
        select(RequestRow).where(col(RequestRow.partner_id) == partner_id,
                                 col(RequestRow.reference) == reference,
                                 text("requests.valid"))).first()


def _repeat_or_conflict(session: Session, existing: RequestRow, basis: str,
                        partner_id: str) -> RequestRow:
    if data_keys.same_body(data_keys.key_for(session, existing.id), existing.body_hash, basis):
        return existing
    raise ReferenceConflictError(partner_id=partner_id, reference=existing.reference or "",
                                 existing_request_id=existing.id)


def _short_str(data: Any, key: str, limit: int) -> str | None:
    """What an invalid submission claimed for ``key``, where it is printable text that fits its
    column (a reference of escape codes would reach an operator's terminal); the raw body keeps
    whatever it was."""
    value = data.get(key) if isinstance(data, dict) else None
    return (value if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()
            else None)


def request_values(*, partner_id: str, body: Body, channel: Channel, raw_body: str, data: Any,
                   digest: str, parsed: DisclosureRequest | InvalidRequest,
                   received_at: datetime, correlation_id: str | None, key: data_keys.DataKey,
                   request_id: str) -> dict[str, Any]:
    """The values of a submission's ``requests`` row (every column named, so that a batch of
    them inserts as one statement): the raw body sealed with the request's data ``key``."""
    values: dict[str, Any] = {
        "id": request_id, "partner_id": partner_id, "requester_body": body.value,
        "channel": channel.value, "received_at": received_at,
        "raw_body": key.seal(data_keys.RAW_BODY, raw_body),
        "body_hash": digest, "correlation_id": correlation_id, "intake_key": None}
    if isinstance(parsed, DisclosureRequest):
        return values | {
            "reference": parsed.reference, "valid": True, "validation_errors": [],
            "legal_basis": parsed.legal_basis, "purpose": parsed.purpose.value,
            "reference_date": parsed.reference_date, "due_date": parsed.due_date,
            "subject_count": len(parsed.subjects)}
    # What an invalid submission claimed, where it fits; the raw body keeps all of it, sealed.
    # These columns are in clear and kept for good: a number shaped like a BSN or
    # onderwijsnummer in them (a message quoting what was sent, a reference) is masked.
    legal_basis = mask_identifier_shapes(parsed.legal_basis) if parsed.legal_basis and len(
        parsed.legal_basis) <= SLUG_LENGTH else None
    reference = _short_str(data, "reference", REFERENCE_LENGTH)
    return values | {
        "reference": mask_identifier_shapes(reference) if reference else None, "valid": False,
        "validation_errors": [e.to_dict() | {"path": mask_identifier_shapes(e.path),
                                             "message": mask_identifier_shapes(e.message)}
                              for e in parsed.errors], "legal_basis": legal_basis,
        "purpose": None, "reference_date": None, "due_date": None, "subject_count": None}


def _record_subjects(session: Session, row: RequestRow, request: DisclosureRequest | None,
                     pseudonymizer: Pseudonymizer) -> list[str]:
    if request is None:
        return []
    pseudonyms = [pseudonymizer.of(s) for s in request.subjects]
    rows = [{"request_id": row.id, "position": position, "id_type": s.id_type.value,
             "pseudonym": pseudonym}
            for position, (s, pseudonym) in enumerate(zip(request.subjects, pseudonyms,
                                                          strict=True))]
    if rows:
        session.execute(insert(_SUBJECTS), rows)
    return pseudonyms


def submission_event(row: RequestRow, request: DisclosureRequest | None,
                      parsed: DisclosureRequest | InvalidRequest, state: RequestState,
                      pseudonyms: list[str], *, key: data_keys.DataKey,
                      flow_run_id: str | None = None) -> NewEvent:
    """The audit event of a recorded submission: ``request_received`` with what was asked (by
    count, and the subjects' digest under the request's data ``key``), or ``request_invalid``
    with the error codes only."""
    payload: dict[str, Any] = {
        "state": state.value,
        "partner_id": row.partner_id,
        "requester_body": row.requester_body,
        "channel": row.channel,
        "reference": row.reference,
        "legal_basis": row.legal_basis,
        "body_hash": row.body_hash,
        "correlation_id": row.correlation_id,
        # the sealed text itself, so the chain commits to what stays after shredding
        "sealed_body_sha256": sha256(row.raw_body),
    }
    if request is not None:
        by_type: dict[str, int] = {}
        for subject in request.subjects:
            by_type[subject.id_type.value] = by_type.get(subject.id_type.value, 0) + 1
        payload |= {
            "purpose": request.purpose.value,
            "reference_date": request.reference_date.isoformat(),
            "due_date": request.due_date.isoformat() if request.due_date else None,
            "categories": [c.value for c in request.categories],
            "subject_count": len(pseudonyms),
            "subjects_by_type": by_type,
            "subjects_digest": data_keys.subjects_digest(key, pseudonyms),
        }
        kind = EventKind.REQUEST_RECEIVED
    else:
        # Paths and messages of validation errors can echo what was sent: codes only here.
        errors = parsed.errors if isinstance(parsed, InvalidRequest) else ()
        payload |= {"error_count": len(errors),
                    "error_codes": sorted({e.code for e in errors})}
        kind = EventKind.REQUEST_INVALID
    return NewEvent(kind=kind.value, occurred_at=row.received_at, actor=row.partner_id,
                    request_id=row.id, flow_run_id=flow_run_id, payload=payload)


# --- queries -----------------------------------------------------------------------------------

def get_request(*, session: Session, request_id: str) -> RequestRow | None:
    """The request with this id, or None."""
    return session.get(RequestRow, request_id)


def raw_body_of(*, session: Session, row: RequestRow) -> str | None:
    """The submission exactly as received: its raw body opened with the request's data key
    (as stored, for a submission recorded in clear before 0.8.0); None once it is shredded."""
    if not data_keys.is_sealed(row.raw_body):
        return data_keys.open_field(None, data_keys.RAW_BODY, row.raw_body,
                                    pending=data_keys.is_pending(session, row.id))
    return data_keys.open_field(data_keys.key_for(session, row.id), data_keys.RAW_BODY,
                                row.raw_body)


def subjects_for(*, session: Session, request_id: str) -> list[RequestSubject]:
    """The subjects of a request (pseudonyms), in their order in the request."""
    return list(session.scalars(
        select(RequestSubject).where(col(RequestSubject.request_id) == request_id)
        .order_by(col(RequestSubject.position))))


def decisions_for(*, session: Session, request_id: str) -> list[DecisionRow]:
    """Every decision on a request, first to last (``sequence`` order)."""
    return list(session.scalars(
        select(DecisionRow).where(col(DecisionRow.request_id) == request_id)
        .order_by(col(DecisionRow.sequence))))


def latest_decision(*, session: Session, request_id: str) -> DecisionRow | None:
    """The decision in force for a request: the one with the highest ``sequence``, or None."""
    return session.scalars(
        select(DecisionRow).where(col(DecisionRow.request_id) == request_id)
        .order_by(col(DecisionRow.sequence).desc()).limit(1)).first()


def status_of(*, session: Session, request_id: str) -> RequestStatus | None:
    """The request's row in the work-queue projection, or None."""
    return session.get(RequestStatus, request_id)


def audit_events_for(*, session: Session, request_id: str) -> list[AuditEvent]:
    """The audit events about a request, in chain order."""
    return list(session.scalars(
        select(AuditEvent).where(col(AuditEvent.request_id) == request_id)
        .order_by(col(AuditEvent.seq))))


def derived_state(*, session: Session, request_id: str) -> RequestState | None:
    """The request's state as the audit chain tells it: the ``state`` of its latest event with one.

    ``request_status`` must always agree with this; it can be rebuilt from it.
    """
    state: RequestState | None = None
    for event in audit_events_for(session=session, request_id=request_id):
        value = event.payload.get("state")
        if value is not None:
            state = RequestState(value)
    return state


def requests_by_pseudonym(*, session: Session,
                          pseudonym: str | Sequence[str]) -> list[RequestRow]:
    """Every request that named the subject with this pseudonym, oldest first (for inzage).

    ``pseudonym`` may also be several pseudonyms of one person (their BSN's and their
    onderwijsnummer's): every request that named any of them, each once. The raw body (a bulk
    request's names every subject, megabytes of them) is loaded only when read.
    """
    wanted = [pseudonym] if isinstance(pseudonym, str) else list(dict.fromkeys(pseudonym))
    if not wanted:
        return []
    named = select(_SUBJECTS.c.request_id).where(_SUBJECTS.c.pseudonym.in_(wanted))
    return list(session.scalars(
        select(RequestRow).where(col(RequestRow.id).in_(named))
        .options(defer(RequestRow.raw_body))  # type: ignore[arg-type]  # SQLModel types it str
        .order_by(col(RequestRow.received_at), col(RequestRow.id))))


def count_requests(*, session: Session) -> int:
    """How many submissions the ledger holds, valid or not."""
    return int(session.execute(select(func.count()).select_from(_REQUESTS)).scalar_one())
