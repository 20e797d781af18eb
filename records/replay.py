"""Replay: every recorded decision re-derived from the ledger alone, years later.

A request is read again exactly as at intake (:func:`parse_recorded`: its raw body as received,
its day of receipt) and assessed against the table of grounds recorded with its decision — the
snapshot the ledger stored under the decision's ``table_hash``, never the table in the repo —
and the result is compared field by field with what was recorded: outcome, released and
withheld categories, reason codes and their citations, review triggers, proposal, ground,
ground version and table hash. Snapshots are parsed once per hash and shared by every request
that used them.

A request that went to review gets an account of it (:mod:`records.replay_review`): the
engine's proposal, every answer on the
review form (accepted or refused, and why), and three checks of the reviewed decision — what was
released stays within the proposal and the ground version's categories, the decision re-derives
with :func:`legal_bases.review.reviewed_decision` from the accepted answers, and a special
category was released by two different reviewers who are the ones ``decided_by`` names.

The ``shielded_subject`` review trigger comes from the source register, which cannot be
consulted as it was years ago: replay takes it from the recorded decision, as a recorded fact,
and says so in the request's notes.

With ``against`` (today's table) replay answers another question — which requests would now be
decided differently (impact analysis of a change in the law): then only the substance counts
(outcome, categories, reason and trigger codes, proposal, ground), not the version id, table
hash or citation text, which differ whenever the table was edited at all.

Replay writes nothing: it reads in a transaction it never commits, which the database itself
holds read-only (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite ``PRAGMA query_only``).

What replay finds for a request is a :class:`records.replay_results.Replay`; two decisions are
compared in :mod:`records.replay_differences`, and the totals of many replays are counted in
:mod:`records.replay_summary`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, Table, select, text
from sqlalchemy.orm import Session

from legal_bases import limits
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.errors import DisclosureError, FieldError
from legal_bases.request import DisclosureRequest, InvalidRequest, read_request_text
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Outcome, ReviewTrigger
from records import chain, data_keys
from records.db import read_only
from records.errors import DataKeyError, SnapshotMissingError
from records.ledger import ENGINE, local_days, received_on
from records.models import DecisionRow, RequestRow
from records.replay_differences import (
    COMPARED,
    SUBSTANCE,
    Difference,
    LedgerRow,
    as_recorded,
    aspects,
    compare,
    recorded_decision,
)
from records.replay_results import Answer, Check, Replay, ReplayStatus, ReviewAccount
from records.replay_review import answer_releases, review_account, review_cycles, table_version
from records.reviews import ReviewAnswerRow, ReviewerRow, open_motivation
from records.snapshots import load_table_snapshot
from records.vocabulary import EventKind

_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_ANSWERS: Table = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
_REVIEWERS: Table = ReviewerRow.__table__  # type: ignore[attr-defined]
_REQUEST_COLUMNS = (_REQUESTS.c.id, _REQUESTS.c.partner_id, _REQUESTS.c.requester_body,
                    _REQUESTS.c.reference, _REQUESTS.c.received_at, _REQUESTS.c.raw_body,
                    _REQUESTS.c.valid, _REQUESTS.c.subject_count,
                    _REQUESTS.c.validation_errors, _REQUESTS.c.legal_basis)
SHIELDED_NOTE = ("review trigger shielded_subject taken from the recorded decision: it comes "
                 "from the source register, which replay does not consult")
SHIELDED_AGAIN_NOTE = ("a subject was shielded after the decision in force (taken from the "
                       "record: the source register said so when the delivery read it)")


# --- reading a recorded submission ---------------------------------------------------------------

class RecordedSubmission(Protocol):
    """What :func:`parse_recorded` reads of a ``requests`` row (a model row or a Core row)."""

    raw_body: str
    received_at: datetime
    valid: bool
    validation_errors: Any
    legal_basis: str | None


def parse_recorded(row: RecordedSubmission, key: data_keys.DataKey | None = None, *,
                   pending: bool = False) -> DisclosureRequest | InvalidRequest:
    """A recorded submission read again exactly as at intake (the same day of receipt), its raw
    body opened with the request's data ``key``.

    A submission recorded as invalid stays invalid, with the errors recorded at intake, whatever
    its text reads as today: the intake refused it (a ``409`` reference conflict, a ``403``, a
    revoked key) although its body may be a well-formed request, and nothing refused is ever
    released. Only a submission recorded as valid is read again from its raw body.
    """
    if not row.valid:
        return recorded_refusal(row.validation_errors, row.legal_basis)
    return read_recorded(open_body(row, key, pending=pending), row.received_at)


def open_body(row: RecordedSubmission, key: data_keys.DataKey | None, *,
              pending: bool = False) -> str:
    """The raw body of a recorded submission as received: opened with its data ``key`` (as
    stored for a request of before 0.8.0 still to be sealed, ``pending``);
    :class:`DataKeyError` once it is shredded, or if it does not open."""
    text = data_keys.open_field(key, data_keys.RAW_BODY, row.raw_body, pending=pending)
    if text is None:
        raise DataKeyError(f"request {getattr(row, 'id', '?')} was shredded under retention: "
                           "its submission can no longer be read")
    return text


def read_recorded(raw_body: str, received_at: datetime) -> DisclosureRequest | InvalidRequest:
    """The request a raw body and its time of receipt read as (strictly, as at intake)."""
    return read_request_text(raw_body, received_on=received_on(received_at))


def recorded_refusal(errors: Any, legal_basis: str | None) -> InvalidRequest:
    """The :class:`InvalidRequest` of a submission recorded as invalid, from its recorded
    ``validation_errors`` (one generic error if they do not read as field errors)."""
    found: list[FieldError] = []
    if isinstance(errors, list):
        for error in errors:
            if isinstance(error, dict) and all(isinstance(error.get(k), str)
                                               for k in ("path", "code", "message")):
                found.append(FieldError(error["path"], error["code"], error["message"]))
    if not found:
        found.append(FieldError("", "recorded_invalid", "the submission was recorded as invalid"))
    return InvalidRequest(tuple(found), legal_basis)


# --- entry points --------------------------------------------------------------------------------

@contextmanager
def read_only_session(engine: Engine) -> Iterator[Session]:
    """A session whose one transaction the database holds read-only, and that never commits."""
    with Session(read_only(engine)) as session:
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            session.execute(text("SET TRANSACTION READ ONLY"))
        elif dialect == "sqlite":
            session.execute(text("PRAGMA query_only = ON"))
        try:
            yield session
        finally:
            if dialect == "sqlite":
                session.execute(text("PRAGMA query_only = OFF"))
            session.rollback()


def replay_request(engine: Engine, request_id: str, *,
                   against: GroundTable | None = None) -> Replay | None:
    """Replay one request (None if the ledger has no request with that id)."""
    with read_only_session(engine) as session:
        rows = session.execute(select(*_REQUEST_COLUMNS).where(
            _REQUESTS.c.id == request_id)).all()
        if not rows:
            return None
        return next(_replay_batch(session, rows, _Tables(session), against))


def replay_period(engine: Engine, *, first: date, last: date, against: GroundTable | None = None,
                  batch_size: int = limits.REPLAY_BATCH_SIZE) -> Iterator[Replay]:
    """Replay every request received from day ``first`` through day ``last`` (inclusive, days of
    receipt in the Netherlands), in order of receipt, ``batch_size`` requests per query."""
    start, end = local_days(first, last)
    with read_only_session(engine) as session:
        ids = [row.id for row in session.execute(
            select(_REQUESTS.c.id, _REQUESTS.c.received_at)
            .where(_REQUESTS.c.received_at >= start, _REQUESTS.c.received_at < end)
            .order_by(_REQUESTS.c.received_at, _REQUESTS.c.id))]
        tables = _Tables(session)
        for offset in range(0, len(ids), batch_size):
            chunk = ids[offset:offset + batch_size]
            found = {row.id: row for row in session.execute(
                select(*_REQUEST_COLUMNS).where(_REQUESTS.c.id.in_(chunk)))}
            yield from _replay_batch(session, [found[i] for i in chunk], tables, against)


# --- the work ------------------------------------------------------------------------------------

class _Tables:
    """The recorded tables of grounds by hash, each read from its snapshot once."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._tables: dict[str, GroundTable | str] = {}

    def get(self, table_hash: str) -> GroundTable | str:
        """The table, or why it cannot be had."""
        if table_hash not in self._tables:
            try:
                self._tables[table_hash] = load_table_snapshot(session=self._session,
                                                               table_hash=table_hash)
            except SnapshotMissingError:
                self._tables[table_hash] = (f"the ledger has no snapshot of table {table_hash} "
                                            "the decision was recorded with")
            except DisclosureError as exc:
                self._tables[table_hash] = f"the snapshot of table {table_hash} is unusable: {exc}"
        return self._tables[table_hash]


