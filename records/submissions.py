"""Record a batch of submissions in one transaction with one chain append.

:func:`record_submissions` writes exactly the rows and audit events that
:func:`records.ledger.record_submission` writes for each submission, in order, with its rules:
a valid request repeating an accepted one of the same partner and reference returns that one
(nothing written); with a different body it is a conflict, recorded as an invalid submission
(``reference_conflict``) as the drop-off does; invalid submissions never conflict. The intake
API's group commit (``connectors/group_commit.py``) records through it, and so does anything
else that records many submissions at once.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, insert, select, text, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from legal_bases.errors import FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.table import canonical_json
from legal_bases.vocabulary import Body
from records import chain, data_keys
from records.api_keys import revoked_among
from records.chain import NewEvent
from records.ledger import request_values, submission_event
from records.models import (
    RequestRow,
    RequestStatus,
    RequestSubject,
)
from records.pseudonym import Pseudonymizer
from records.timestamps import utc
from records.vocabulary import Channel, RequestState

_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
#: How often a batch is tried again when a concurrent writer (another API process, the
#: drop-off) accepted one of its references between our look-up and our insert (PostgreSQL).
_RACE_RETRIES = 3
#: ``Submission.data`` of a body that is not JSON (or was not parsed by the caller).
NOT_PARSED: Any = object()
_UNSET = NOT_PARSED


class Recording(StrEnum):
    """What became of a submission."""

    ACCEPTED = "accepted"  # a new valid request, state received
    REPEAT = "repeat"  # the same partner, reference and body as an accepted request: that one
    INVALID = "invalid"  # recorded as received-and-rejected
    CONFLICT = "conflict"  # the reference of an accepted request with another body; recorded
    # as an invalid submission
    REFUSED = "refused"  # its API key was revoked before it could be recorded: nothing written


@dataclass(frozen=True, slots=True)
class Submission:
    """One submission to record, as the boundary read it.

    ``data`` is the parsed JSON of ``raw_body`` where the caller parsed it already (it is then
    not parsed again); leave it unset for a body that is not JSON.
    """

    partner_id: str
    requester_body: Body
    raw_body: str
    parsed: DisclosureRequest | InvalidRequest
    received_at: datetime
    correlation_id: str | None = None
    channel: Channel = Channel.API
    data: Any = _UNSET
    #: The API key it came with, if its revocation is to be checked in the recording
    #: transaction: a submission whose key is revoked by then is not recorded (``REFUSED``).
    key_id: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """The row that answers a submission: the new one, or for a repeat the accepted one.

    For a conflict, ``request_id`` is the invalid submission just recorded and
    ``existing_request_id`` the accepted request whose reference it reused.
    """

    recording: Recording
    request_id: str  # "" when refused
    state: RequestState | None  # None for a repeat: the accepted request may have moved on
    received_at: datetime | None
    reference: str | None
    existing_request_id: str | None = None

    @property
    def written(self) -> bool:
        return self.recording not in (Recording.REPEAT, Recording.REFUSED)


# -- one batch ------------------------------------------------------------------------------------

def record_submissions(*, session: Session, submissions: Sequence[Submission],
                       pseudonymizer: Pseudonymizer) -> list[Recorded]:
    """Record ``submissions`` in order in the caller's transaction, with one chain append.

    All or nothing (a SAVEPOINT); nothing is committed here.
    """
    for attempt in range(_RACE_RETRIES + 1):
        try:
            with session.begin_nested():
                return _record(session, submissions, pseudonymizer)
        except IntegrityError:
            # PostgreSQL: another transaction accepted one of these references after our look-up
            # and committed while we waited on the unique index. Look again: it is visible now.
            if attempt == _RACE_RETRIES:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _basis(submission: Submission) -> tuple[Any, str]:
    """The submission's JSON data (None if it is not JSON) and the text its body hash is over:
    its canonical JSON, or the text itself."""
    data = submission.data
    if data is _UNSET:
        try:
            data = _loads(submission.raw_body)
        except RecursionError:
            data = _UNSET
    if data is _UNSET:
        return None, submission.raw_body
    return data, canonical_json(data)


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # as records.ledger reads it: the text is hashed
        return _UNSET


def _accepted(session: Session, submissions: Sequence[Submission],
              ) -> dict[tuple[str, str], tuple[str, str]]:
    """(partner, reference) -> (request id, body hash) of the accepted requests these repeat."""
    wanted = {(s.partner_id, s.parsed.reference) for s in submissions
              if isinstance(s.parsed, DisclosureRequest)}
    if not wanted:
        return {}
    found: dict[tuple[str, str], tuple[str, str]] = {}
    if session.get_bind().dialect.name == "postgresql":
        # The pairs themselves, each an equality on the whole partial unique index: with
        # partner IN (..) AND reference IN (..) the planner, on statistics a burst of inserts has
        # made stale, probes the index on the partner alone and filters every request of those
        # partners (milliseconds per batch, growing with the ledger).
        pairs = sorted(wanted)
        for start in range(0, len(pairs), 500):
            rows = session.execute(
                select(_REQUESTS.c.id, _REQUESTS.c.partner_id, _REQUESTS.c.reference,
                       _REQUESTS.c.body_hash)
                .where(tuple_(_REQUESTS.c.partner_id, _REQUESTS.c.reference)
                       .in_(pairs[start:start + 500]),
                       text("requests.valid")))
            for row in rows:
                found[(row.partner_id, row.reference)] = (row.id, row.body_hash)
        return found
    partners = sorted({p for p, _ in wanted})
    references = sorted({r for _, r in wanted})
    for start in range(0, len(references), 500):
        # "valid" bare, as the partial unique index says it, so SQLite uses that index
        rows = session.execute(
            select(_REQUESTS.c.id, _REQUESTS.c.partner_id, _REQUESTS.c.reference,
                   _REQUESTS.c.body_hash)
            .where(_REQUESTS.c.partner_id.in_(partners),
                   _REQUESTS.c.reference.in_(references[start:start + 500]),
                   text("requests.valid")))
        for row in rows:
            if (row.partner_id, row.reference) in wanted:
                found[(row.partner_id, row.reference)] = (row.id, row.body_hash)
    return found


def _conflict(parsed: DisclosureRequest, existing_id: str) -> InvalidRequest:
    return InvalidRequest((FieldError("reference", "reference_conflict",
                                      f"already used by request {existing_id} with another "
                                      "body"),), parsed.legal_basis)


def _record(session: Session, submissions: Sequence[Submission],
            pseudonymizer: Pseudonymizer) -> list[Recorded]:
    revoked = revoked_among(session=session,
                            key_ids=[s.key_id for s in submissions if s.key_id is not None])
    accepted = _accepted(session, submissions)
    # the data keys of the accepted requests these may repeat: their body hashes are keyed
    known = data_keys.keys_for(session, [request_id for request_id, _ in accepted.values()])
    vault = data_keys.vault_of(session)
    keys: list[dict[str, Any]] = []
    results: list[Recorded] = []
    rows: list[dict[str, Any]] = []
    subjects: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    events: list[NewEvent] = []
    for item in submissions:
        if item.key_id is not None and item.key_id in revoked:
            results.append(Recorded(Recording.REFUSED, "", None, None, None))
            continue
        data, basis = _basis(item)
        parsed = item.parsed
        recording, existing_id = Recording.INVALID, None
        if isinstance(parsed, DisclosureRequest):
            seen = accepted.get((item.partner_id, parsed.reference))
            if seen is not None and data_keys.same_body(known.get(seen[0]), seen[1], basis):
                results.append(Recorded(Recording.REPEAT, seen[0], None, None,
                                        parsed.reference))
                continue
            if seen is not None:
                recording, existing_id = Recording.CONFLICT, seen[0]
                parsed = _conflict(parsed, seen[0])
            else:
                recording = Recording.ACCEPTED
        request_id = str(uuid.uuid4())
        key, key_row = vault.new_key(request_id)
        digest = data_keys.body_digest(key, basis)
        values = request_values(
            partner_id=item.partner_id, body=item.requester_body, channel=item.channel,
            raw_body=item.raw_body, data=data, digest=digest, parsed=parsed,
            received_at=utc(item.received_at, name="received_at"),
            correlation_id=item.correlation_id, key=key, request_id=request_id)
        request = parsed if isinstance(parsed, DisclosureRequest) else None
        state = RequestState.RECEIVED if request is not None else RequestState.INVALID
        pseudonyms: list[str] = []
        if request is not None:
            accepted[(item.partner_id, request.reference)] = (request_id, digest)
            known[request_id] = key
            pseudonyms = [pseudonymizer.of(s) for s in request.subjects]
            subjects.extend({"request_id": request_id, "position": position,
                             "id_type": subject.id_type.value, "pseudonym": pseudonym}
                            for position, (subject, pseudonym)
                            in enumerate(zip(request.subjects, pseudonyms, strict=True)))
        keys.append(key_row)
        rows.append(values)
        statuses.append({"request_id": request_id, "state": state.value,
                         "updated_at": values["received_at"]})
        # the ledger's own event builder reads attributes only: a plain namespace will do
        row = cast(RequestRow, types.SimpleNamespace(**values))
        events.append(submission_event(row, request, parsed, state, pseudonyms, key=key))
        results.append(Recorded(recording, request_id, state, values["received_at"],
                                values["reference"], existing_id))
    if rows:
        _insert(session, rows, keys=keys, subjects=subjects, statuses=statuses)
        chain.append_event_rows(session=session, events=events)
    return results


def _insert(session: Session, rows: list[dict[str, Any]], *, keys: list[dict[str, Any]],
            subjects: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> None:
    """Insert a batch's rows, table by table (one statement each, subjects in chunks)."""
    session.execute(insert(_REQUESTS), rows)
    session.execute(insert(data_keys.DATA_KEYS), keys)
    for start in range(0, len(subjects), 5000):
        session.execute(insert(_SUBJECTS), subjects[start:start + 5000])
    session.execute(insert(_STATUS), statuses)
