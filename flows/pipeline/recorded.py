"""What the pipeline reads back from the ledger: recorded submissions, as at intake, in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from legal_bases import limits
from legal_bases.request import DisclosureRequest, InvalidRequest
from records import data_keys
from records.db import read_only
from records.models import RequestRow, RequestStatus
from records.replay import parse_recorded


def chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def parse_submission(row: RequestRow,
                     ledger: Session | Engine) -> DisclosureRequest | InvalidRequest:
    """A recorded submission read again exactly as at intake (see ``records.replay``), its raw
    body opened with the data key ``ledger`` (a session, or the engine) holds for it.

    A bulk request's body (up to 100,000 subjects) takes a second to read, and a review run
    reads it several times (the form, the answer, the delivery): the last few are kept in
    this process, keyed by the row's id, its validity, its time of receipt and the sha256 of
    the body itself — a row edited in the database is read afresh.
    """
    if (row.subject_count or 0) <= limits.BULK_PART_SUBJECTS:
        return parse_recorded(row, _key(row, ledger))
    cached = (row.id, row.valid, row.received_at.isoformat(),
              hashlib.sha256(row.raw_body.encode("utf-8")).hexdigest())
    found = _LARGE_READ.get(cached)
    if found is None:
        found = parse_recorded(row, _key(row, ledger))
        _LARGE_READ[cached] = found
        while len(_LARGE_READ) > LARGE_READS_KEPT:
            _LARGE_READ.pop(next(iter(_LARGE_READ)))
    return found


def _key(row: RequestRow, ledger: Session | Engine) -> data_keys.DataKey | None:
    """The data key of a row (None for a clear row of before 0.8.0, or an invalid one, whose
    body is not read)."""
    if not row.valid or not data_keys.is_sealed(row.raw_body):
        return None
    if isinstance(ledger, Engine):
        with Session(read_only(ledger)) as session:
            return data_keys.key_for(session, row.id)
    return data_keys.key_for(ledger, row.id)


#: How many bulk requests' readings a process keeps (each some tens of MB).
LARGE_READS_KEPT = 2
_LARGE_READ: dict[tuple[str, bool, str, str], DisclosureRequest | InvalidRequest] = {}


def requests_in(session: Session, ids: Sequence[str]) -> list[tuple[RequestRow, str]]:
    found: list[tuple[RequestRow, str]] = []
    for chunk in chunks(ids, 500):
        found += [(row, state) for row, state in session.execute(
            select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .where(col(RequestRow.id).in_(chunk))).all()]
    return found
