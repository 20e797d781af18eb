"""Replay: every recorded decision re-derived from the ledger alone, years later.

A request is read again exactly as at intake (:func:`parse_recorded`: its raw body as received,
its day of receipt) and assessed against the table of grounds recorded with its decision — the
snapshot the ledger stored under the decision's ``table_hash``, never the table in the repo —
and the result is compared field by field with what was recorded: outcome, released and
withheld categories, reason codes and their citations, review triggers, proposal, ground,
ground version and table hash. Snapshots are parsed once per hash and shared by every request
that used them.

A request that went to review gets an account of it: the engine's proposal, every answer on the
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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

from sqlalchemy import Engine, Row, Table, select, text
from sqlalchemy.orm import Session

from legal_bases import limits
from legal_bases.assessment import assess, with_review_trigger
from legal_bases.decision import Decision
from legal_bases.errors import DisclosureError, FieldError
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest, InvalidRequest, read_request_text
from legal_bases.review import Accepted, ReviewAnswer, check_answer, reviewed_decision
from legal_bases.table import GroundTable
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    Body,
    Category,
    Outcome,
    ReviewTrigger,
    ReviewVerdict,
)
from records.db import read_only
from records.errors import SnapshotMissingError
from records.ledger import (
    ENGINE,
    load_table_snapshot,
    local_days,
    received_on,
)
from records.models import DecisionRow, RequestRow
from records.reviews import ReviewAnswerRow

#: A row of a Core select (SQLAlchemy 2.1 types rows by their columns).
_Row: TypeAlias = Row[*tuple[Any, ...]]
_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_ANSWERS: Table = ReviewAnswerRow.__table__  # type: ignore[attr-defined]
_REQUEST_COLUMNS = (_REQUESTS.c.id, _REQUESTS.c.partner_id, _REQUESTS.c.requester_body,
                    _REQUESTS.c.reference, _REQUESTS.c.received_at, _REQUESTS.c.raw_body,
                    _REQUESTS.c.valid, _REQUESTS.c.subject_count,
                    _REQUESTS.c.validation_errors, _REQUESTS.c.legal_basis)
#: The fields of a decision replay compares, in the order differences are named.
COMPARED = ("outcome", "released", "withheld", "reason_codes", "reason_citations",
            "reason_categories", "review_triggers", "review_trigger_citations", "proposal",
            "ground_id", "ground_version", "table_hash")
#: What still counts against today's table (the rest differs whenever the table was edited).
SUBSTANCE = ("outcome", "released", "withheld", "reason_codes", "reason_categories",
             "review_triggers", "proposal", "ground_id")
_SPECIAL = frozenset(c.value for c in SPECIAL_CATEGORIES)
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


def parse_recorded(row: RecordedSubmission) -> DisclosureRequest | InvalidRequest:
    """A recorded submission read again exactly as at intake (the same day of receipt).

    A submission recorded as invalid stays invalid, with the errors recorded at intake, whatever
    its text reads as today: the intake refused it (a ``409`` reference conflict, a ``403``, a
    revoked key) although its body may be a well-formed request, and nothing refused is ever
    released. Only a submission recorded as valid is read again from its raw body.
    """
    if not row.valid:
        return recorded_refusal(row.validation_errors, row.legal_basis)
    return read_recorded(row.raw_body, row.received_at)


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


# --- results -------------------------------------------------------------------------------------

class ReplayStatus(StrEnum):
    """What replay found for one request."""

    AGREES = "agrees"  # the recorded decisions re-derive (and the review checks pass)
    DIFFERS = "differs"  # a field differs, or a review check failed
    CANNOT_REPLAY = "cannot_replay"  # no snapshot, or the submission no longer reads
    UNDECIDED = "undecided"  # received, no decision recorded yet: nothing to replay


@dataclass(frozen=True, slots=True)
class Difference:
    """One field in which the replayed decision differs from the recorded one."""

    field: str
    recorded: Any
    replayed: Any

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "recorded": self.recorded, "replayed": self.replayed}


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer given on the request's review form, as recorded."""

    seq: int
    reviewer_id: str
    role: str | None
    verdict: str
    categories: tuple[str, ...]
    motivation: str
    step: str | None
    accepted: bool
    refusal_code: str | None
    refusal_message: str | None
    answered_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "reviewer_id": self.reviewer_id, "role": self.role,
                "verdict": self.verdict, "categories": list(self.categories),
                "motivation": self.motivation, "step": self.step, "accepted": self.accepted,
                "refusal_code": self.refusal_code, "refusal_message": self.refusal_message,
                "answered_at": self.answered_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a reviewed decision: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ReviewedDecision:
    """A decision recorded after the engine's (a reviewer's), as recorded."""

    sequence: int
    outcome: str
    released: tuple[str, ...]
    withheld: tuple[str, ...]
    decided_by: str
    decided_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "outcome": self.outcome,
                "released": list(self.released), "withheld": list(self.withheld),
                "decided_by": self.decided_by, "decided_at": self.decided_at.isoformat()}


