"""What the pipeline reads back from the ledger: recorded submissions, as at intake, in chunks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlmodel import Session, col

from legal_bases.request import DisclosureRequest, InvalidRequest
from records.models import RequestRow, RequestStatus
from records.replay import parse_recorded


def chunks(values: Sequence[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def parse_submission(row: RequestRow) -> DisclosureRequest | InvalidRequest:
    """A recorded submission read again exactly as at intake (see ``records.replay``)."""
    return parse_recorded(row)


def requests_in(session: Session, ids: Sequence[str]) -> list[tuple[RequestRow, str]]:
    found: list[tuple[RequestRow, str]] = []
    for chunk in chunks(ids, 500):
        found += [(row, state) for row, state in session.execute(
            select(RequestRow, RequestStatus.state)  # type: ignore[call-overload]
            .join(RequestStatus, col(RequestStatus.request_id) == col(RequestRow.id))
            .where(col(RequestRow.id).in_(chunk))).all()]
    return found
