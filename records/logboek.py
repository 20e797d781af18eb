"""The ledger's disclosures as Logboek Dataverwerkingen records (legal-reference.md 4.1).

The standard followed is Logius' *Logboek dataverwerkingen* 1.0.0 (versie ter vaststelling,
11 February 2026), section 3.2.2 "Interface" and 3.3.1 "Gedrag van Applicatie"; the fields and
values it defines are vendored in ``connectors/schemas/logboek-dataverwerkingen-1.0.0.yaml``
with their source, and ``tests/test_logboek_standard.py`` holds every exported line to them.

A disclosure is a recorded delivery: data left DUO. :func:`logboek_records` yields, for every
delivery whose ``delivered_at`` falls on a day from ``start`` through ``end`` (calendar days in
the Netherlands, like the day of receipt), ordered by ``delivered_at`` and delivery id:

* one subject-less line for the disclosure itself (the parent span), then
* one line per data subject of the request, in the request's order, each a child span of it
  (the standard: one line per data subject; several subjects are child spans of one action).

Identifiers are derived, never drawn, so the same ledger exports the same bytes:

* ``trace_id`` (16 bytes, 32 lowercase hex): one per request — the caller's W3C trace id when
  the request's ``correlation_id`` holds one (a bare trace id, as the intake API records it, or a
  whole ``traceparent``), so DUO's lines join the requester's trace; else sha256 of the request
  id;
* ``span_id`` (8 bytes, 16 hex): sha256 of the delivery id (parent) or of the delivery id and
  the subject's position (child).

``start_time``/``end_time`` run from the decision that was delivered to the delivery, in ms
since the epoch. ``status`` is ``Ok`` (the standard's optional explicit success: a recorded
delivery succeeded; its enumeration is ``Unset``, ``Ok``, ``Error``). ``attributes`` hold the
``dpl.core`` fields — the ground's processing activity (:mod:`legal_bases.accountability`),
the subject's ledger pseudonym (HMAC, never the number; once the request is shredded under its
retention term the line stays, with ``nl.duo.data_subject_removed`` instead) and its type —
and, outside the
standard's ``dpl`` namespace (which only the standard and its adopted extensions may extend),
under DUO's own reverse-domain prefix ``nl.duo.`` (OpenTelemetry's rule for an organisation's
attributes) only ids that lead DUO to its own record (request, decision, delivery, ground
version) and the confidentiality: ``Vertrouwelijk`` with the restriction's citation where UAVG
art. 41 keeps the disclosure from the data subject (values as in VNG Verwerkingenlogging), else
``Normaal``. No content and no categories. ``dpl.core.foreign_operation.processor`` is not
written: the ledger keeps the caller's trace id, but neither its span id nor a URL of the
requester's application.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from legal_bases.accountability import Accountability
from legal_bases.citation import Citation
from legal_bases.limits import (
    AUDIT_IN_CHUNK,
    LDV_SPAN_ID_BYTES,
    LDV_TRACE_ID_BYTES,
    LOGBOEK_FETCH_ROWS,
)
from legal_bases.table import GroundTable
from legal_bases.vocabulary import SubjectIdType
from records import chain
from records.decisions import in_chunks
from records.ledger import local_days
from records.models import DecisionRow, DeliveryRow, RequestRow, RequestSubject
from records.retention import SUBJECT_TYPE_LETTERS
from records.vocabulary import EventKind

_DELIVERIES: Table = DeliveryRow.__table__  # type: ignore[attr-defined]
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TRACE_HEX = 2 * LDV_TRACE_ID_BYTES
_SPAN_HEX = 2 * LDV_SPAN_ID_BYTES
_BARE_TRACE_ID = re.compile(rf"^[0-9a-f]{{{_TRACE_HEX}}}$")
_TRACEPARENT = re.compile(rf"^([0-9a-f]{{2}})-([0-9a-f]{{{_TRACE_HEX}}})-([0-9a-f]{{{_SPAN_HEX}}})"
                          r"-([0-9a-f]{2})(-.*)?$")
#: ``dpl.core.data_subject_id_type`` per identifier kind of the ledger.
SUBJECT_ID_TYPES = {SubjectIdType.BSN.value: "BSN",
                    SubjectIdType.ONDERWIJSNUMMER.value: "onderwijsnummer"}
CONFIDENTIAL = "Vertrouwelijk"
NORMAL = "Normaal"
#: The standard's ``status`` values this export writes: a recorded delivery succeeded.
STATUS_OK = "Ok"
STATUS_UNSET = "Unset"
#: DUO's own attributes: OpenTelemetry's reverse-domain prefix for an organisation (duo.nl), not
#: the standard's ``dpl`` namespace.
DUO_PREFIX = "nl.duo."
#: ``resource.attributes`` of every line: which application wrote it (OpenTelemetry names).
SERVICE_NAME = "duo-disclosure-engine"
_PACKAGE = "disclosure-engine"


def service_resource() -> dict[str, str]:
    """The application that made the records: its name and installed version."""
    try:
        version = metadata.version(_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"service.name": SERVICE_NAME, "service.version": version}


def trace_id_for(request_id: str, correlation_id: str | None) -> str:
    """The request's trace id: the caller's W3C trace id if it sent one, else derived."""
    if correlation_id:
        if _BARE_TRACE_ID.match(correlation_id) and correlation_id != "0" * _TRACE_HEX:
            return correlation_id
        match = _TRACEPARENT.match(correlation_id)
        if match is not None:
            version, trace_id, parent, _flags, rest = match.groups()
            if (version != "ff" and not (version == "00" and rest)
                    and trace_id != "0" * _TRACE_HEX and parent != "0" * _SPAN_HEX):
                return trace_id
    return _derived(f"ldv-trace:{request_id}", _TRACE_HEX)


def span_id_for(delivery_id: str, position: int | None = None) -> str:
    """The span of a delivery (``position`` None) or of one subject of it."""
    key = f"ldv-span:{delivery_id}" if position is None else f"ldv-span:{delivery_id}:{position}"
    return _derived(key, _SPAN_HEX)


def _derived(key: str, digits: int) -> str:
    value = hashlib.sha256(key.encode()).hexdigest()[:digits]
    # W3C Trace Context forbids an all-zero id; the odds are 2**-64 at most, the fix is cheap.
    return value if value.strip("0") else _derived(key + "'", digits)


def _ms(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(milliseconds=1)


def logboek_records(*, session: Session, start: date, end: date, table: GroundTable,
                    accountability: Accountability,
                    resource: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Yield the Logboek records of the deliveries made from ``start`` through ``end``.

    ``table`` (the grounds in force now) and ``accountability`` decide the processing activity
    and the confidentiality; ``resource`` becomes ``resource.attributes`` (service name and
    version: :func:`service_resource`). Every ground delivered under in the period must have an
    accountability entry: checked before the first record, so an export never stops half-way
    for it. Streams: the deliveries come from the ledger :data:`LOGBOEK_FETCH_ROWS` at a time.
    """
    lo, hi = local_days(start, end)
    in_period = (_DELIVERIES.c.delivered_at >= lo) & (_DELIVERIES.c.delivered_at < hi)
    accountability.check_covers(table)
    grounds = session.execute(
        select(_DECISIONS.c.ground_id).distinct()
        .select_from(_DELIVERIES.join(_DECISIONS, _DECISIONS.c.id == _DELIVERIES.c.decision_id))
        .where(in_period)).scalars().all()
    for ground_id in grounds:
        if ground_id is not None:
            accountability.of(ground_id)
    rows = session.execute(
        select(_DELIVERIES.c.id, _DELIVERIES.c.request_id, _DELIVERIES.c.decision_id,
               _DELIVERIES.c.delivered_at, _DELIVERIES.c.status, _REQUESTS.c.correlation_id,
               _REQUESTS.c.requester_body, _REQUESTS.c.legal_basis, _DECISIONS.c.decided_at,
               _DECISIONS.c.ground_id, _DECISIONS.c.ground_version)
        .select_from(_DELIVERIES
                     .join(_REQUESTS, _REQUESTS.c.id == _DELIVERIES.c.request_id)
                     .join(_DECISIONS, _DECISIONS.c.id == _DELIVERIES.c.decision_id))
        .where(in_period)
        .order_by(_DELIVERIES.c.delivered_at, _DELIVERIES.c.id)
        .execution_options(yield_per=LOGBOEK_FETCH_ROWS))
    lines = _Lines(table, accountability, {"attributes": dict(sorted(resource.items()))})
    for partition in rows.partitions():
        subjects = _subjects(session, list(dict.fromkeys(r.request_id for r in partition)))
        for row in partition:
            yield from lines.of(row, subjects.get(row.request_id, ()))


