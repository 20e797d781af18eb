"""Retention: a request's personal data is destroyed when its term ends; the proof stays.

Each request's term comes from ``legal_bases/accountability.yaml`` (the ground its decision was
read under, else the ground it claimed, else ``default_retention``; an invalid submission, never
decided under any ground, always takes ``default_retention``), counted from its final
decision or its last delivery (:class:`~legal_bases.accountability.CountedFrom`), as a day in
the Netherlands. Only a request that is done can be due: invalid (counted from receipt),
rejected, delivered, or failed for good (counted from the failure). A request still waiting for
a decision, a reviewer or a delivery keeps its data whatever its age.

Shredding a request, in one transaction with its audit event:

* its data key is deleted (:mod:`records.data_keys`): the sealed submission and the reviewers'
  sealed motivations can no longer be opened, and the keyed digests on the chain (body hash,
  subjects digest) no longer confirm anyone;
* its subjects' pseudonyms (``request_subjects``, the inzage index) are deleted;
* a ``request_shredded`` event records when, why (ground, term, start and end) and how much
  (counts only).

What stays is the proof: the request's ids, partner, body, ground, dates, the decisions and
deliveries with their categories, the chain, and its subjects by position and kind of number
(in the ``request_shredded`` event, for the Logboek). The transparency report's distinct
subjects of a year
are frozen on the chain (counts only) before the first of its requests is shredded
(:func:`freeze_years`): nothing that stays links a shredded request to anyone.

It is idempotent and crash-safe: a batch is one transaction (the keys, the rows and the events
together), a request already shredded is never due again, and a run cut off part-way leaves
every request either shredded with its event or untouched; the next run takes the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, delete, func, select, text
from sqlalchemy.orm import Session

from legal_bases import limits
from legal_bases.accountability import Accountability, CountedFrom, RetentionTerm
from records import chain, data_keys
from records.chain import NewEvent
from records.errors import LedgerError
from records.frozen_counts import frozen_years, year_periods
from records.ledger import local_midnight, received_on
from records.models import (
    AuditEvent,
    DecisionRow,
    DeliveryRow,
    RequestRow,
    RequestStatus,
    RequestSubject,
)
from records.reviews import ReviewAnswerRow
from records.statistics import parse_period, transparency_statistics
from records.vocabulary import EventKind, RequestState

_REQUESTS = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]
_DELIVERIES = DeliveryRow.__table__  # type: ignore[attr-defined]
_STATUS = RequestStatus.__table__  # type: ignore[attr-defined]
_SUBJECTS = RequestSubject.__table__  # type: ignore[attr-defined]
_ANSWERS = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_KEYS = data_keys.DATA_KEYS

#: States in which a request is done: nothing more will be decided or delivered.
DONE = (RequestState.INVALID.value, RequestState.REJECTED.value, RequestState.DELIVERED.value,
        RequestState.FAILED.value)
#: Who shreds, on the chain.
ACTOR = "retention"
#: How often the write-ahead log's checkpoint is tried after a run (a reader may hold it up).
PURGE_TRIES = 5


#: One letter per kind of subject number in a shredded request's ``subject_types``.
SUBJECT_TYPE_LETTERS = {"bsn": "b", "onderwijsnummer": "o"}


def subject_types(kinds: Sequence[str]) -> str:
    """The kinds of number of a request's subjects, in order, one letter each."""
    return "".join(SUBJECT_TYPE_LETTERS.get(kind, "?") for kind in kinds)


class RetentionError(LedgerError):
    """Raised when a retention run is asked for what would shred early."""


@dataclass(frozen=True, slots=True)
class Due:
    """A request whose retention term has ended: which term, from when, until when."""

    request_id: str
    ground_id: str | None
    term: RetentionTerm
    started: date
    ended: date
    received_at: datetime


@dataclass
class RetentionRun:
    """What a run found and did (ids and counts only)."""

    today: date
    dry_run: bool
    due: list[Due] = field(default_factory=list)
    shredded: int = 0
    subject_rows: int = 0
    motivations: int = 0
    frozen_years: list[int] = field(default_factory=list)
    batches: int = 0
    purged: bool = True  # nothing deleted left in the database's own files
    #: requests that would be looked at but cannot be shredded, and why (kept, listed)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"today": self.today.isoformat(), "dry_run": self.dry_run,
                "due": len(self.due), "shredded": self.shredded,
                "subject_rows_removed": self.subject_rows,
                "motivations_removed": self.motivations,
                "years_frozen": self.frozen_years, "purged": self.purged,
                "skipped": len(self.skipped)}