def _replay_batch(session: Session, requests: Sequence[LedgerRow], tables: _Tables,
                  against: GroundTable | None) -> Iterator[Replay]:
    ids = [r.id for r in requests]
    sealed = [r.id for r in requests if data_keys.is_sealed(r.raw_body)]
    pending = {r.id for r in requests if not data_keys.is_sealed(r.raw_body)
               and data_keys.is_pending(session, r.id)}
    keys = data_keys.keys_for(session, sealed)
    # a request whose key is gone was shredded (or its key deleted: the event says which)
    shredded = shredded_on(session=session, request_ids=[i for i in sealed if i not in keys])
    decisions: dict[str, list[LedgerRow]] = {i: [] for i in ids}
    for row in session.execute(select(_DECISIONS).where(_DECISIONS.c.request_id.in_(ids))
                               .order_by(_DECISIONS.c.request_id, _DECISIONS.c.sequence)):
        decisions[row.request_id].append(row)
    given: dict[str, list[LedgerRow]] = {i: [] for i in ids}
    for row in session.execute(select(_ANSWERS).where(_ANSWERS.c.request_id.in_(ids))
                               .order_by(_ANSWERS.c.request_id, _ANSWERS.c.seq)):
        given[row.request_id].append(row)
    roles = _enrolled_roles(session, {row.reviewer_id for rows in given.values() for row in rows})
    for request in requests:
        if request.id in shredded or (data_keys.is_sealed(request.raw_body)
                                      and request.id not in keys):
            yield _replay_shredded(request, decisions[request.id], tables,
                                   shredded.get(request.id))
            continue
        key = keys.get(request.id)
        try:
            answers = _answers(given[request.id], decisions[request.id], roles, key,
                               pending=request.id in pending)
            yield _replay_one(request, decisions[request.id], answers, tables, against, key=key,
                              pending=request.id in pending)
        except DataKeyError as exc:  # the stored text does not open: altered
            yield Replay(status=ReplayStatus.CANNOT_REPLAY, problem=str(exc),
                         **_identity(request))