def _subjects(session: Session,
              request_ids: Sequence[str]) -> dict[str, list[tuple[int, str, str | None]]]:
    """Each request's subjects: position, id type and pseudonym. Once a request is shredded its
    pseudonyms are gone; its lines stay, without the subject's id, from the kinds of number its
    sealed ``request_shredded`` event lists."""
    found: dict[str, list[tuple[int, str, str | None]]] = {}
    for chunk in in_chunks(request_ids, AUDIT_IN_CHUNK):
        for row in session.execute(
                select(_SUBJECTS.c.request_id, _SUBJECTS.c.position, _SUBJECTS.c.id_type,
                       _SUBJECTS.c.pseudonym)
                .where(_SUBJECTS.c.request_id.in_(chunk))
                .order_by(_SUBJECTS.c.request_id, _SUBJECTS.c.position)):
            found.setdefault(row.request_id, []).append((row.position, row.id_type,
                                                         row.pseudonym))
        missing = [r for r in chunk if r not in found]
        if missing:
            for event in chain.sealed_events(session=session, kind=EventKind.REQUEST_SHREDDED.value,
                                             request_ids=missing):
                kinds = str(event.payload.get("subject_types") or "")
                found[event.request_id] = [(position, _KIND_OF.get(letter, letter), None)
                                           for position, letter in enumerate(kinds)]
    return found