def due_for_shredding(*, session: Session, accountability: Accountability, today: date,
                      skipped: dict[str, str] | None = None) -> list[Due]:
    """Every request not yet shredded whose retention term ended on or before ``today``;
    ``skipped`` gets the requests that would be looked at but cannot be shredded, and why."""
    skipped = {} if skipped is None else skipped
    terms = [accountability.retention_for(None),
             *(accountability.retention_for(g) for g in accountability.grounds)]
    # no term is shorter than this many days, so a younger request cannot be due
    shortest = min(_lower_bound_days(t) for t in terms)
    newest = local_midnight(today - timedelta(days=shortest - 1))
    decided = (select(_DECISIONS.c.request_id, func.max(_DECISIONS.c.sequence).label("sequence"))
               .group_by(_DECISIONS.c.request_id).subquery("decided"))
    in_force = _DECISIONS.alias("in_force")
    delivered = (select(_DELIVERIES.c.request_id,
                        func.max(_DELIVERIES.c.delivered_at).label("delivered_at"))
                 .group_by(_DELIVERIES.c.request_id).subquery("delivered"))
    query = (
        select(_REQUESTS.c.id, _REQUESTS.c.received_at, _REQUESTS.c.legal_basis,
               _REQUESTS.c.valid, _STATUS.c.state,
               _STATUS.c.updated_at, in_force.c.ground_id, in_force.c.decided_at,
               delivered.c.delivered_at)
        .select_from(
            _REQUESTS.join(_KEYS, _KEYS.c.request_id == _REQUESTS.c.id)
            .join(_STATUS, _STATUS.c.request_id == _REQUESTS.c.id)
            .outerjoin(decided, decided.c.request_id == _REQUESTS.c.id)
            .outerjoin(in_force, (in_force.c.request_id == decided.c.request_id)
                       & (in_force.c.sequence == decided.c.sequence))
            .outerjoin(delivered, delivered.c.request_id == _REQUESTS.c.id))
        .where(_REQUESTS.c.received_at < newest, _STATUS.c.state.in_(DONE))
        .order_by(_REQUESTS.c.received_at, _REQUESTS.c.id))
    # The tables say which requests may be due (one query); the chain, which nobody can edit
    # without the key, decides: a request shreds only if its sealed events say it is done and
    # its term, counted from their times, has ended.
    candidates: list[str] = []
    for row in session.execute(query):
        try:
            if _due_by(row, accountability, today) is not None:
                candidates.append(row.id)
        except (ValueError, OverflowError, TypeError):
            candidates.append(row.id)  # the tables are odd: the chain decides
    due: list[Due] = []
    for request_id, facts in _chain_facts(session, candidates).items():
        try:
            found = _due_by(facts, accountability, today)
        except (ValueError, OverflowError, TypeError) as exc:  # one odd row stops no other
            skipped[request_id] = f"its term cannot be worked out ({type(exc).__name__})"
            continue
        if found is None or facts.state not in DONE:
            continue
        if isinstance(found, str):
            skipped[request_id] = found
            continue
        due.append(Due(request_id, *found, facts.received_at))
    return sorted(due, key=lambda d: (d.received_at, d.request_id))


@dataclass
class _Facts:
    """What a request's sealed events say: its state, validity, ground and the times a term
    may count from."""

    received_at: datetime
    valid: bool
    legal_basis: str | None
    state: str | None = None
    updated_at: datetime | None = None
    ground_id: str | None = None
    decided_at: datetime | None = None
    delivered_at: datetime | None = None


def _chain_facts(session: Session, request_ids: Sequence[str]) -> dict[str, _Facts]:
    """The facts of ``request_ids`` from their sealed events (events without a valid seal, as an
    insider without the key would write them, are left out)."""
    keys = chain.keys_of(session)
    found: dict[str, _Facts] = {}
    for start in range(0, len(request_ids), 500):
        for row in session.execute(select(_EVENTS).where(
                _EVENTS.c.request_id.in_(request_ids[start:start + 500]))
                .order_by(_EVENTS.c.seq)):
            if not chain.is_sealed(row, keys):
                continue
            payload = row.payload if isinstance(row.payload, dict) else {}
            if row.kind in (EventKind.REQUEST_RECEIVED.value, EventKind.REQUEST_INVALID.value):
                found[row.request_id] = _Facts(
                    received_at=row.occurred_at, valid=row.kind == EventKind.REQUEST_RECEIVED.value,
                    legal_basis=payload.get("legal_basis"))
            facts = found.get(row.request_id)
            if facts is None:
                continue
            if isinstance(payload.get("state"), str):
                facts.state, facts.updated_at = payload["state"], row.occurred_at
            if row.kind == EventKind.DECISION_RECORDED.value:
                facts.decided_at, facts.ground_id = row.occurred_at, payload.get("ground_id")
            elif row.kind == EventKind.DELIVERY_RECORDED.value:
                facts.delivered_at = row.occurred_at
    return found