def shredded_on(*, session: Session, request_ids: Sequence[str]) -> dict[str, date]:
    """The day (in the Netherlands) each of ``request_ids`` that was shredded was shredded on,
    from its sealed ``request_shredded`` event."""
    found: dict[str, date] = {}
    for start in range(0, len(request_ids), 500):
        for event in chain.sealed_events(session=session, kind=EventKind.REQUEST_SHREDDED.value,
                                         request_ids=request_ids[start:start + 500]):
            found[event.request_id] = received_on(event.occurred_at)
    return found


def _identity(request: LedgerRow) -> dict[str, Any]:
    """What a replay says of any request: who asked, when, how many subjects."""
    return {"request_id": request.id, "partner_id": request.partner_id,
            "requester_body": request.requester_body, "reference": request.reference,
            "received_on": received_on(request.received_at), "reference_date": None,
            "subject_count": request.subject_count}


def _replay_shredded(request: LedgerRow, decisions: list[LedgerRow], tables: _Tables,
                     on: date | None) -> Replay:
    """A shredded request: what the record still proves, the recorded decision in force held
    against the snapshot of the table it was read from."""
    common: dict[str, Any] = _identity(request) | {"shredded_on": on}
    when = f"on {on.isoformat()}" if on else "(no request_shredded event records it)"
    notes = [f"shredded under retention {when}: the submission, its subjects and the "
             "reviewers' motivations can no longer be read; what the record keeps was checked"]
    if not decisions:
        return Replay(status=ReplayStatus.SHREDDED if on else ReplayStatus.CANNOT_REPLAY,
                      notes=tuple(notes), problem=None if on else "its data key is missing",
                      **common)
    engine_row, in_force = decisions[0], decisions[-1]
    common |= {"ground_id": engine_row.ground_id, "ground_version": engine_row.ground_version,
               "table_hash": in_force.table_hash, "recorded": recorded_decision(engine_row)}
    table = tables.get(in_force.table_hash)
    if isinstance(table, str):
        return Replay(status=ReplayStatus.CANNOT_REPLAY, problem=table, notes=tuple(notes),
                      **common)
    common["replay_table_hash"] = table.hash
    common |= _citation(table, engine_row.ground_id, engine_row.ground_version)
    differences = list(_against_snapshot(request, in_force, table))
    if on is None:
        differences.append(Difference("data_key", "missing", "a request_shredded event"))
    notes.append(f"decision {in_force.sequence} in force ({in_force.outcome}) held against "
                 f"table {in_force.table_hash[:12]}")
    return Replay(status=ReplayStatus.DIFFERS if differences else ReplayStatus.SHREDDED,
                  differences=tuple(differences), notes=tuple(notes), **common)