@dataclass(frozen=True, slots=True)
class ReviewAccount:
    """How a request's review went: the engine's proposal, the answers, what was decided, and the
    checks of that decision (none against today's table). ``pending``: nobody decided yet."""

    proposal: dict[str, list[str]] | None
    answers: tuple[Answer, ...]
    decisions: tuple[ReviewedDecision, ...]
    checks: tuple[Check, ...]
    pending: bool

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"proposal": self.proposal, "answers": [a.to_dict() for a in self.answers],
                "decisions": [d.to_dict() for d in self.decisions],
                "checks": [c.to_dict() for c in self.checks], "pending": self.pending,
                "ok": self.ok}


@dataclass(frozen=True, slots=True)
class Replay:
    """The replay of one request: the engine's decision as recorded and as replayed, the fields
    that differ, why it could not be replayed (``problem``), and the review account."""

    request_id: str
    partner_id: str
    requester_body: str
    reference: str | None
    received_on: date
    reference_date: date | None
    subject_count: int | None
    status: ReplayStatus
    ground_id: str | None = None
    ground_version: str | None = None
    citation: str | None = None
    citation_url: str | None = None
    table_hash: str | None = None  # the table the engine's decision was recorded with
    replay_table_hash: str | None = None  # the table it was replayed against
    against_current: bool = False
    recorded: dict[str, Any] | None = None
    replayed: dict[str, Any] | None = None
    differences: tuple[Difference, ...] = ()
    problem: str | None = None
    review: ReviewAccount | None = None
    notes: tuple[str, ...] = ()

    @property
    def agrees(self) -> bool:
        return self.status is ReplayStatus.AGREES

    @property
    def recorded_outcome(self) -> str | None:
        return None if self.recorded is None else str(self.recorded["outcome"])

    @property
    def replayed_outcome(self) -> str | None:
        return None if self.replayed is None else str(self.replayed["outcome"])

    @property
    def differing_fields(self) -> tuple[str, ...]:
        failed = tuple(f"review:{c.name}" for c in (self.review.checks if self.review else ())
                       if not c.ok)
        return tuple(d.field for d in self.differences) + failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "partner_id": self.partner_id,
            "requester_body": self.requester_body, "reference": self.reference,
            "received_on": self.received_on.isoformat(),
            "reference_date": self.reference_date.isoformat() if self.reference_date else None,
            "subject_count": self.subject_count, "status": self.status.value,
            "ground_id": self.ground_id, "ground_version": self.ground_version,
            "citation": self.citation, "citation_url": self.citation_url,
            "table_hash": self.table_hash, "replay_table_hash": self.replay_table_hash,
            "against_current": self.against_current, "recorded": self.recorded,
            "replayed": self.replayed, "differences": [d.to_dict() for d in self.differences],
            "problem": self.problem,
            "review": self.review.to_dict() if self.review else None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """The totals of a replay of many requests, and the ones that did not agree."""

    first: date | None
    last: date | None
    against: str | None  # the hash of today's table, with --against-current
    requests: int
    agrees: int
    differs: int
    cannot_replay: int
    undecided: int
    reviewed: int
    review_checks_failed: int
    tables: tuple[tuple[str, int], ...]  # (table hash, requests replayed against it)
    not_agreeing: tuple[Replay, ...] = field(repr=False)

    @property
    def replayed(self) -> int:
        return self.agrees + self.differs

    @property
    def all_agree(self) -> bool:
        return self.differs == 0 and self.cannot_replay == 0

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first.isoformat() if self.first else None,
                "last": self.last.isoformat() if self.last else None,
                "against": self.against, "requests": self.requests, "agrees": self.agrees,
                "differs": self.differs, "cannot_replay": self.cannot_replay,
                "undecided": self.undecided, "reviewed": self.reviewed,
                "review_checks_failed": self.review_checks_failed,
                "tables": [{"table_hash": h, "requests": n} for h, n in self.tables]}


