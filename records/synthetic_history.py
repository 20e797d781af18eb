"""A synthetic history in the ledger: requests, decisions, reviews and deliveries as the pipeline
would have recorded them, written straight through ``records`` without Prefect.

For trying and measuring the audit tools (``benchmarks/audit.py``) and for their tests: every
request it writes is also returned as a :class:`Truth` — what was asked, about whom, what the
final decision released, whether a reviewer decided — so a test can count independently of the
queries it checks.

The requests follow the starter table's grounds and cover every outcome: approved, partially
approved, rejected for each kind of reason, invalid submissions, reviews that approve, narrow,
reject, need four eyes, wait past their deadline (overdue, escalated) or still wait. ``tables``
says which table of grounds the engine used from when, so a history can span a change of the law.
Subjects come from a pool of persons, so one person is named in several requests.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from legal_bases.assessment import assess
from legal_bases.decision import Decision
from legal_bases.identifiers import random_bsn, random_onderwijsnummer
from legal_bases.request import DisclosureRequest, Subject, read_request
from legal_bases.review import reviewed_decision
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReviewVerdict, SubjectIdType
from records.decisions import DecisionItem, record_decisions
from records.deliveries import DeliveryItem, record_deliveries
from records.ledger import received_on
from records.models import DecisionRow
from records.pseudonym import Pseudonymizer
from records.reviews import ReviewAnswerRow, record_answer, record_review_event
from records.submissions import Submission, record_submissions
from records.vocabulary import RequestState

#: The partner of each body in a synthetic history (id, OIN-like suffix not needed here).
PARTNERS: dict[Body, str] = {
    Body.BELASTINGDIENST: "belastingdienst-test",
    Body.TOESLAGEN: "toeslagen-test",
    Body.SVB: "svb-test",
    Body.UWV: "uwv-test",
    Body.GEMEENTE: "gemeente-utrecht-test",
    Body.OPENBAAR_MINISTERIE: "om-test",
    Body.CBS: "cbs-test",
    Body.INSPECTIE_ONDERWIJS: "inspectie-test",
    Body.ONDERWIJSINSTELLING: "school-test",
    Body.ONDERZOEKSINSTELLING: "onderzoek-test",
}
REVIEWERS = ("jurist-a", "jurist-b", "jurist-c")
MOTIVATION = "Getoetst aan de grondslag en de gevraagde categorieen; zie het dossier."


@dataclass(frozen=True)
class _Kind:
    """One kind of request: who asks under which ground for what (and how many subjects)."""

    body: Body
    ground: str
    purpose: str
    categories: tuple[str, ...]
    subjects: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    weight: int = 10


_CASE = {"case_reference": "ZAAK/2026/1"}
_RC = {"case_reference": "PV-2026-9", "authorisations": [
    {"kind": "rc_machtiging", "reference": "RC-2026-1", "issued_on": "2026-01-05"}]}
_AANWIJZING = {"authorisations": [{"kind": "ministeriele_aanwijzing", "reference": "MIN-1"}]}
KINDS: tuple[_Kind, ...] = (
    _Kind(Body.BELASTINGDIENST, "awr-55", "belastingheffing",
          ("personalia", "financiele_gegevens"), extra=_CASE, weight=20),
    _Kind(Body.BELASTINGDIENST, "awr-55", "belastingheffing",
          ("personalia", "gezondheid"), extra=_CASE, weight=4),  # partially approved
    _Kind(Body.BELASTINGDIENST, "awr-55", "belastingheffing", ("personalia",),
          weight=3),  # rejected: missing case reference
    _Kind(Body.TOESLAGEN, "awir-38", "toeslagen",
          ("personalia", "opleidingsgegevens", "financiele_gegevens"), subjects=3, weight=15),
    _Kind(Body.SVB, "suwi-54-svb", "kinderbijslag",
          ("opleidingsgegevens", "financiele_gegevens"), weight=8),  # partially approved
    _Kind(Body.UWV, "awr-55", "belastingheffing", ("personalia",), extra=_CASE,
          weight=3),  # rejected: not entitled
    _Kind(Body.UWV, "suwi-54-uwv", "werk_en_inkomen", ("personalia", "opleidingsgegevens"),
          weight=8),
    _Kind(Body.GEMEENTE, "participatiewet-64", "bijstand",
          ("personalia", "financiele_gegevens"), weight=8),
    _Kind(Body.GEMEENTE, "wro-21", "leerplicht", ("opleidingsgegevens", "gezondheid"),
          weight=5),  # review: special category (four eyes)
    _Kind(Body.GEMEENTE, "wro-21", "bijstand", ("personalia",), weight=2),  # purpose
    _Kind(Body.OPENBAAR_MINISTERIE, "sv-126nc", "strafrechtelijk_onderzoek",
          ("personalia", "identificerende_nummers"), extra=_CASE, weight=4),
    _Kind(Body.OPENBAAR_MINISTERIE, "sv-126nd", "strafrechtelijk_onderzoek",
          ("personalia", "contacthistorie", "technische_gegevens"), extra=_CASE,
          weight=4),  # review always
    _Kind(Body.OPENBAAR_MINISTERIE, "sv-126nf", "strafrechtelijk_onderzoek",
          ("gezondheid",), extra=_RC, weight=1),  # review, special category
    _Kind(Body.OPENBAAR_MINISTERIE, "sv-126nc", "strafrechtelijk_onderzoek",
          ("personalia",), subjects=2, extra=_CASE, weight=1),  # bulk not allowed
    _Kind(Body.CBS, "cbs-33", "statistiek", ("personalia", "opleidingsgegevens"),
          subjects=5, weight=6),
    _Kind(Body.INSPECTIE_ONDERWIJS, "wro-19", "onderwijstoezicht",
          ("opleidingsgegevens",), subjects=4, weight=4),
    _Kind(Body.ONDERZOEKSINSTELLING, "wro-23", "onderzoek", ("opleidingsgegevens",),
          subjects=3, extra=_AANWIJZING, weight=2),
    _Kind(Body.ONDERWIJSINSTELLING, "wro-20", "onderwijsadministratie",
          ("personalia", "opleidingsgegevens"), weight=4),
    _Kind(Body.ONDERWIJSINSTELLING, "wro-99", "onderwijsadministratie", ("personalia",),
          weight=1),  # unknown ground
)


@dataclass
class Truth:
    """What the generator recorded for one submission, for checks made independently."""

    request_id: str
    partner_id: str
    body: Body
    ground: str | None
    valid: bool
    subjects: tuple[Subject, ...]
    requested: tuple[str, ...]
    received_at: datetime
    engine_outcome: str
    outcome: str  # the decision in force (the reviewer's, if there is one)
    released: tuple[str, ...]
    decided_at: datetime
    reviewed: bool = False
    overridden: bool = False  # the reviewer released other than the engine proposed
    review_pending: bool = False
    delivered: bool = False
    deadline: date | None = None
    table_hash: str = ""
    decided_by: str = "engine"


@dataclass
class History:
    """The requests written, in order, and the persons they named."""

    truths: list[Truth]
    persons: list[Subject]

    def about(self, subject: Subject) -> list[Truth]:
        return [t for t in self.truths if subject in t.subjects]


def _persons(rng: random.Random, count: int) -> list[Subject]:
    out: dict[Subject, None] = {}
    while len(out) < count:
        if rng.random() < 0.1:
            out[Subject(SubjectIdType.ONDERWIJSNUMMER, random_onderwijsnummer(rng))] = None
        else:
            out[Subject(SubjectIdType.BSN, random_bsn(rng))] = None
    return list(out)


def _table_at(tables: Sequence[tuple[datetime, GroundTable]], at: datetime) -> GroundTable:
    chosen = tables[0][1]
    for since, table in tables:
        if since <= at:
            chosen = table
    return chosen


def _body(kind: _Kind, rng: random.Random, persons: list[Subject], reference: str,
          reference_date: date) -> dict[str, Any]:
    chosen = rng.sample(persons, kind.subjects)
    return {"reference": reference, "legal_basis": kind.ground, "purpose": kind.purpose,
            "reference_date": reference_date.isoformat(),
            "subjects": [{s.id_type.value: s.number} for s in chosen],
            "categories": list(kind.categories), **kind.extra}


def write_history(*, engine: Engine, pseudonymizer: Pseudonymizer,
                  tables: Sequence[tuple[datetime, GroundTable]], requests: int, seed: int,
                  start: datetime, end: datetime, persons: int = 200,
                  invalid_share: float = 0.03, batch: int = 500) -> History:
    """Write ``requests`` submissions received between ``start`` and ``end`` with everything the
    pipeline records after them; return what was written.

    ``tables`` lists (in force from, table) in time order; a decision is read from the table in
    force when it is made, with the request's reference date its day of receipt. Like the
    dispatcher, each ``batch`` of requests is decided and delivered in one transaction.
    """
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not secrets
    pool = _persons(rng, persons)
    span = (end - start).total_seconds()
    times = sorted(start + timedelta(seconds=rng.random() * span) for _ in range(requests))
    truths: list[Truth] = []
    for first in range(0, requests, batch):
        with Session(engine, expire_on_commit=False) as session, session.begin():
            writer = _Writer(session, rng, pool, pseudonymizer, tables)
            truths += writer.write(list(enumerate(times[first:first + batch], start=first)),
                                   invalid_share=invalid_share)
    return History(truths, pool)


class _Writer:
    """Writes one batch of a synthetic history in the caller's transaction."""

    def __init__(self, session: Session, rng: random.Random, pool: list[Subject],
                 pseudonymizer: Pseudonymizer,
                 tables: Sequence[tuple[datetime, GroundTable]]) -> None:
        self.session, self.rng, self.pool = session, rng, pool
        self.pseudonymizer, self.tables = pseudonymizer, tables
        self.weights = [k.weight for k in KINDS]

    def write(self, numbered: list[tuple[int, datetime]], *, invalid_share: float) -> list[Truth]:
        submitted = self._submit([self._draft(n, at, invalid_share) for n, at in numbered])
        engine_rows = self._decide(submitted)
        deliveries: list[DeliveryItem] = []
        for (truth, decision, table), row in zip(submitted, engine_rows, strict=True):
            final = row
            if decision.outcome is Outcome.NEEDS_REVIEW:
                final = self._review(table, decision, row, truth)
            if final.outcome in (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value):
                deliveries.append(DeliveryItem(
                    request_id=truth.request_id, decision_id=final.id,
                    partner_id=truth.partner_id, destination="file",
                    receipt={"sha256": uuid.uuid4().hex * 2},
                    delivered_at=final.decided_at + timedelta(seconds=self.rng.randint(1, 120)),
                    flow_run_id=row.flow_run_id, released=tuple(final.released),
                    counts={"records": len(truth.subjects), "not_found": 0}))
                truth.delivered = True
        record_deliveries(session=self.session, items=deliveries)
        return [truth for truth, _, _ in submitted]

    def _draft(self, n: int, received_at: datetime, invalid_share: float) -> tuple[
            _Kind, Submission]:
        kind = self.rng.choices(KINDS, self.weights)[0]
        day = received_on(received_at)
        body = _body(kind, self.rng, self.pool, f"SYN-{n:07d}", day)
        if self.rng.random() < invalid_share:
            body["subjects"] = [{"bsn": "123456789"}]  # fails the elfproef
        return kind, Submission(partner_id=PARTNERS[kind.body], requester_body=kind.body,
                                raw_body=json.dumps(body),
                                parsed=read_request(body, received_on=day),
                                received_at=received_at, data=body)

    def _submit(self, drafts: list[tuple[_Kind, Submission]],
                ) -> list[tuple[Truth, Decision, GroundTable]]:
        recorded = record_submissions(session=self.session, submissions=[s for _, s in drafts],
                                      pseudonymizer=self.pseudonymizer)
        out: list[tuple[Truth, Decision, GroundTable]] = []
        for (kind, submission), row in zip(drafts, recorded, strict=True):
            parsed, received_at = submission.parsed, submission.received_at
            decided_at = received_at + timedelta(seconds=self.rng.randint(2, 600))
            table = _table_at(self.tables, decided_at)
            decision = assess(parsed, kind.body, table)
            valid = isinstance(parsed, DisclosureRequest)
            out.append((Truth(
                request_id=row.request_id, partner_id=submission.partner_id, body=kind.body,
                ground=kind.ground, valid=valid,
                subjects=parsed.subjects if isinstance(parsed, DisclosureRequest) else (),
                requested=kind.categories, received_at=received_at,
                engine_outcome=decision.outcome.value, outcome=decision.outcome.value,
                released=tuple(c.value for c in decision.released), decided_at=decided_at,
                table_hash=table.hash), decision, table))
        return out

    def _decide(self, submitted: list[tuple[Truth, Decision, GroundTable]]) -> list[DecisionRow]:
        """Record the engine's decisions, one call per table (as one dispatcher batch would)."""
        flow_run = str(uuid.uuid4())
        rows: dict[str, DecisionRow] = {}
        by_table: dict[str, list[tuple[Truth, Decision, GroundTable]]] = {}
        for item in submitted:
            by_table.setdefault(item[2].hash, []).append(item)
        for items in by_table.values():
            recorded = record_decisions(session=self.session, table=items[0][2], items=[
                DecisionItem(request_id=truth.request_id, decision=decision,
                             decided_at=truth.decided_at, flow_run_id=flow_run)
                for truth, decision, _ in items])
            rows.update((row.request_id, row) for row in recorded)
        for truth, _, _ in submitted:
            truth.deadline = rows[truth.request_id].deadline
        return [rows[truth.request_id] for truth, _, _ in submitted]

    def _answer(self, truth: Truth, seq: int, reviewer: str, verdict: ReviewVerdict,
                release: Sequence[str], *, step: str, at: datetime) -> None:
        record_answer(session=self.session, answer=ReviewAnswerRow(
            request_id=truth.request_id, seq=seq, reviewer_id=reviewer, role="jurist",
            verdict=verdict.value, categories=sorted(release), motivation=MOTIVATION,
            accepted=True, step=step, answered_at=at, flow_run_id=None))

    def _review(self, table: GroundTable, decision: Decision, engine_row: DecisionRow,
                truth: Truth) -> DecisionRow:
        """A reviewer's decision on the engine's proposal, or a review still waiting."""
        assert decision.proposal is not None
        assert engine_row.deadline is not None
        proposal = tuple(c.value for c in decision.proposal.released)
        roll = self.rng.random()
        deadline_at = datetime.combine(engine_row.deadline, datetime.min.time(),
                                       tzinfo=engine_row.decided_at.tzinfo)
        if roll < 0.12:  # still waiting; past its deadline it was marked overdue and escalated
            truth.review_pending = True
            if deadline_at < truth.received_at + timedelta(days=60) and self.rng.random() < 0.5:
                self._escalate(truth.request_id, engine_row.deadline, deadline_at)
            return engine_row
        late = self.rng.random() < 0.1
        answered = (deadline_at + timedelta(days=self.rng.randint(1, 5)) if late
                    else engine_row.decided_at + timedelta(hours=self.rng.randint(1, 72)))
        if roll < 0.55 or len(proposal) < 2:
            verdict, release = ((ReviewVerdict.APPROVE, proposal) if roll < 0.8
                                else (ReviewVerdict.REJECT, ()))
        else:
            verdict, release = ReviewVerdict.APPROVE_PARTIALLY, proposal[:1]
        first, second = self.rng.sample(REVIEWERS, 2)
        if any(Category(c).special for c in release):  # four eyes
            self._answer(truth, 0, first, verdict, release, step="first", at=answered)
            answered += timedelta(hours=2)
            self._answer(truth, 1, second, ReviewVerdict.APPROVE, release, step="second",
                         at=answered)
            decided_by = f"{first}+{second}"
        else:
            self._answer(truth, 0, first, verdict, release, step="single", at=answered)
            decided_by = first
        version = table.version(engine_row.ground_version or "")
        reviewed = reviewed_decision(decision, version, tuple(Category(c) for c in release))
        [row] = record_decisions(session=self.session, table=table, items=[DecisionItem(
            request_id=truth.request_id, decision=reviewed, decided_at=answered,
            decided_by=decided_by, deadline=engine_row.deadline)])
        truth.reviewed = True
        truth.overridden = tuple(sorted(release)) != tuple(sorted(proposal))
        truth.outcome, truth.released = row.outcome, tuple(row.released)
        truth.decided_at, truth.decided_by = answered, decided_by
        return row

    def _escalate(self, request_id: str, deadline: date, deadline_at: datetime) -> None:
        payload = {"deadline": deadline.isoformat()}
        record_review_event(session=self.session, request_id=request_id, kind="review_overdue",
                            now=deadline_at + timedelta(hours=1), payload=payload)
        record_review_event(session=self.session, request_id=request_id,
                            kind="review_escalated", now=deadline_at + timedelta(days=1),
                            payload=payload, state=RequestState.ESCALATED.value)