def _against_snapshot(request: LedgerRow, decision: LedgerRow,
                      table: GroundTable) -> Iterator[Difference]:
    """What a recorded decision must agree with in the table it names: its ground version
    exists, may be asked for by the requesting body, and can release what was released."""
    released = sorted(decision.released or [])
    if decision.outcome not in (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value):
        if released:
            yield Difference("released", ", ".join(released), f"nothing ({decision.outcome})")
        return
    version = table_version(table, decision.ground_version)
    if version is None:
        yield Difference("ground_version", str(decision.ground_version),
                         "a version of the table's ground")
        return
    if request.requester_body not in {b.value for b in version.requesters}:
        yield Difference("requester_body", request.requester_body,
                         ", ".join(sorted(b.value for b in version.requesters)))
    allowed = {c.value for c in version.releasable}
    beyond = [c for c in released if c not in allowed]
    if beyond:
        yield Difference("released", ", ".join(beyond), ", ".join(sorted(allowed)))


def _enrolled_roles(session: Session, reviewer_ids: set[str]) -> dict[str, str]:
    """The role each of ``reviewer_ids`` is enrolled with (the reviewer records)."""
    if not reviewer_ids:
        return {}
    return {row.id: row.role for row in session.execute(
        select(_REVIEWERS.c.id, _REVIEWERS.c.role).where(_REVIEWERS.c.id.in_(sorted(
            reviewer_ids))))}


def _answers(rows: Sequence[LedgerRow], decisions: Sequence[LedgerRow],
             roles: dict[str, str], key: data_keys.DataKey | None, *,
             pending: bool = False) -> tuple[Answer, ...]:
    """A request's review answers as replay shows them: with the reviewer's enrolled role and
    what each verdict released (an ``approve`` the engine's proposal in force)."""
    proposals = [(d.decided_at, (d.proposal or {}).get("released", [])) for d in decisions
                 if d.decided_by == ENGINE and d.outcome == Outcome.NEEDS_REVIEW.value]
    releases = answer_releases(rows, proposals)
    return tuple(Answer(
        seq=row.seq, reviewer_id=row.reviewer_id, role=row.role, verdict=row.verdict,
        categories=tuple(row.categories),
        motivation=open_motivation(key, row.motivation, pending=pending), step=row.step,
        accepted=row.accepted, refusal_code=row.refusal_code,
        refusal_message=row.refusal_message, answered_at=row.answered_at,
        enrolled_role=roles.get(row.reviewer_id), releases=releases[row.seq]) for row in rows)