@dataclass
class Tally:
    """Counts replays as they stream by and keeps the ones that do not agree."""

    first: date | None = None
    last: date | None = None
    against: str | None = None
    counts: dict[ReplayStatus, int] = field(default_factory=lambda: dict.fromkeys(ReplayStatus, 0))
    reviewed: int = 0
    review_checks_failed: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    not_agreeing: list[Replay] = field(default_factory=list)

    def add(self, replay: Replay) -> None:
        self.counts[replay.status] += 1
        if replay.review is not None and replay.review.decisions and (
                replay.recorded_outcome == Outcome.NEEDS_REVIEW.value):
            self.reviewed += 1
            self.review_checks_failed += not replay.review.ok
        if replay.replay_table_hash is not None:
            self.tables[replay.replay_table_hash] = self.tables.get(
                replay.replay_table_hash, 0) + 1
        if replay.status in (ReplayStatus.DIFFERS, ReplayStatus.CANNOT_REPLAY):
            self.not_agreeing.append(replay)

    def summary(self) -> Summary:
        return Summary(
            first=self.first, last=self.last, against=self.against,
            requests=sum(self.counts.values()), agrees=self.counts[ReplayStatus.AGREES],
            differs=self.counts[ReplayStatus.DIFFERS],
            cannot_replay=self.counts[ReplayStatus.CANNOT_REPLAY],
            undecided=self.counts[ReplayStatus.UNDECIDED], reviewed=self.reviewed,
            review_checks_failed=self.review_checks_failed,
            tables=tuple(sorted(self.tables.items(), key=lambda item: -item[1])),
            not_agreeing=tuple(self.not_agreeing))


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


def summarise(replays: Iterable[Replay], *, first: date | None = None, last: date | None = None,
              against: GroundTable | None = None) -> Summary:
    """The totals of ``replays`` (consumed as they come)."""
    tally = Tally(first=first, last=last, against=against.hash if against else None)
    for replay in replays:
        tally.add(replay)
    return tally.summary()


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


def _replay_batch(session: Session, requests: Sequence[_Row], tables: _Tables,
                  against: GroundTable | None) -> Iterator[Replay]:
    ids = [r.id for r in requests]
    decisions: dict[str, list[_Row]] = {i: [] for i in ids}
    for row in session.execute(select(_DECISIONS).where(_DECISIONS.c.request_id.in_(ids))
                               .order_by(_DECISIONS.c.request_id, _DECISIONS.c.sequence)):
        decisions[row.request_id].append(row)
    answers: dict[str, list[Answer]] = {i: [] for i in ids}
    for row in session.execute(select(_ANSWERS).where(_ANSWERS.c.request_id.in_(ids))
                               .order_by(_ANSWERS.c.request_id, _ANSWERS.c.seq)):
        answers[row.request_id].append(Answer(
            seq=row.seq, reviewer_id=row.reviewer_id, role=row.role, verdict=row.verdict,
            categories=tuple(row.categories), motivation=row.motivation, step=row.step,
            accepted=row.accepted, refusal_code=row.refusal_code,
            refusal_message=row.refusal_message, answered_at=row.answered_at))
    for request in requests:
        yield _replay_one(request, decisions[request.id], tuple(answers[request.id]), tables,
                          against)


def _recorded(row: _Row) -> dict[str, Any]:
    return {"outcome": row.outcome, "released": list(row.released),
            "withheld": list(row.withheld), "reasons": list(row.reasons),
            "review_triggers": list(row.review_triggers), "proposal": row.proposal,
            "ground_id": row.ground_id, "ground_version": row.ground_version,
            "table_hash": row.table_hash}


def _as_recorded(decision: Decision) -> dict[str, Any]:
    """A decision in the shape its row records it."""
    return {"outcome": decision.outcome.value,
            "released": [c.value for c in decision.released],
            "withheld": [c.value for c in decision.withheld],
            "reasons": [r.to_dict() for r in decision.reasons],
            "review_triggers": [r.to_dict() for r in decision.review_triggers],
            "proposal": decision.proposal.to_dict() if decision.proposal else None,
            "ground_id": decision.ground_id, "ground_version": decision.ground_version,
            "table_hash": decision.table_hash}