def _due_by(facts: Any, accountability: Accountability,
            today: date) -> tuple[str | None, RetentionTerm, date, date] | str | None:
    """(ground, term, start, end) if the request's term ended by ``today``; None if not; the
    reason as text if it cannot be shredded: data were delivered under a ground that has no
    entry in the accountability file (its term is unknown: kept, and listed). A request that
    claimed a ground nobody knows and got nothing takes ``default_retention``."""
    # an invalid submission was never decided under a ground, whatever it claimed
    ground = (facts.ground_id or facts.legal_basis) if facts.valid else None
    if ground is not None and ground not in accountability.grounds:
        if facts.delivered_at is not None:
            return (f"delivered under ground {ground}, which has no entry in the "
                    "accountability file: its retention term is unknown")
        ground = None
    term = accountability.retention_for(ground)
    started = _start(facts, term)
    ended = term.ends(started)
    if ended > today or received_on(facts.received_at).year >= today.year:
        return None  # (a year's report is frozen once it is over: nothing of it goes before)
    return ground, term, started, ended


def _lower_bound_days(term: RetentionTerm) -> int:
    """Days the term lasts at the least (a month at least 28 days, a year 365)."""
    start = date(2001, 2, 28)  # a month of 28 days, then a year of 365 days
    return max(1, min((term.ends(start) - start).days,
                      (term.ends(date(2003, 2, 1)) - date(2003, 2, 1)).days))


def _start(row: Any, term: RetentionTerm) -> date:
    """The day a request's term starts: the latest of what it is counted from."""
    if not row.valid or row.decided_at is None:
        moments = [m for m in (row.received_at, row.updated_at) if m is not None]
    else:
        moments = [row.decided_at]
        if row.state == RequestState.FAILED.value and row.updated_at is not None:
            moments.append(row.updated_at)
        if term.counted_from is CountedFrom.DELIVERY and row.delivered_at is not None:
            moments.append(row.delivered_at)
    return received_on(max(moments))


def shred(*, session: Session, due: Sequence[Due], now: datetime,
          flow_run_id: str | None = None) -> tuple[int, int, int]:
    """Shred ``due`` in the caller's transaction: delete their data keys and subject rows and
    append their ``request_shredded`` events. Returns (requests, subject rows, motivations).

    A request whose key is already gone (shredded by a concurrent run) is skipped."""
    ids = [d.request_id for d in due]
    held = set(session.execute(select(_KEYS.c.request_id).where(_KEYS.c.request_id.in_(ids)))
               .scalars())
    todo = [d for d in due if d.request_id in held]
    if not todo:
        return 0, 0, 0
    ids = [d.request_id for d in todo]
    kinds: dict[str, list[str]] = {}
    for row in session.execute(select(_SUBJECTS.c.request_id, _SUBJECTS.c.id_type)
                               .where(_SUBJECTS.c.request_id.in_(ids))
                               .order_by(_SUBJECTS.c.request_id, _SUBJECTS.c.position)):
        kinds.setdefault(row.request_id, []).append(row.id_type)
    subjects = {request_id: len(found) for request_id, found in kinds.items()}
    answers: dict[str, int] = dict(session.execute(
        select(_ANSWERS.c.request_id, func.count()).where(_ANSWERS.c.request_id.in_(ids))
        .group_by(_ANSWERS.c.request_id)).all())
    session.execute(delete(_SUBJECTS).where(_SUBJECTS.c.request_id.in_(ids)))
    session.execute(delete(_KEYS).where(_KEYS.c.request_id.in_(ids)))
    chain.append_event_rows(session=session, events=[NewEvent(
        kind=EventKind.REQUEST_SHREDDED.value, occurred_at=now, actor=ACTOR,
        request_id=d.request_id, flow_run_id=flow_run_id, payload={
            "ground_id": d.ground_id, "term": d.term.describe(),
            "counted_from": d.term.counted_from.value, "term_started": d.started.isoformat(),
            "term_ended": d.ended.isoformat(),
            "removed": {"data_key": 1, "subject_rows": int(subjects.get(d.request_id, 0)),
                        "motivations": int(answers.get(d.request_id, 0))},
            # the kind of number of each subject, in order (the Logboek keeps a line each)
            "subject_types": subject_types(kinds.get(d.request_id, []))})
        for d in todo])
    return len(todo), sum(subjects.values()), sum(answers.values())


