"""Group commit: the intake API's one ledger writer, recording many submissions per transaction.

Every accepted request must be on the ledger before its ``202`` goes out, and each one appends to
the hash chain. One transaction per request would serialise every request behind a commit (and
an fsync) and a chain append of its own; instead a single writer thread takes whatever
submissions are waiting (up to :data:`~legal_bases.limits.INTAKE_BATCH_SIZE`), records them in
one transaction with one chain append, commits, and only then hands each waiting handler its own
result. Under load batches grow by themselves; when idle a batch is one submission.

:func:`record_submissions` records a batch with exactly the rows and audit events that
:func:`records.ledger.record_submission` writes for each submission, in order, with its rules:
a valid request repeating an accepted one of the same partner and reference returns that one
(nothing written); with a different body it is a conflict, recorded as an invalid submission
(``reference_conflict``) as the drop-off does; invalid submissions never conflict.

If the batch cannot be written (the ledger is down, locked for too long), nothing of it is
recorded: each submission is tried once more on its own, so one submission the database refuses
cannot fail the others, and whoever still fails gets :class:`LedgerUnavailableError` (the API
answers ``503``; the partner sends the same request again, which is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import queue
import threading
import time
import types
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import structlog
from sqlalchemy import Engine, Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectors.errors import ConnectorError
from legal_bases import limits
from legal_bases.errors import FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.table import canonical_json, sha256
from legal_bases.vocabulary import Body
from records import chain
from records.api_keys import revoked_among
from records.chain import NewEvent
from records.ledger import _submission_event
from records.models import (
    REFERENCE_LENGTH,
    SLUG_LENGTH,
    AuditEvent,
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
_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
#: How often a batch is tried again when a concurrent writer (another API process, the
#: drop-off) accepted one of its references between our look-up and our insert (PostgreSQL).
_RACE_RETRIES = 3
#: ``Submission.data`` of a body that is not JSON (or was not parsed by the caller).
NOT_PARSED: Any = object()
_UNSET = NOT_PARSED


class LedgerUnavailableError(ConnectorError):
    """Raised when a submission could not be recorded: the ledger refused or did not answer."""


class WriterBusyError(LedgerUnavailableError):
    """Raised when the writer is stopped or more submissions wait than it takes in."""


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


def _digest(submission: Submission) -> tuple[Any, str]:
    data = submission.data
    if data is _UNSET:
        try:
            data = _loads(submission.raw_body)
        except RecursionError:
            data = _UNSET
    if data is _UNSET:
        return None, sha256(submission.raw_body)
    return data, sha256(canonical_json(data))


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return _UNSET


def _accepted(session: Session, submissions: Sequence[Submission],
              ) -> dict[tuple[str, str], tuple[str, str]]:
    """(partner, reference) -> (request id, body hash) of the accepted requests these repeat."""
    wanted = {(s.partner_id, s.parsed.reference) for s in submissions
              if isinstance(s.parsed, DisclosureRequest)}
    if not wanted:
        return {}
    partners = sorted({p for p, _ in wanted})
    references = sorted({r for _, r in wanted})
    found: dict[tuple[str, str], tuple[str, str]] = {}
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


def _short_str(data: Any, key: str, limit: int) -> str | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _row_values(item: Submission, data: Any, digest: str,
                parsed: DisclosureRequest | InvalidRequest) -> dict[str, Any]:
    """The ``requests`` row of a submission: the values ``record_submission`` stores."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()), "partner_id": item.partner_id,
        "requester_body": item.requester_body.value, "channel": item.channel.value,
        "received_at": utc(item.received_at, name="received_at"), "raw_body": item.raw_body,
        "body_hash": digest, "correlation_id": item.correlation_id, "intake_key": None}
    if isinstance(parsed, DisclosureRequest):
        return values | {
            "reference": parsed.reference, "valid": True, "validation_errors": [],
            "legal_basis": parsed.legal_basis, "purpose": parsed.purpose.value,
            "reference_date": parsed.reference_date, "due_date": parsed.due_date,
            "subject_count": len(parsed.subjects)}
    # What an invalid submission claimed, where it fits; the raw body keeps all of it.
    legal_basis = parsed.legal_basis if parsed.legal_basis and len(
        parsed.legal_basis) <= SLUG_LENGTH else None
    return values | {
        "reference": _short_str(data, "reference", REFERENCE_LENGTH), "valid": False,
        "validation_errors": [e.to_dict() for e in parsed.errors], "legal_basis": legal_basis,
        "purpose": None, "reference_date": None, "due_date": None, "subject_count": None}