def _replay_one(request: LedgerRow, decisions: list[LedgerRow], answers: tuple[Answer, ...],
                tables: _Tables, against: GroundTable | None, *,
                key: data_keys.DataKey | None, pending: bool = False) -> Replay:
    common: dict[str, Any] = {
        "request_id": request.id, "partner_id": request.partner_id,
        "requester_body": request.requester_body, "reference": request.reference,
        "received_on": received_on(request.received_at), "reference_date": None,
        "subject_count": request.subject_count, "against_current": against is not None}
    if not decisions:
        return Replay(status=ReplayStatus.UNDECIDED, **common)
    engine_row = decisions[0]
    recorded = recorded_decision(engine_row)
    common |= {"ground_id": engine_row.ground_id, "ground_version": engine_row.ground_version,
               "table_hash": engine_row.table_hash, "recorded": recorded}
    table = against if against is not None else tables.get(engine_row.table_hash)
    parsed = parse_recorded(request, key, pending=pending)
    if isinstance(parsed, DisclosureRequest):
        common["reference_date"] = parsed.reference_date
    if isinstance(table, str):
        return Replay(status=ReplayStatus.CANNOT_REPLAY, problem=table, **common)
    common["replay_table_hash"] = table.hash
    common |= _citation(table, engine_row.ground_id, engine_row.ground_version)
    if request.valid and not isinstance(parsed, DisclosureRequest):
        codes = ", ".join(sorted({e.code for e in parsed.errors}))
        return Replay(status=ReplayStatus.CANNOT_REPLAY,
                      problem=f"the submission was recorded valid but no longer reads as a "
                              f"request ({codes})", **common)
    notes: list[str] = []
    try:
        decision = assess(parsed, Body(request.requester_body), table)
        if ReviewTrigger.SHIELDED_SUBJECT.value in {t["code"] for t in recorded[
                "review_triggers"]}:
            decision = with_review_trigger(decision, ReviewTrigger.SHIELDED_SUBJECT)
            notes.append(SHIELDED_NOTE)
    except (ValueError, DisclosureError) as exc:
        return Replay(status=ReplayStatus.CANNOT_REPLAY,
                      problem=f"the request cannot be assessed again: {exc}", **common)
    replayed = as_recorded(decision)
    fields = SUBSTANCE if against is not None else COMPARED
    differences = list(compare(recorded, replayed, fields=fields))
    if engine_row.sequence != 1 or engine_row.decided_by != ENGINE:
        differences.append(Difference("decided_by", f"{engine_row.decided_by} (decision "
                                      f"{engine_row.sequence})", f"{ENGINE} (decision 1)"))
    # A later decision of the engine sent the request back to review: a subject was shielded
    # after the decision in force (the register said so when the delivery read it). It must be
    # the engine's decision with the shielded-subject trigger.
    cycles = review_cycles(decisions)
    if len(cycles) > 1:
        again = as_recorded(with_review_trigger(decision, ReviewTrigger.SHIELDED_SUBJECT))
        for row, _ in cycles[1:]:
            differences += [Difference(f"decision {row.sequence} {d.field}", d.recorded,
                                       d.replayed)
                            for d in compare(recorded_decision(row), again, fields=fields)]
        notes.append(f"decision(s) {', '.join(str(r.sequence) for r, _ in cycles[1:])} sent the "
                     "request back to review: " + SHIELDED_AGAIN_NOTE)
    if against is not None:
        notes += _current_notes(recorded, replayed)
    review = None
    if engine_row.outcome == Outcome.NEEDS_REVIEW.value or len(decisions) > 1 or answers:
        try:
            review = review_account(cycles, answers, decision,
                                    None if against is not None else table)
        except ValueError as exc:  # a recorded category, verdict ... outside the vocabulary
            review = ReviewAccount(proposal=engine_row.proposal, answers=answers, decisions=(),
                                   checks=(Check("readable", False, f"the review does not read "
                                                                    f"as recorded: {exc}"),),
                                   pending=False)
    ok = not differences and (review is None or review.ok)
    return Replay(status=ReplayStatus.AGREES if ok else ReplayStatus.DIFFERS, replayed=replayed,
                  differences=tuple(differences), review=review, notes=tuple(notes), **common)


def _citation(table: GroundTable, ground_id: str | None,
              version_id: str | None) -> dict[str, str | None]:
    version = table_version(table, version_id)
    ground = table.get(ground_id) if ground_id else None
    citation = version.citation if version else ground.citation if ground else None
    return {"citation": citation.short if citation else None,
            "citation_url": citation.url if citation else None}


def _current_notes(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    notes = []
    if recorded["ground_version"] != replayed["ground_version"]:
        notes.append(f"today's table reads ground version {replayed['ground_version']} "
                     f"(recorded {recorded['ground_version']})")
    was, now = aspects(recorded), aspects(replayed)
    if was["reason_codes"] == now["reason_codes"] and (
            was["reason_citations"] != now["reason_citations"]):
        notes.append("today's table cites other text for the reasons")
    return notes