def _aspects(decision: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a decision (see :data:`COMPARED`)."""
    reasons, triggers = decision["reasons"], decision["review_triggers"]
    return {
        "outcome": decision["outcome"], "released": decision["released"],
        "withheld": decision["withheld"],
        "reason_codes": [r["code"] for r in reasons],
        "reason_citations": [[r["code"], r["citation"]] for r in reasons],
        "reason_categories": [[r["code"], r.get("categories", [])] for r in reasons],
        "review_triggers": [t["code"] for t in triggers],
        "review_trigger_citations": [[t["code"], t["citation"]] for t in triggers],
        "proposal": decision["proposal"], "ground_id": decision["ground_id"],
        "ground_version": decision["ground_version"], "table_hash": decision["table_hash"],
    }


def compare(recorded: dict[str, Any], replayed: dict[str, Any], *,
            fields: Sequence[str] = COMPARED) -> tuple[Difference, ...]:
    """The fields (of ``fields``) in which two decisions, in their recorded shape, differ."""
    was, now = _aspects(recorded), _aspects(replayed)
    return tuple(Difference(name, was[name], now[name]) for name in fields
                 if was[name] != now[name])


def _replay_one(request: _Row, decisions: list[_Row], answers: tuple[Answer, ...],
                tables: _Tables, against: GroundTable | None) -> Replay:
    common: dict[str, Any] = {
        "request_id": request.id, "partner_id": request.partner_id,
        "requester_body": request.requester_body, "reference": request.reference,
        "received_on": received_on(request.received_at), "reference_date": None,
        "subject_count": request.subject_count, "against_current": against is not None}
    if not decisions:
        return Replay(status=ReplayStatus.UNDECIDED, **common)
    engine_row = decisions[0]
    recorded = _recorded(engine_row)
    common |= {"ground_id": engine_row.ground_id, "ground_version": engine_row.ground_version,
               "table_hash": engine_row.table_hash, "recorded": recorded}
    table = against if against is not None else tables.get(engine_row.table_hash)
    parsed = parse_recorded(request)
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
    replayed = _as_recorded(decision)
    fields = SUBSTANCE if against is not None else COMPARED
    differences = list(compare(recorded, replayed, fields=fields))
    if engine_row.sequence != 1 or engine_row.decided_by != ENGINE:
        differences.append(Difference("decided_by", f"{engine_row.decided_by} (decision "
                                      f"{engine_row.sequence})", f"{ENGINE} (decision 1)"))
    # A later decision of the engine sent the request back to review: a subject was shielded
    # after the decision in force (the register said so when the delivery read it). It must be
    # the engine's decision with the shielded-subject trigger.
    cycles = _cycles(decisions)
    if len(cycles) > 1:
        again = _as_recorded(with_review_trigger(decision, ReviewTrigger.SHIELDED_SUBJECT))
        for row, _ in cycles[1:]:
            differences += [Difference(f"decision {row.sequence} {d.field}", d.recorded,
                                       d.replayed)
                            for d in compare(_recorded(row), again, fields=fields)]
        notes.append(f"decision(s) {', '.join(str(r.sequence) for r, _ in cycles[1:])} sent the "
                     "request back to review: " + SHIELDED_AGAIN_NOTE)
    if against is not None:
        notes += _current_notes(recorded, replayed)
    review = None
    if engine_row.outcome == Outcome.NEEDS_REVIEW.value or len(decisions) > 1 or answers:
        try:
            review = _reviews(cycles, answers, decision, None if against is not None else table)
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
    version = _version(table, version_id)
    ground = table.get(ground_id) if ground_id else None
    citation = version.citation if version else ground.citation if ground else None
    return {"citation": citation.short if citation else None,
            "citation_url": citation.url if citation else None}


def _version(table: GroundTable, version_id: str | None) -> GroundVersion | None:
    if version_id is None:
        return None
    try:
        return table.version(version_id)
    except DisclosureError:
        return None


def _current_notes(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    notes = []
    if recorded["ground_version"] != replayed["ground_version"]:
        notes.append(f"today's table reads ground version {replayed['ground_version']} "
                     f"(recorded {recorded['ground_version']})")
    was, now = _aspects(recorded), _aspects(replayed)
    if was["reason_codes"] == now["reason_codes"] and (
            was["reason_citations"] != now["reason_citations"]):
        notes.append("today's table cites other text for the reasons")
    return notes


# --- review --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Decisive:
    """The accepted answers that decided a review, and the release they add up to."""

    first: Answer | None
    last: Answer
    release: tuple[Category, ...]


def _cycles(decisions: Sequence[_Row]) -> list[tuple[_Row, list[_Row]]]:
    """The decisions in review cycles: the first decision with the ones after it, up to a later
    decision of the engine that sent the request back to review (``needs_review``: a subject
    shielded since), which opens the next. Any other later decision stays in its cycle, where
    the review account finds nothing that explains it."""
    cycles: list[tuple[_Row, list[_Row]]] = []
    for row in decisions:
        if not cycles or (row.decided_by == ENGINE
                          and row.outcome == Outcome.NEEDS_REVIEW.value):
            cycles.append((row, []))
        else:
            cycles[-1][1].append(row)
    return cycles


def _reviews(cycles: Sequence[tuple[_Row, list[_Row]]], answers: tuple[Answer, ...],
             engine: Decision, table: GroundTable | None) -> ReviewAccount:
    """The review account over every cycle: each cycle's answers are those given after its
    engine decision and before the next; the checks of each cycle (named by the engine decision
    they answer when there is more than one cycle)."""
    if len(cycles) == 1:
        row, later = cycles[0]
        return _review(row, later, answers, engine, table)
    accounts: list[ReviewAccount] = []
    for i, (row, later) in enumerate(cycles):
        until = cycles[i + 1][0].decided_at if i + 1 < len(cycles) else None
        mine = tuple(a for a in answers if a.answered_at >= row.decided_at
                     and (until is None or a.answered_at < until))
        cycle_engine = engine if i == 0 else with_review_trigger(
            engine, ReviewTrigger.SHIELDED_SUBJECT)
        account = _review(row, later, mine, cycle_engine, table)
        accounts.append(_with(account, [Check(c.name, c.ok, f"decision {row.sequence}: {c.detail}")
                                        for c in account.checks]))
    counted = sum(len(a.answers) for a in accounts)
    checks = [c for a in accounts for c in a.checks]
    if counted != len(answers):
        checks.append(Check("explained", False, f"{len(answers) - counted} review answer(s) "
                            "were given before the engine sent the request to review"))
    last = accounts[-1]
    return ReviewAccount(proposal=last.proposal, answers=answers,
                         decisions=tuple(d for a in accounts for d in a.decisions),
                         checks=tuple(checks), pending=last.pending)


def _review(engine_row: _Row, later: Sequence[_Row], answers: tuple[Answer, ...],
            engine: Decision, table: GroundTable | None) -> ReviewAccount:
    decisions = tuple(ReviewedDecision(
        sequence=row.sequence, outcome=row.outcome, released=tuple(row.released),
        withheld=tuple(row.withheld), decided_by=row.decided_by, decided_at=row.decided_at)
        for row in later)
    proposal = engine_row.proposal
    pending = engine_row.outcome == Outcome.NEEDS_REVIEW.value and not later
    account = ReviewAccount(proposal=proposal, answers=answers, decisions=decisions, checks=(),
                            pending=pending)
    if table is None:  # against today's table: the account only, no checks
        return account
    checks: list[Check] = []
    if engine_row.outcome != Outcome.NEEDS_REVIEW.value:
        if later or answers:
            checks.append(Check("explained", False, (
                f"the engine decided {engine_row.outcome}, yet "
                f"{len(later)} later decision(s) and {len(answers)} review answer(s) are "
                "recorded: nothing sent this request to review")))
        return _with(account, checks)
    proposed = tuple(Category(c) for c in (proposal or {}).get("released", []))
    decisive, problems = _decisive(answers, proposed)
    checks.append(Check("answers_follow_rules", not problems,
                        "; ".join(problems) or "every accepted answer passes the review rules"))
    if not later:
        if decisive is not None:
            checks.append(Check("explained", False, (
                f"answer {decisive.last.seq} by {decisive.last.reviewer_id} decided the review, "
                "but no reviewed decision is recorded")))
        return _with(account, checks)
    reviewed, extra = later[0], later[1:]
    if extra:
        checks.append(Check("explained", False, (
            f"decision(s) {', '.join(str(r.sequence) for r in extra)} follow the reviewed "
            "decision without any review or correction that explains them")))
    version = _version(table, engine_row.ground_version)
    checks.append(_within_bounds(reviewed, proposed, version))
    checks.append(_re_derives(reviewed, decisive, engine, version))
    checks.append(_four_eyes(reviewed, decisive))
    return _with(account, checks)


def _with(account: ReviewAccount, checks: list[Check]) -> ReviewAccount:
    return ReviewAccount(proposal=account.proposal, answers=account.answers,
                         decisions=account.decisions, checks=tuple(checks),
                         pending=account.pending)


def _as_answer(answer: Answer) -> ReviewAnswer:
    return ReviewAnswer(answer.reviewer_id, ReviewVerdict(answer.verdict),
                        tuple(Category(c) for c in answer.categories), answer.motivation)


def _decisive(answers: tuple[Answer, ...], proposal: tuple[Category, ...],
              ) -> tuple[_Decisive | None, list[str]]:
    """Walk the accepted answers as the review flow took them: the first of four eyes waits for
    a second, a single or second answer decides. Each is checked again against the rules."""
    problems: list[str] = []
    first: Answer | None = None
    for answer in answers:
        if not answer.accepted:
            continue
        try:
            given = _as_answer(answer)
            checked = check_answer(given, proposal=proposal,
                                   first=_as_answer(first) if first is not None else None)
        except ValueError as exc:
            problems.append(f"answer {answer.seq} does not read: {exc}")
            continue
        if not isinstance(checked, Accepted):
            problems.append(f"answer {answer.seq} by {answer.reviewer_id} was accepted but the "
                            f"rules refuse it ({checked.code}: {checked.message})")
            continue
        if checked.needs_second:
            if answer.step != "first":
                problems.append(f"answer {answer.seq} releases a special category and needs a "
                                f"second reviewer, but is recorded as step {answer.step}")
            first = answer
            continue
        if answer.step == "first":
            problems.append(f"answer {answer.seq} is recorded as a first of two but needs no "
                            "second reviewer")
        return _Decisive(first, answer, checked.release), problems
    return None, problems


def _within_bounds(reviewed: _Row, proposal: tuple[Category, ...],
                   version: GroundVersion | None) -> Check:
    released = list(reviewed.released)
    beyond_proposal = [c for c in released if c not in {p.value for p in proposal}]
    allowed = {c.value for c in version.releasable} if version is not None else set()
    beyond_ground = [c for c in released if c not in allowed]
    problems = []
    if beyond_proposal:
        problems.append(f"released {', '.join(beyond_proposal)} beyond the engine's proposal "
                        f"({', '.join(p.value for p in proposal) or 'nothing'})")
    if version is None:
        problems.append(f"the ground version {reviewed.ground_version} is not in the table")
    elif beyond_ground:
        problems.append(f"released {', '.join(beyond_ground)} which ground version "
                        f"{version.id} does not allow")
    return Check("within_bounds", not problems, "; ".join(problems) or (
        f"released {', '.join(released) or 'nothing'}: within the proposal and the ground "
        "version's categories"))


def _re_derives(reviewed: _Row, decisive: _Decisive | None, engine: Decision,
                version: GroundVersion | None) -> Check:
    if decisive is None:
        return Check("re_derives", False, "a reviewed decision is recorded but no accepted "
                                          "answer decided it")
    if version is None or engine.proposal is None:
        return Check("re_derives", False, "the engine's replayed decision did not go to review "
                                          "under a known ground version")
    expected = _as_recorded(reviewed_decision(engine, version, decisive.release))
    differences = compare(_recorded(reviewed), expected)
    if differences:
        return Check("re_derives", False, "the reviewed decision differs from the one the "
                     f"accepted answers give in: {', '.join(d.field for d in differences)}")
    return Check("re_derives", True, f"re-derives from answer {decisive.last.seq}"
                 + (f" after answer {decisive.first.seq}" if decisive.first else ""))


def _four_eyes(reviewed: _Row, decisive: _Decisive | None) -> Check:
    special = sorted(c for c in reviewed.released if c in _SPECIAL)
    if decisive is None:
        return Check("four_eyes", not special, "no answer that passes the review rules "
                                               "decided, so who decided is not accounted for")
    deciders = [a.reviewer_id for a in (decisive.first, decisive.last) if a is not None]
    problems = []
    expected = "+".join(deciders)
    if reviewed.decided_by != expected:
        problems.append(f"decided_by is {reviewed.decided_by!r}, the answers say {expected!r}")
    if special and (len(deciders) != 2 or deciders[0] == deciders[1]):
        problems.append(f"special categor{'ies' if len(special) > 1 else 'y'} "
                        f"{', '.join(special)} released without two different reviewers")
    if problems:
        return Check("four_eyes", False, "; ".join(problems))
    if special:
        return Check("four_eyes", True, f"{', '.join(special)} released by two reviewers, "
                                        f"{deciders[0]} and {deciders[1]}")
    return Check("four_eyes", True, f"no special category released; decided by {expected}")