def _append_chain(session: Session, events: Sequence[NewEvent]) -> None:
    """:func:`records.chain.append_events`, without building an ``AuditEvent`` per event to
    return (a third of a batch's cost): the same lock, head, hashes and rows."""
    chain._lock_chain(session)
    seq, prev_hash = chain.chain_head(session=session)
    rows: list[dict[str, Any]] = []
    for event in events:
        seq += 1
        row: dict[str, Any] = {
            "seq": seq, "id": str(uuid.uuid4()),
            "occurred_at": utc(event.occurred_at, name="occurred_at"), "kind": event.kind,
            "request_id": event.request_id, "actor": event.actor,
            "flow_run_id": event.flow_run_id,
            "payload": chain._plain_json(event.payload, event.kind)}
        row["prev_hash"] = prev_hash
        row["hash"] = prev_hash = chain.event_hash(**row)
        rows.append(row)
    session.execute(insert(_EVENTS), rows)


def _record(session: Session, submissions: Sequence[Submission],
            pseudonymizer: Pseudonymizer) -> list[Recorded]:
    revoked = revoked_among(session=session,
                            key_ids=[s.key_id for s in submissions if s.key_id is not None])
    accepted = _accepted(session, submissions)
    results: list[Recorded] = []
    rows: list[dict[str, Any]] = []
    subjects: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    events: list[NewEvent] = []
    for item in submissions:
        if item.key_id is not None and item.key_id in revoked:
            results.append(Recorded(Recording.REFUSED, "", None, None, None))
            continue
        data, digest = _digest(item)
        parsed = item.parsed
        recording, existing_id = Recording.INVALID, None
        if isinstance(parsed, DisclosureRequest):
            key = (item.partner_id, parsed.reference)
            seen = accepted.get(key)
            if seen is not None and seen[1] == digest:
                results.append(Recorded(Recording.REPEAT, seen[0], None, None,
                                        parsed.reference))
                continue
            if seen is not None:
                recording, existing_id = Recording.CONFLICT, seen[0]
                parsed = _conflict(parsed, seen[0])
            else:
                recording = Recording.ACCEPTED
        values = _row_values(item, data, digest, parsed)
        request_id = values["id"]
        request = parsed if isinstance(parsed, DisclosureRequest) else None
        state = RequestState.RECEIVED if request is not None else RequestState.INVALID
        pseudonyms: list[str] = []
        if request is not None:
            accepted[(item.partner_id, request.reference)] = (request_id, digest)
            pseudonyms = [pseudonymizer.of(s) for s in request.subjects]
            subjects.extend({"request_id": request_id, "position": position,
                             "id_type": subject.id_type.value, "pseudonym": pseudonym}
                            for position, (subject, pseudonym)
                            in enumerate(zip(request.subjects, pseudonyms, strict=True)))
        rows.append(values)
        statuses.append({"request_id": request_id, "state": state.value,
                         "updated_at": values["received_at"]})
        # the ledger's own event builder reads attributes only: a plain namespace will do
        row = cast(RequestRow, types.SimpleNamespace(**values))
        events.append(_submission_event(row, request, parsed, state, pseudonyms))
        results.append(Recorded(recording, request_id, state, values["received_at"],
                                values["reference"], existing_id))
    if rows:
        session.execute(insert(_REQUESTS), rows)
        for start in range(0, len(subjects), 5000):
            session.execute(insert(_SUBJECTS), subjects[start:start + 5000])
        session.execute(insert(_STATUS), statuses)
        _append_chain(session, events)
    return results


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
