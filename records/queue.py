"""Claims on the work queue: which worker handles which requests, so no two handle the same one.

A claim is a short lease on rows of ``request_status`` (the one mutable table): ``claimed_by``
and ``claimed_until``. A worker renews its leases while it works (:func:`renew_claims`); one that
dies stops renewing, and its requests are claimed again once the lease ran out — or at once by a
worker on the same host, which sees that the claimant's process is gone
(:func:`release_dead_workers`; a claimant names its host and process, :func:`worker_name`). The
next claimant carries on from the state the ledger recorded. On PostgreSQL claiming uses
``FOR UPDATE SKIP LOCKED``, so concurrent workers on several hosts pass each other by; on SQLite
the write transaction itself (which begins IMMEDIATE) serialises claimers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table, and_, func, or_, select, update
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
    return _claim(session, query, worker=worker, until=now + lease)


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
    return _claim(session, query, worker=worker, until=now + lease)


def _claim(session: Session, query: Select[Any], *, worker: str,
           until: datetime) -> list[str]:
    """Lease the rows ``query`` finds to ``worker`` until ``until`` (on PostgreSQL skipping rows
    another transaction is claiming at this moment)."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.execute(query).scalars())
    if claimed:
        session.execute(update(_STATUS).where(_STATUS.c.request_id.in_(claimed))
                        .values(claimed_by=worker, claimed_until=until))
    return claimed


def worker_name(role: str, run_id: str | None) -> str:
    """A claimant's name: its role and flow run, and the host and process it runs in (so a
    worker on the same host can tell that it died)."""
    return f"{role}:{run_id}@{socket.gethostname()}:{os.getpid()}"


def _process_gone(worker: str, host: str) -> bool:
    """Whether ``worker`` (a :func:`worker_name`) ran on ``host`` in a process that is gone."""
    where, at, pid = worker.rpartition("@")[2].rpartition(":")
    if not at or where != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def release_dead_workers(*, session: Session, now: datetime) -> list[str]:
    """Release the live claims of workers on this host whose process is gone (killed, crashed);
    returns their names. A worker on another host is never judged here: its lease runs out."""
    now = utc(now, name="now")
    host = socket.gethostname()
    holders = list(session.execute(
        select(_STATUS.c.claimed_by).where(_STATUS.c.claimed_until >= now)
        .group_by(_STATUS.c.claimed_by)).scalars())
    dead = [w for w in holders if w and _process_gone(w, host)]
    if dead:
        session.execute(update(_STATUS).where(_STATUS.c.claimed_by.in_(dead))
                        .values(claimed_by=None, claimed_until=None))
    return dead


def renew_claims(*, session: Session, worker: str, lease: timedelta, now: datetime) -> int:
    """Extend every claim ``worker`` holds to ``now + lease``; returns how many it holds."""
    now = utc(now, name="now")
    result = session.execute(update(_STATUS).where(_STATUS.c.claimed_by == worker)
                             .values(claimed_until=now + lease))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release_claims_of(*, session: Session, run_id: str) -> int:
    """Release every claim held for flow run ``run_id`` (in whatever process it ran): what a
    crashed or cancelled run's hook does. Returns how many were released."""
    result = session.execute(update(_STATUS)
                             .where(_STATUS.c.claimed_by.like(f"%:{run_id}@%"))
                             .values(claimed_by=None, claimed_until=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


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
