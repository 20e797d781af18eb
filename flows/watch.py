"""The watch: start the sweepers when there is work, and only then.

An idle engine creates no flow runs. Every WATCH_SECONDS the watch looks — one indexed query on
the ledger's work queue, one on the waiting reviews, a listing of the drop folders, and no call
to Prefect — and starts

* ``process-requests`` when a request waits for the dispatcher and no live claim holds it:
  received (or recorded invalid) and not decided yet, decided and not delivered (a delivery that
  failed and is to be tried again), or claimed by a worker whose lease ran out; or when a review
  waits past the start of its deadline day unmarked (the dispatcher marks it ``overdue`` that
  day and escalates it the day after, and republishes the review queue);
* ``collect-dropoffs`` when a drop folder holds a file ready to be taken in.

It starts a run only when none of that sweeper is already on its way (due, pending or running:
the intake API's nudge, a drop-off run that will nudge the dispatcher, the crash automation's
run), and once for the same work: if the very same work is still there afterwards (a
destination that is down, a file that cannot be filed away), it starts another after
WATCH_RETRY_SECONDS, then after twice as long each time, up to the sweeper's schedule interval.
Runs go through :mod:`flows.starts`; the run's idempotency key starts with ``watch-``.

It runs as a thread of ``disclosure serve`` (:mod:`flows.deployments`) and on its own as
``disclosure watch``, for the host of the intake API in a scaled-out installation. The
schedules stay, slow, as a safety net for when no watch runs.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, and_, exists, func, or_, select
from sqlmodel import Session, col

from connectors.dropoff import SUFFIXES
from flows import starts
from flows.logs import get_logger
from flows.pipeline.deadlines import today
from flows.runtime import open_ledger
from legal_bases import limits
from records.db import read_only
from records.models import AuditEvent, DecisionRow, RequestStatus
from records.queue import WAITING
from records.settings import Settings, load_settings
from records.vocabulary import RequestState

_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
#: A review waiting for a person: its deadline is watched.
_REVIEWING = (RequestState.AWAITING_REVIEW.value, RequestState.ESCALATED.value)
#: The audit events that mark a waiting review at and past its deadline (flows.pipeline.deadlines).
_OVERDUE, _ESCALATED = "review_overdue", "review_escalated"

#: Which runs take which work: a drop-off run nudges the dispatcher when it took files in.
TAKEN_BY = {starts.DISPATCHER: (starts.DISPATCHER, starts.DROPOFF),
            starts.DROPOFF: (starts.DROPOFF,)}
#: The longest a piece of work that stays waits for the next start: the sweeper's interval.
LONGEST_WAIT = {starts.DISPATCHER: limits.DISPATCH_SWEEP_SECONDS,
                starts.DROPOFF: limits.DROPOFF_SWEEP_SECONDS}


# -- what there is to do ---------------------------------------------------------------------------

def queue_work(session: Session, now: datetime) -> tuple[int, Any, Any]:
    """The requests waiting for the dispatcher that no live claim holds: how many, the latest
    state change among them and the latest lease that ran out among them (None if none did).
    Both change when other requests come to wait, so together they say *which* work it is."""
    return tuple(session.execute(
        select(func.count(), func.max(_STATUS.c.updated_at), func.max(_STATUS.c.claimed_until))
        .where(_STATUS.c.state.in_([s.value for s in WAITING]),
               or_(_STATUS.c.claimed_until.is_(None), _STATUS.c.claimed_until < now))).one())


def deadline_work(session: Session, on: date) -> tuple[str, ...]:
    """The waiting reviews the dispatcher's sweep would mark on day ``on``: at or past their
    deadline and not marked overdue, or past it and not escalated (request ids, sorted)."""
    def marked(kind: str) -> Any:
        return exists().where(col(AuditEvent.request_id) == _STATUS.c.request_id,
                              col(AuditEvent.kind) == kind)

    deadline = col(DecisionRow.deadline)
    return tuple(session.execute(
        select(_STATUS.c.request_id)
        .join(DecisionRow, and_(col(DecisionRow.request_id) == _STATUS.c.request_id,
                                col(DecisionRow.sequence) == 1))
        .where(_STATUS.c.state.in_(_REVIEWING), deadline <= on,
               or_(~marked(_OVERDUE), and_(deadline < on, ~marked(_ESCALATED))))
        .order_by(_STATUS.c.request_id)).scalars())


def drop_files(root: Path) -> tuple[tuple[str, str, int, int, int], ...]:
    """The files ready in the drop folders, as :meth:`connectors.dropoff.DropBox.waiting` finds
    them but without reading them: (partner, name, size, mtime in ns, inode) each, sorted. A
    folder that cannot be read is skipped, as there."""
    found: list[tuple[str, str, int, int, int]] = []
    try:
        folders = list(os.scandir(root))
    except OSError:
        return ()
    for folder in folders:
        try:
            if not folder.is_dir():
                continue
            with os.scandir(folder.path) as entries:
                for entry in entries:
                    name = entry.name
                    if (entry.is_file() and name.endswith(SUFFIXES) and not name.startswith(".")
                            and not name.endswith((".tmp", ".part"))):
                        stat = entry.stat()
                        found.append((folder.name, name, stat.st_size, stat.st_mtime_ns,
                                      stat.st_ino))
        except OSError:
            continue
    return tuple(sorted(found))


@dataclass(frozen=True)
class Work:
    """Work for one sweeper: counts for the log line, and a fingerprint that changes whenever
    the work does (another request, another lease run out, another file)."""

    fingerprint: str
    counts: dict[str, int] = field(default_factory=dict)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def look(ledger: Engine, drop_root: Path, *, now: datetime | None = None,
         on: date | None = None) -> dict[str, Work | None]:
    """What each sweeper has to do now (None: nothing)."""
    now = now or datetime.now(UTC)
    on = on or today()
    with Session(read_only(ledger)) as session:
        waiting, latest, lease = queue_work(session, now)
        reviews = deadline_work(session, on)
    files = drop_files(drop_root)
    queue = (Work(_fingerprint(waiting, str(latest), str(lease), reviews, on),
                  {"waiting": waiting, "deadlines": len(reviews)})
             if waiting or reviews else None)
    drops = Work(_fingerprint(files), {"files": len(files)}) if files else None
    return {starts.DROPOFF: drops, starts.DISPATCHER: queue}


# -- when to start a run ---------------------------------------------------------------------------

@dataclass
class Pace:
    """When the watch may start a sweeper for its work: at once for work it has not started a
    run for, else once the last start's wait is over (WATCH_RETRY_SECONDS, doubling each time
    up to ``longest``), and WATCH_ERROR_RETRY_SECONDS after a start that failed."""

    longest: float
    fingerprint: str | None = None
    attempts: int = 0
    next_at: float = 0.0

    def due(self, work: Work, now: float) -> bool:
        return work.fingerprint != self.fingerprint or now >= self.next_at

    def started(self, work: Work, now: float) -> None:
        self.attempts = self.attempts + 1 if work.fingerprint == self.fingerprint else 1
        self.fingerprint = work.fingerprint
        wait = limits.WATCH_RETRY_SECONDS * 2 ** min(self.attempts - 1, 16)
        self.next_at = now + min(wait, self.longest)

    def failed(self, work: Work, now: float) -> None:
        if work.fingerprint != self.fingerprint:
            self.fingerprint, self.attempts = work.fingerprint, 0
        self.next_at = now + limits.WATCH_ERROR_RETRY_SECONDS


def _start(deployment: str, key: str) -> str | None:
    nudge = starts.nudge_dropoffs if deployment == starts.DROPOFF else starts.nudge_dispatcher
    return nudge(key=key)


def _under_way(deployments: tuple[str, ...]) -> bool:
    return starts.run_under_way(*deployments)


class Watch:
    """The watch over one ledger and one drop-off root; :meth:`tick` looks once, :meth:`run`
    looks every WATCH_SECONDS until stopped. ``start``, ``under_way`` and ``clock`` are
    Prefect's and the monotonic clock unless a test gives its own."""

    def __init__(self, ledger: Engine, drop_root: Path, *,
                 start: Callable[[str, str], str | None] = _start,
                 under_way: Callable[[tuple[str, ...]], bool] = _under_way,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger, self.drop_root = ledger, drop_root
        self._start, self._under_way, self._clock = start, under_way, clock
        self.paces = {name: Pace(longest) for name, longest in LONGEST_WAIT.items()}
        self._nonce = uuid.uuid4().hex[:8]
        self._log = get_logger("watch")

    def tick(self) -> list[str]:
        """Look once and start what the work calls for; returns the deployments started."""
        started = []
        for deployment, work in look(self.ledger, self.drop_root).items():
            pace = self.paces[deployment]
            now = self._clock()
            if work is None or not pace.due(work, now) or self._taken(deployment):
                continue
            attempt = pace.attempts + 1 if work.fingerprint == pace.fingerprint else 1
            key = f"watch-{self._nonce}-{work.fingerprint[:16]}-{attempt}"
            run_id = self._start(deployment, key)
            if run_id is None:
                pace.failed(work, now)
                continue
            pace.started(work, now)
            self._log.info("watch_started_run", deployment=deployment, run_id=run_id,
                           attempt=pace.attempts, **work.counts)
            started.append(deployment)
        return started

    def _taken(self, deployment: str) -> bool:
        """Whether a run already on its way takes the work (if Prefect cannot say: no)."""
        try:
            return self._under_way(TAKEN_BY[deployment])
        except Exception as exc:  # Prefect away: the start then fails too, and is tried again
            self._log.warning("watch_cannot_see_runs", error=type(exc).__name__)
            return False

    def run(self, stop: threading.Event) -> None:
        """Look every WATCH_SECONDS until ``stop`` is set; a look that fails (the ledger away)
        is tried again after WATCH_ERROR_RETRY_SECONDS."""
        self._log.info("watch_started", every_seconds=limits.WATCH_SECONDS)
        while not stop.is_set():
            pause = limits.WATCH_SECONDS
            try:
                self.tick()
            except Exception as exc:  # the watch must outlive any one look
                self._log.warning("watch_look_failed", error=type(exc).__name__)
                pause = limits.WATCH_ERROR_RETRY_SECONDS
            stop.wait(pause)


def watch_forever(stop: threading.Event | None = None, settings: Settings | None = None) -> None:
    """Open the ledger (trying again while it cannot be opened) and watch until ``stop`` is set
    (for ever without one)."""
    stop = stop or threading.Event()
    settings = settings or load_settings()
    log = get_logger("watch")
    while not stop.is_set():
        try:
            ledger = open_ledger(settings)
        except Exception as exc:  # not reachable yet, not migrated, the key ring missing
            log.warning("watch_ledger_unavailable", error=type(exc).__name__)
            stop.wait(limits.WATCH_ERROR_RETRY_SECONDS)
            continue
        try:
            Watch(ledger, settings.resolved_dropoff_dir).run(stop)
        finally:
            ledger.dispose()