def freeze_counts(*, session: Session, year: int, now: datetime) -> dict[str, Any]:
    """The distinct subjects affected in ``year`` and each of its quarters and months, per
    body × ground × outcome, per body and in all, as counted now (counts only): the payload of
    the year's ``subject_counts_frozen`` event."""
    periods: dict[str, Any] = {}
    for label in year_periods(year):
        report = transparency_statistics(session=session, period=parse_period(label), now=now,
                                         frozen=False)
        periods[label] = {
            "cells": [[body, ground, outcome, tally.subjects_affected]
                      for (_, body, ground, outcome), tally in sorted(report.cells.items())
                      if tally.subjects_affected],
            "bodies": dict(sorted(report.body_affected.items())),
            "total": report.total.subjects_affected}
    return {"year": year, "periods": periods}


def freeze_years(*, session: Session, years: Sequence[int], now: datetime,
                 flow_run_id: str | None = None) -> list[int]:
    """Freeze the distinct subjects of each of ``years`` not frozen yet, on the chain (a
    ``subject_counts_frozen`` event each, counts only), before the first of its requests is
    shredded: the transparency report reads them from there (:mod:`records.statistics`).
    Returns the years frozen now."""
    done = frozen_years(session)
    todo = sorted(set(years) - set(done))
    if todo:
        chain.append_event_rows(session=session, events=[NewEvent(
            kind=EventKind.SUBJECT_COUNTS_FROZEN.value, occurred_at=now, actor=ACTOR,
            flow_run_id=flow_run_id, payload=freeze_counts(session=session, year=year, now=now))
            for year in todo])
    return todo


def run_retention(engine: Engine, *, accountability: Accountability, today: date | None = None,
                  now: datetime | None = None,
                  dry_run: bool = False, batch_size: int = limits.SHRED_BATCH_SIZE,
                  flow_run_id: str | None = None,
                  after_batch: Callable[[int], None] | None = None) -> RetentionRun:
    """Find what is due and (unless ``dry_run``) shred it, ``batch_size`` requests per
    transaction, after freezing the distinct subjects of their years of receipt for the
    report; then make sure nothing deleted lingers in the database's files
    (:func:`purge_deleted`). ``today`` may be a day gone by (a term counted as then shreds
    less), never one to come (:class:`RetentionError`); ``now`` is the clock (tests set it).
    ``after_batch`` is called with the number of each committed batch (tests use it to cut a
    run off)."""
    clock = now or datetime.now(UTC)
    today = today or received_on(clock)
    if today > received_on(clock):
        raise RetentionError(f"terms are counted as on {today.isoformat()}, a day still to come: "
                             "that would shred early")
    run = RetentionRun(today=today, dry_run=dry_run)
    with Session(engine) as session:
        run.due = due_for_shredding(session=session, accountability=accountability, today=today,
                                    skipped=run.skipped)
    if dry_run:
        return run
    years = sorted({received_on(d.received_at).year for d in run.due})
    if years:
        with Session(engine) as session, session.begin():
            run.frozen_years = freeze_years(session=session, years=years,
                                            now=now or datetime.now(UTC),
                                            flow_run_id=flow_run_id)
    for start in range(0, len(run.due), batch_size):
        with Session(engine) as session, session.begin():
            shredded, rows, motivations = shred(
                session=session, due=run.due[start:start + batch_size],
                now=now or datetime.now(UTC), flow_run_id=flow_run_id)
        run.shredded += shredded
        run.subject_rows += rows
        run.motivations += motivations
        run.batches += 1
        if after_batch is not None:
            after_batch(run.batches)
    if run.shredded:
        run.purged = purge_deleted(engine)
    return run


