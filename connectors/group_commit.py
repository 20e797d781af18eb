"""Group commit: the intake API's one ledger writer, recording many submissions per transaction.

Every accepted request must be on the ledger before its ``202`` goes out, and each one appends to
the hash chain. One transaction per request would serialise every request behind a commit (and
an fsync) and a chain append of its own; instead a single writer thread takes whatever
submissions are waiting (up to :data:`~legal_bases.limits.INTAKE_BATCH_SIZE`), records them in
one transaction with one chain append, commits, and only then hands each waiting handler its own
result. Under load batches grow by themselves; when idle a batch is one submission.

:func:`records.submissions.record_submissions` records each batch, with exactly the rows,
rules and audit events of recording the submissions one by one.

If the batch cannot be written (the ledger is down, locked for too long), nothing of it is
recorded: each submission is tried once more on its own, so one submission the database refuses
cannot fail the others, and whoever still fails gets :class:`LedgerUnavailableError` (the API
answers ``503``; the partner sends the same request again, which is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from connectors.errors import ConnectorError
from legal_bases import limits
from records.pseudonym import Pseudonymizer
from records.submissions import Recorded, Submission, record_submissions


class LedgerUnavailableError(ConnectorError):
    """Raised when a submission could not be recorded: the ledger refused or did not answer."""


class WriterBusyError(LedgerUnavailableError):
    """Raised when the writer is stopped or more submissions wait than it takes in."""


# -- the writer thread ----------------------------------------------------------------------------

Outcome = Recorded | BaseException


@dataclass(frozen=True, slots=True)
class _Item:
    """A queued submission and who waits for it: a thread (``future``) or an event loop
    (``loop`` and ``waiter``, settled in the loop)."""

    submission: Submission
    future: Future[Recorded] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[Recorded] | None = None


_STOP: Any = object()


def _settle(pairs: list[tuple[asyncio.Future[Recorded], Outcome]]) -> None:
    """In the event loop: hand each waiting handler its result (unless it gave up waiting)."""
    for waiter, outcome in pairs:
        if waiter.done():
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


class GroupCommitWriter:
    """A thread that records queued submissions in batches, each batch in one transaction.

    :meth:`record` (from an event loop) waits for the commit of its own submission; the
    writer settles all waiters of one event loop with one call into that loop per batch.
    :meth:`submit` (from a thread) returns a future. ``on_written(n)`` is called in the writer
    thread after each commit that wrote ``n`` > 0 rows: the API nudges the dispatcher there.
    """

    def __init__(self, *, engine: Engine, pseudonymizer: Pseudonymizer,
                 batch_size: int = limits.INTAKE_BATCH_SIZE,
                 queue_size: int = limits.INTAKE_QUEUE_SIZE,
                 on_written: Callable[[int], object] | None = None) -> None:
        self._engine = engine
        self._pseudonymizer = pseudonymizer
        self._batch_size = batch_size
        # SimpleQueue: a put never waits for a lock the writer holds (no GIL hand-over on the
        # request path); its size is bounded by the count below instead.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._puts = itertools.count(1)  # next() is atomic: any thread may put
        self._put = 0
        self._taken = 0  # written by the writer thread only
        self._on_written = on_written
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._lock = threading.Lock()
        self.batches = 0
        self.largest_batch = 0
        self.recorded = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._accepting = True
            self._thread = threading.Thread(target=self._run, name="intake-ledger-writer",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Take no more submissions, record those waiting, and end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._accepting = False
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)

    @property
    def waiting(self) -> int:
        return max(0, self._put - self._taken)

    def _enqueue(self, item: _Item) -> None:
        if not self._accepting:
            raise WriterBusyError("the intake writer is not running")
        if self.waiting >= self._queue_size:
            raise WriterBusyError(f"{self.waiting} submissions are waiting for the ledger")
        self._put = next(self._puts)
        self._queue.put(item)

    def submit(self, submission: Submission) -> Future[Recorded]:
        """Queue a submission; the future resolves once its transaction committed (or failed).

        Raises :class:`WriterBusyError` when the writer is stopped or its queue is full.
        """
        future: Future[Recorded] = Future()
        self._enqueue(_Item(submission, future=future))
        return future

    async def record(self, submission: Submission, *, timeout: float) -> Recorded:
        """Queue a submission and wait (at most ``timeout`` seconds) for its commit.

        Raises :class:`WriterBusyError` (not queued), :class:`LedgerUnavailableError` (the
        ledger refused it) or :class:`TimeoutError` (still waiting: it may yet be recorded).
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Recorded] = loop.create_future()
        self._enqueue(_Item(submission, loop=loop, waiter=waiter))
        async with asyncio.timeout(timeout):
            return await waiter

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Item] = []
            if first is _STOP:
                stopping = True
            else:
                batch.append(first)
            while len(batch) < self._batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                self._taken += len(batch)
                self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        live = [item for item in batch
                if item.future is None or item.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outcomes: list[Outcome] = list(self._commit([item.submission for item in live]))
        except Exception as exc:  # the ledger failed the batch; try each alone
            outcomes = []
            for item in live:
                try:
                    outcomes.extend(self._commit([item.submission]))
                except Exception as one_exc:
                    outcomes.append(self._failure([item], one_exc if len(live) > 1 else exc))
        self._deliver(live, outcomes)

    def _commit(self, submissions: list[Submission]) -> list[Recorded]:
        started = time.perf_counter()
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            results = record_submissions(session=session, submissions=submissions,
                                         pseudonymizer=self._pseudonymizer)
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(submissions))
        structlog.get_logger("disclosure.api").debug(
            "intake_batch_committed", submissions=len(submissions),
            ms=round((time.perf_counter() - started) * 1000, 2))
        return results

    def _deliver(self, items: list[_Item], outcomes: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Recorded],
                                                            Outcome]]] = {}
        for item, outcome in zip(items, outcomes, strict=True):
            if item.future is not None:
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)
            elif item.loop is not None and item.waiter is not None:
                by_loop.setdefault(item.loop, []).append((item.waiter, outcome))
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, pairs)
        written = sum(1 for o in outcomes if isinstance(o, Recorded) and o.written)
        self.recorded += written
        if written and self._on_written is not None:
            try:
                self._on_written(written)
            except Exception:
                structlog.get_logger("disclosure.api").exception("intake_callback_failed")

    @staticmethod
    def _failure(items: list[_Item], exc: BaseException) -> LedgerUnavailableError:
        structlog.get_logger("disclosure.api").error(
            "ledger_write_failed", submissions=len(items), error=type(exc).__name__,
            correlation_ids=[i.submission.correlation_id for i in items][:20])
        return LedgerUnavailableError(
            f"the ledger did not record the submission ({type(exc).__name__})")
