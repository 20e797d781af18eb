"""What an event says about the row it recorded, and what the row says: both as a tuple of
values with a 16-byte fingerprint, so a verification holds one against the other without
keeping payloads or bodies."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from legal_bases.table import canonical_json, sha256
from records.ledger import body_hash
from records.reviews import (
    motivation_digest,
)
from records.vocabulary import EventKind

REVIEW_ANSWER_RECORDED = "review_answer_recorded"

#: Fields whose values a problem may show (vocabulary, categories, numbers); any other field
#: that disagrees is only named, so no reference, hash or free text ends up in a report.
_SHOWN = frozenset({
    "valid", "requester_body", "channel", "legal_basis", "purpose", "subject_count", "sequence",
    "outcome", "released", "withheld", "reasons", "review_triggers", "ground_id",
    "ground_version", "deadline", "status", "verdict", "categories", "accepted", "step",
    "refusal_code", "role", "state", "validation_errors"})


#
# For each kind of row the same tuple of values is built twice: from the row and from its event.
# The events' side keeps only a fingerprint of its tuple (with the event's seq), so a ledger of
# millions of rows is held against its events in little memory; where they differ, the event is
# read again to name the fields.

EVENT_COLUMNS = ("seq", "id", "occurred_at", "kind", "request_id", "actor", "flow_run_id",
                  "payload", "prev_hash", "hash", "key_id")

_REQUEST_FIELDS = ("valid", "partner_id", "requester_body", "channel", "reference", "legal_basis",
                   "body_hash", "correlation_id", "purpose", "reference_date", "due_date",
                   "subject_count", "validation_errors", "received_at", "sealed_body_sha256")
_DECISION_FIELDS = ("request_id", "sequence", "supersedes", "outcome", "released", "withheld",
                    "reasons", "review_triggers", "proposal", "ground_id", "ground_version",
                    "table_hash", "decided_by", "deadline", "decided_at", "flow_run_id")
_DELIVERY_FIELDS = ("request_id", "decision_id", "partner_id", "destination", "status",
                    "receipt", "delivered_at", "flow_run_id")
_ANSWER_FIELDS = ("request_id", "seq", "reviewer_id", "role", "verdict", "categories",
                  "accepted", "step", "refusal_code", "motivation", "answered_at", "flow_run_id")

_Values = tuple[Any, ...]


def body_digest(raw_body: str) -> str | None:
    """The body hash as intake took it: :func:`records.ledger.body_hash`, or the hash of the text
    for a body nested too deeply to parse (as :mod:`records.submissions` does); None if the text
    cannot be hashed at all."""
    try:
        return body_hash(raw_body)
    except RecursionError:
        return sha256(raw_body)
    except UnicodeError:
        return None


def fingerprint(values: _Values) -> bytes:
    """16 bytes that stand for a tuple of plain values (str, int, bool, None, nested tuples)."""
    return hashlib.blake2b(repr(values).encode(), digest_size=16).digest()


def payload(event: Any) -> Mapping[str, Any]:
    return event.payload if isinstance(event.payload, dict) else {}


def frozen(value: Any) -> Any:
    """JSON data as a comparable value: lists become tuples, objects their canonical JSON."""
    if isinstance(value, list):
        return tuple(frozen(v) for v in value)
    if isinstance(value, dict):
        return canonical_json(value)
    return value


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _moment(value: datetime | None) -> str | None:
    # both sides come through UTCDateTime, aware and in UTC
    return None if value is None else value.isoformat()


def _codes(items: Any) -> _Values:
    """The ``code`` of each reason or trigger as the decision row stores them."""
    if not isinstance(items, list):
        return ()
    return tuple(i.get("code") if isinstance(i, dict) else i for i in items)


def _error_summary(errors: Any) -> tuple[int, _Values]:
    if not isinstance(errors, list):
        return (0, ())
    codes = {e.get("code") for e in errors if isinstance(e, dict)}
    return (len(errors), tuple(sorted(codes, key=str)))


def request_from_event(event: Any, payload: Mapping[str, Any]) -> _Values:
    p = payload.get
    return (event.kind == EventKind.REQUEST_RECEIVED.value, p("partner_id"), p("requester_body"),
            p("channel"), p("reference"), p("legal_basis"), p("body_hash"), p("correlation_id"),
            p("purpose"), p("reference_date"), p("due_date"), p("subject_count"),
            (p("error_count", 0), frozen(p("error_codes", []))), _moment(event.occurred_at),
            p("sealed_body_sha256"))


def _request_from_row(row: Any) -> _Values:
    return (bool(row.valid), row.partner_id, row.requester_body, row.channel, row.reference,
            row.legal_basis, row.body_hash, row.correlation_id, row.purpose,
            _day(row.reference_date), _day(row.due_date), row.subject_count,
            _error_summary(row.validation_errors), _moment(row.received_at),
            # None for a request of before 0.8.0, whose event did not commit to it
            getattr(row, "sealed_body_sha256", sha256(row.raw_body)))


def decision_from_event(event: Any, payload: Mapping[str, Any]) -> _Values:
    p = payload.get
    return (event.request_id, p("sequence"), p("supersedes"), p("outcome"),
            frozen(p("released")), frozen(p("withheld")), frozen(p("reason_codes")),
            frozen(p("review_triggers")), frozen(p("proposal")), p("ground_id"),
            p("ground_version"), p("table_hash"), p("decided_by"), p("deadline"),
            _moment(event.occurred_at), event.flow_run_id)


def _decision_from_row(row: Any) -> _Values:
    return (row.request_id, row.sequence, row.supersedes, row.outcome, frozen(row.released),
            frozen(row.withheld), _codes(row.reasons), _codes(row.review_triggers),
            frozen(row.proposal), row.ground_id, row.ground_version, row.table_hash,
            row.decided_by, _day(row.deadline), _moment(row.decided_at), row.flow_run_id)


def delivery_from_event(event: Any, payload: Mapping[str, Any]) -> _Values:
    p = payload.get
    return (event.request_id, p("decision_id"), event.actor, p("destination"), p("status"),
            p("receipt_sha256"), _moment(event.occurred_at), event.flow_run_id)


def _delivery_from_row(row: Any) -> _Values:
    receipt = row.receipt.get("sha256") if isinstance(row.receipt, dict) else None
    return (row.request_id, row.decision_id, row.partner_id, row.destination, row.status,
            receipt, _moment(row.delivered_at), row.flow_run_id)


def answer_from_event(event: Any, payload: Mapping[str, Any]) -> _Values:
    p = payload.get
    return (event.request_id, p("seq"), p("reviewer_id"), p("role"), p("verdict"),
            frozen(p("categories")), p("accepted"), p("step"), p("refusal_code"),
            p("motivation_sealed_sha256", p("motivation_sha256")), _moment(event.occurred_at),
            event.flow_run_id)


def _answer_from_row(row: Any) -> _Values:
    return (row.request_id, row.seq, row.reviewer_id, row.role, row.verdict,
            frozen(row.categories), bool(row.accepted), row.step, row.refusal_code,
            getattr(row, "motivation_digest", None) or motivation_digest(row.motivation),
            _moment(row.answered_at), row.flow_run_id)


@dataclass(frozen=True, slots=True)
class RowKind:
    """A kind of row held against its event: names, fields, and both builders of its values."""

    name: str  # "decision"
    table: str  # "decisions"
    event_kind: str  # what records it, in words
    fields: tuple[str, ...]
    from_event: Callable[[Any, Mapping[str, Any]], _Values]
    from_row: Callable[[Any], _Values]


REQUEST = RowKind("request", "requests", "request_received or request_invalid",
                    _REQUEST_FIELDS, request_from_event, _request_from_row)
DECISION = RowKind("decision", "decisions", EventKind.DECISION_RECORDED.value,
                     _DECISION_FIELDS, decision_from_event, _decision_from_row)
DELIVERY = RowKind("delivery", "deliveries", EventKind.DELIVERY_RECORDED.value,
                     _DELIVERY_FIELDS, delivery_from_event, _delivery_from_row)
ANSWER = RowKind("review_answer", "review_answers", REVIEW_ANSWER_RECORDED, _ANSWER_FIELDS,
                   answer_from_event, _answer_from_row)


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def differences(names: Sequence[str], row: _Values, event: _Values) -> str:
    """The fields on which a row and its event disagree, with values where they may be shown."""
    parts = []
    for name, ours, theirs in zip(names, row, event, strict=True):
        if ours != theirs:
            parts.append(f"{name} (row {_show(ours)}, event {_show(theirs)})" if name in _SHOWN
                         else name)
    return ", ".join(parts) or "its fingerprint"