#: The kinds of number a shredded request's event lists, one letter each (the other way round).
_KIND_OF = {letter: kind for kind, letter in SUBJECT_TYPE_LETTERS.items()}


class _Lines:
    """Builds the lines of one delivery; remembers each ground's and body's classification."""

    def __init__(self, table: GroundTable, accountability: Accountability,
                 resource: dict[str, Any]) -> None:
        self._table, self._accountability, self._resource = table, accountability, resource
        self._restrictions: dict[tuple[str | None, str], Citation | None] = {}

    def _restriction(self, ground_id: str | None, body: str) -> Citation | None:
        key = (ground_id, body)
        if key not in self._restrictions:
            self._restrictions[key] = self._accountability.restriction_for(
                ground_id=ground_id, body=body, table=self._table)
        return self._restrictions[key]

    def of(self, row: Any,
           subjects: Sequence[tuple[int, str, str | None]]) -> Iterator[dict[str, Any]]:
        ground_id = row.ground_id or row.legal_basis
        restriction = self._restriction(row.legal_basis, row.requester_body)
        ids: dict[str, Any] = {
            "dpl.core.processing_activity_id":
                self._accountability.of(ground_id).processing_activity_id,
            f"{DUO_PREFIX}request_id": row.request_id,
            f"{DUO_PREFIX}decision_id": row.decision_id,
            f"{DUO_PREFIX}delivery_id": row.id,
            f"{DUO_PREFIX}ground_version": row.ground_version,
            f"{DUO_PREFIX}confidentiality": CONFIDENTIAL if restriction else NORMAL,
        }
        if restriction is not None:
            ids[f"{DUO_PREFIX}restriction"] = restriction.short
        parent = span_id_for(row.id)
        common = {
            "trace_id": trace_id_for(row.request_id, row.correlation_id),
            "start_time": _ms(row.decided_at),
            "end_time": _ms(row.delivered_at),
            "status": STATUS_OK if row.status == "delivered" else STATUS_UNSET,
            "resource": self._resource,
        }
        yield {**common, "span_id": parent,
               "name": f"disclosure under {ground_id} to {row.requester_body}",
               "attributes": ids}
        for position, id_type, pseudonym in subjects:
            subject: dict[str, Any] = (
                {"dpl.core.data_subject_id": pseudonym} if pseudonym is not None
                else {f"{DUO_PREFIX}data_subject_removed": "retention"})
            yield {**common, "span_id": span_id_for(row.id, position), "parent_span_id": parent,
                   "name": f"disclosure of one data subject's data under {ground_id}",
                   "attributes": {**ids, **subject, "dpl.core.data_subject_id_type":
                                  SUBJECT_ID_TYPES.get(id_type, id_type)}}
