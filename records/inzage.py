"""Inzage (AVG art. 15): every request that named a person, as the ledger recorded it.

Given a person's pseudonyms (:meth:`records.pseudonym.Pseudonymizer.subject` of their BSN and/or
onderwijsnummer) :func:`find_requests` returns one :class:`InzageEntry` per request that named
them: who asked (partner, body), when, under which ground and for what purpose, the decision in
force (outcome, categories released and withheld, when and by whom), the deliveries, the state,
and the ground's text as the decision read it (from the table snapshot the decision recorded).

Each entry also says whether it must stay out of the data subject's own answer
(:meth:`legal_bases.accountability.Accountability.restriction_for`, UAVG art. 41): the caller
writes restricted entries for the privacy officer only.

Looking a person up is itself a processing of their data: :func:`record_inzage` puts each
answer on the record (who asked the engine, about which pseudonyms, what was found), so a
look-up without a data subject's request behind it can be traced.

Invalid submissions are not found: the ledger records subjects (by pseudonym) only for valid
requests; an invalid one's raw body is kept, but nothing indexes who it named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from legal_bases.accountability import Accountability
from legal_bases.citation import Citation
from legal_bases.limits import AUDIT_IN_CHUNK
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Outcome
from records import chain
from records.chain import NewEvent
from records.decisions import in_chunks
from records.ledger import ENGINE, requests_by_pseudonym
from records.models import DecisionRow, DeliveryRow, RequestStatus, RequestSubject
from records.snapshots import load_table_snapshot
from records.timestamps import utc
from records.vocabulary import EventKind

_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_DELIVERIES: Table = DeliveryRow.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]


class EntryKind(StrEnum):
    """What a request came to for the person: data given, refused, or not decided yet."""

    DISCLOSURE = "disclosure"  # the decision in force releases categories (delivered or not yet)
    REFUSED = "refused"  # decided, nothing released
    PENDING = "pending"  # no decision in force yet: waiting for a legal reviewer


@dataclass(frozen=True, slots=True)
class GroundText:
    """The ground a decision applied, as the table it was read from words it."""

    ground_id: str
    version_id: str
    title: str
    citation: Citation
    pseudonymise: bool


@dataclass(frozen=True, slots=True)
class DecisionFact:
    """The decision in force on a request (the latest: a reviewer's replaces the engine's)."""

    decision_id: str
    sequence: int
    outcome: str
    released: tuple[str, ...]
    withheld: tuple[str, ...]
    decided_at: datetime
    decided_by: str
    reason_codes: tuple[str, ...]

    @property
    def by_reviewer(self) -> bool:
        """Whether a person (a legal reviewer) decided, not the engine on its own."""
        return self.decided_by != ENGINE


@dataclass(frozen=True, slots=True)
class DeliveryFact:
    """One recorded delivery of a request's data to the recipient."""

    delivery_id: str
    decision_id: str
    delivered_at: datetime
    status: str


@dataclass(frozen=True, slots=True)
class InzageEntry:
    """One request that named the person, with everything AVG art. 15 asks about it."""

    request_id: str
    reference: str | None
    received_at: datetime
    partner_id: str
    requester_body: str
    claimed_ground: str | None
    purpose: str | None
    id_types: tuple[str, ...]  # which of the person's identifiers the request named
    state: str | None
    decision: DecisionFact | None
    ground: GroundText | None
    deliveries: tuple[DeliveryFact, ...]
    restriction: Citation | None  # set: keep out of the subject's answer (UAVG art. 41)

    @property
    def kind(self) -> EntryKind:
        if self.decision is None or self.decision.outcome == Outcome.NEEDS_REVIEW.value:
            return EntryKind.PENDING
        return EntryKind.DISCLOSURE if self.decision.released else EntryKind.REFUSED

    @property
    def restricted(self) -> bool:
        return self.restriction is not None


def find_requests(*, session: Session, pseudonyms: Sequence[str], table: GroundTable,
                  accountability: Accountability) -> list[InzageEntry]:
    """Every request that named any of ``pseudonyms`` (one person's), oldest first.

    ``table`` is the table of grounds in force now and ``accountability`` its accountability
    data: together they decide which entries are restricted. Reads in batches, so a person named
    in many bulk requests costs a few queries per :data:`AUDIT_IN_CHUNK` requests.
    """
    accountability.check_covers(table)
    requests = requests_by_pseudonym(session=session, pseudonym=pseudonyms)
    ids = [r.id for r in requests]
    id_types = _id_types(session, ids, pseudonyms)
    decisions = _decisions_in_force(session, ids)
    deliveries = _deliveries(session, ids)
    states = _states(session, ids)
    texts = _GroundTexts(session)
    entries = []
    for r in requests:
        decision, pinned = decisions.get(r.id, (None, None))
        entries.append(InzageEntry(
            request_id=r.id, reference=r.reference, received_at=r.received_at,
            partner_id=r.partner_id, requester_body=r.requester_body,
            claimed_ground=r.legal_basis, purpose=r.purpose, id_types=id_types.get(r.id, ()),
            state=states.get(r.id), decision=decision, ground=texts.of(pinned),
            deliveries=deliveries.get(r.id, ()),
            restriction=accountability.restriction_for(ground_id=r.legal_basis,
                                                        body=r.requester_body, table=table)))
    return entries