def purge_deleted(engine: Engine) -> bool:
    """Leave no copy of what was deleted in the database's own files; False if that could not
    be done now (logged: the next run tries again).

    SQLite overwrites deleted content (``secure_delete``, :mod:`records.db`); here the write-ahead
    log is checkpointed into the file and truncated — which a reader still holding an old
    snapshot prevents, hence a few tries. PostgreSQL keeps deleted row versions in its pages
    until they are reused, where whoever reads the pages finds them: the two tables shredding
    deletes from are rewritten (``VACUUM FULL``, a short exclusive lock on ``data_keys`` and
    ``request_subjects``). WAL archives, replicas and backups are the operator's (README:
    Retention)."""
    log = structlog.get_logger("disclosure.retention")
    if engine.dialect.name == "sqlite":
        for attempt in range(PURGE_TRIES):
            # outside a transaction (the engine's own connections begin one): a raw connection
            raw = engine.raw_connection()
            try:
                busy, frames, done = raw.cursor().execute(
                    "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                raw.close()
            if not busy and frames in (0, -1, done):
                return True
            time.sleep(0.2 * (attempt + 1))
        log.warning("purge_incomplete", reason="a reader holds an old snapshot of the ledger")
        return False
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM FULL data_keys, request_subjects"))
    return True


# --- the outbox ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OutboxRemoval:
    """A file-drop delivery removed from a partner's outbox folder (connectors/outbox.py)."""

    delivery_key: str  # the key the delivery is recorded under
    file_key: str  # the file's own key (a bulk part's, or the delivery's)
    partner_id: str
    reason: str  # "collected" or "expired"
    written_at: datetime


def delivery_recorded(*, session: Session, key: str) -> bool:
    """Whether a delivery is on the record under idempotency key ``key``."""
    return session.execute(select(_DELIVERIES.c.id).where(
        _DELIVERIES.c.idempotency_key == key).limit(1)).first() is not None


def record_outbox_removals(*, session: Session, removed: Sequence[OutboxRemoval], now: datetime,
                           flow_run_id: str | None = None) -> int:
    """One ``outbox_cleaned`` event per delivery whose files left the outbox (ids, reasons and
    counts), in the caller's transaction; returns how many events."""
    by_delivery: dict[str, list[OutboxRemoval]] = {}
    for item in removed:
        by_delivery.setdefault(item.delivery_key, []).append(item)
    if not by_delivery:
        return 0
    owners: dict[str, str] = dict(session.execute(
        select(_DELIVERIES.c.idempotency_key, _DELIVERIES.c.request_id)
        .where(_DELIVERIES.c.idempotency_key.in_(sorted(by_delivery)))).all())
    chain.append_event_rows(session=session, events=[NewEvent(
        kind=EventKind.OUTBOX_CLEANED.value, occurred_at=now, actor=ACTOR,
        request_id=owners.get(key), flow_run_id=flow_run_id, payload={
            "idempotency_key": key, "partner_id": items[0].partner_id,
            "files": len(items), "reasons": sorted({i.reason for i in items}),
            "written_at": min(i.written_at for i in items).isoformat()})
        for key, items in sorted(by_delivery.items())])
    return len(by_delivery)


def record_dropoff_removals(*, session: Session, removed: Sequence[tuple[str, str, str]],
                            now: datetime, flow_run_id: str | None = None) -> int:
    """One ``dropoff_files_removed`` event per partner: ``removed`` as (partner, folder, name);
    the event holds counts per folder (a file's name is the partner's and may say anything)."""
    by_partner: dict[str, Counter[str]] = {}
    for partner_id, folder, _ in removed:
        by_partner.setdefault(partner_id, Counter())[folder] += 1
    if by_partner:
        chain.append_event_rows(session=session, events=[NewEvent(
            kind=EventKind.DROPOFF_FILES_REMOVED.value, occurred_at=now, actor=ACTOR,
            flow_run_id=flow_run_id, payload={"partner_id": partner_id, **dict(counts)})
            for partner_id, counts in sorted(by_partner.items())])
    return len(by_partner)


# --- what inzage can say ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ShreddedSoFar:
    """How many requests were shredded, and between which days (for an inzage answer: which
    of them named the person can no longer be known)."""

    requests: int
    first: date | None
    last: date | None

    def to_dict(self) -> dict[str, Any]:
        return {"requests_shredded": self.requests,
                "first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None}


def shredded_so_far(*, session: Session) -> ShreddedSoFar:
    """Every ``request_shredded`` event's count and first and last day (in the Netherlands)."""
    events = chain.AuditEvent.__table__  # type: ignore[attr-defined]
    count, first, last = session.execute(
        select(func.count(), func.min(events.c.occurred_at), func.max(events.c.occurred_at))
        .where(events.c.kind == EventKind.REQUEST_SHREDDED.value)).one()
    return ShreddedSoFar(int(count), received_on(first) if first else None,
                         received_on(last) if last else None)
