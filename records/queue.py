"""Claims on the work queue: which worker handles which requests, so no two handle the same one.

A claim is a lease on rows of ``request_status`` (the one mutable table): ``claimed_by`` and
``claimed_until``. A worker that dies simply lets its lease run out; the next sweep claims the
request again and carries on from the state the ledger recorded. On PostgreSQL claiming uses
``FOR UPDATE SKIP LOCKED``, so concurrent workers on several hosts pass each other by; on SQLite
the write transaction itself (which begins IMMEDIATE) serialises claimers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.orm import Session

from records.models import RequestStatus
from records.timestamps import utc
from records.vocabulary import RequestState

_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]

#: States in which a request waits for the dispatcher: to be decided (received, invalid —
#: an invalid submission still gets its recorded rejection) or to be delivered (decided).
WAITING = (RequestState.RECEIVED, RequestState.INVALID, RequestState.DECIDED)


def claim_requests(*, session: Session, worker: str, limit: int, lease: timedelta,
                   now: datetime, states: Sequence[RequestState] = WAITING) -> list[str]:
    """Claim up to ``limit`` requests waiting in ``states`` that hold no live lease; oldest first.

    The claim is part of the caller's transaction: it holds once the caller commits.
    """
    now = utc(now, name="now")
    query = (select(_STATUS.c.request_id)
             .where(and_(_STATUS.c.state.in_([s.value for s in states]),
                         or_(_STATUS.c.claimed_until.is_(None), _STATUS.c.claimed_until < now)))
             .order_by(_STATUS.c.updated_at, _STATUS.c.request_id)
             .limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.execute(query).scalars())
    if claimed:
        session.execute(update(_STATUS).where(_STATUS.c.request_id.in_(claimed))
                        .values(claimed_by=worker, claimed_until=now + lease))
    return claimed


def claim_these(*, session: Session, worker: str, request_ids: Sequence[str],
                lease: timedelta, now: datetime,
                states: Sequence[RequestState] = WAITING) -> list[str]:
    """Claim those of ``request_ids`` that wait in ``states`` and hold no live lease of another
    worker (a review run taking over its own request from the dispatcher, say)."""
    now = utc(now, name="now")
    query = (select(_STATUS.c.request_id)
             .where(and_(_STATUS.c.request_id.in_(list(request_ids)),
                         _STATUS.c.state.in_([s.value for s in states]),
                         or_(_STATUS.c.claimed_until.is_(None), _STATUS.c.claimed_until < now,
                             _STATUS.c.claimed_by == worker))))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.execute(query).scalars())
    if claimed:
        session.execute(update(_STATUS).where(_STATUS.c.request_id.in_(claimed))
                        .values(claimed_by=worker, claimed_until=now + lease))
    return claimed


def release_claims(*, session: Session, worker: str, request_ids: Sequence[str]) -> None:
    """Give up ``worker``'s claims on ``request_ids`` (claims of other workers stay)."""
    for start in range(0, len(request_ids), 500):
        chunk = list(request_ids[start:start + 500])
        session.execute(update(_STATUS)
                        .where(and_(_STATUS.c.request_id.in_(chunk),
                                    _STATUS.c.claimed_by == worker))
                        .values(claimed_by=None, claimed_until=None))


def waiting_counts(*, session: Session) -> dict[str, int]:
    """How many requests are in each state (for status screens and the sweeper's log line)."""
    rows = session.execute(select(_STATUS.c.state, func.count()).group_by(_STATUS.c.state))
    return {row[0]: row[1] for row in rows}