def record_inzage(*, session: Session, pseudonyms: Sequence[str], counts: dict[str, int],
                  actor: str, answered_at: datetime) -> int:
    """Record that an inzage was answered (event ``inzage_answered``); returns its seq.

    ``pseudonyms`` are the person's, ``counts`` what the answer held (numbers only) and ``actor``
    who produced it. In the caller's transaction.
    """
    with session.begin_nested():
        [event] = chain.append_events(session=session, events=[NewEvent(
            kind=EventKind.INZAGE_ANSWERED.value, occurred_at=utc(answered_at), actor=actor,
            payload={"subjects": sorted(set(pseudonyms)), **counts})])
    return event.seq


def _id_types(session: Session, ids: Sequence[str],
              pseudonyms: Sequence[str]) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = {}
    wanted = list(dict.fromkeys(pseudonyms))
    for chunk in in_chunks(ids, AUDIT_IN_CHUNK):
        for row in session.execute(
                select(_SUBJECTS.c.request_id, _SUBJECTS.c.id_type)
                .where(_SUBJECTS.c.request_id.in_(chunk), _SUBJECTS.c.pseudonym.in_(wanted))):
            found.setdefault(row.request_id, set()).add(row.id_type)
    return {k: tuple(sorted(v)) for k, v in found.items()}


@dataclass(frozen=True, slots=True)
class _Pinned:
    """The law a decision pinned: the table it was read from and the ground version applied."""

    table_hash: str
    ground_id: str
    version_id: str


def _decisions_in_force(session: Session,
                        ids: Sequence[str]) -> dict[str, tuple[DecisionFact, _Pinned | None]]:
    latest: dict[str, tuple[DecisionFact, _Pinned | None]] = {}
    for chunk in in_chunks(ids, AUDIT_IN_CHUNK):
        for row in session.execute(select(_DECISIONS).where(_DECISIONS.c.request_id.in_(chunk))):
            held = latest.get(row.request_id)
            if held is not None and held[0].sequence >= row.sequence:
                continue
            fact = DecisionFact(
                decision_id=row.id, sequence=row.sequence, outcome=row.outcome,
                released=tuple(sorted(row.released)), withheld=tuple(sorted(row.withheld)),
                decided_at=row.decided_at, decided_by=row.decided_by,
                reason_codes=tuple(r["code"] for r in row.reasons))
            pinned = (_Pinned(row.table_hash, row.ground_id, row.ground_version)
                      if row.ground_id and row.ground_version else None)
            latest[row.request_id] = (fact, pinned)
    return latest


#: Tables rebuilt from the ledger's snapshots, by hash. A snapshot is checked against its hash
#: when rebuilt, so the hash fixes the content and one process may share them between answers
#: (and ledgers); a ledger holds one snapshot per change of the table, so this stays small.
_SNAPSHOT_TABLES: dict[str, GroundTable] = {}


class _GroundTexts:
    """Ground texts from the ledger's table snapshots, each snapshot rebuilt once."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def of(self, pinned: _Pinned | None) -> GroundText | None:
        if pinned is None:
            return None
        table = _SNAPSHOT_TABLES.get(pinned.table_hash)
        if table is None:
            table = _SNAPSHOT_TABLES[pinned.table_hash] = load_table_snapshot(
                session=self._session, table_hash=pinned.table_hash)
        version = table.version(pinned.version_id)
        ground = table.get(pinned.ground_id)
        return GroundText(ground_id=pinned.ground_id, version_id=version.id,
                          title=ground.title if ground else pinned.ground_id,
                          citation=version.citation, pseudonymise=version.pseudonymise)


def _deliveries(session: Session, ids: Sequence[str]) -> dict[str, tuple[DeliveryFact, ...]]:
    found: dict[str, list[DeliveryFact]] = {}
    for chunk in in_chunks(ids, AUDIT_IN_CHUNK):
        for row in session.execute(
                select(_DELIVERIES.c.id, _DELIVERIES.c.request_id, _DELIVERIES.c.decision_id,
                       _DELIVERIES.c.delivered_at, _DELIVERIES.c.status)
                .where(_DELIVERIES.c.request_id.in_(chunk))):
            found.setdefault(row.request_id, []).append(DeliveryFact(
                delivery_id=row.id, decision_id=row.decision_id, delivered_at=row.delivered_at,
                status=row.status))
    return {k: tuple(sorted(v, key=lambda d: (d.delivered_at, d.delivery_id)))
            for k, v in found.items()}


def _states(session: Session, ids: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in in_chunks(ids, AUDIT_IN_CHUNK):
        for row in session.execute(select(_STATUS.c.request_id, _STATUS.c.state)
                                   .where(_STATUS.c.request_id.in_(chunk))):
            found[row.request_id] = row.state
    return found
