"""Statistics for the transparency report: what the requests of a period asked and what became of
them, counted from the ledger (issue #6).

A request belongs to a period by its **day of receipt** in the Netherlands
(:func:`records.ledger.received_on`); the query asks for the equivalent range of ``received_at``
(Amsterdam midnight to Amsterdam midnight, in UTC). Each request is counted once, under its
requesting body, the ground it **claimed** (``—`` if it named none) and the outcome of the
**decision in force** (the highest ``sequence``): ``needs_review`` while a reviewer has not
decided, ``undecided`` if nothing was decided yet, and ``rejected`` for every invalid submission.

Per group of requests (:class:`Tally`):

* ``requests``; ``subjects``: the subjects they named (sum of ``subject_count``);
  ``subjects_affected``: distinct subjects (pseudonyms) of the requests whose decision in force
  released something — distinct within the group, so it does not add up across groups. Once a
  request of a year is to be shredded under retention, the year's distinct counts are first
  frozen on the chain (:func:`freeze_year`, a ``subject_counts_frozen`` event with counts only)
  and read from there, so the report keeps them while nothing links a shredded request to
  anyone;
* released categories: per category, the requests that released it and the subject-releases
  (the subjects of those requests);
* time to decision: ``received_at`` → ``decided_at`` of the decision in force, in days, over the
  decided requests (not ``needs_review``/``undecided``); the median of all, of those the engine
  decided alone, and of those a reviewer decided;
* ``reviewed``: requests with a reviewer's decision (a ``sequence`` after 1); ``overridden``: of
  those, the ones whose decision in force released other categories than the engine proposed
  (decision 1's ``proposal.released``);
* ``deadlines_missed``: the decision in force was made after the end of its deadline day
  (Amsterdam), or the request still awaits review and its deadline day ended before the report's
  cut-off: the end of the period or now, whichever is earlier. The cut-off is the whole report's,
  also for the quarters or months of a breakdown, so they add up to the year.

The work is a fixed number of queries over the period, whatever its size: one streamed pass over
its requests joined with their decision in force (medians need the values), and SQL aggregates
for the distinct subjects (per row, per quarter or month, per body, in all). Nothing here returns
a pseudonym: the report holds counts only.
"""

from __future__ import annotations

import re
import statistics
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    and_,
    case,
    distinct,
    func,
    literal_column,
    select,
)
from sqlalchemy.orm import Session

from legal_bases.errors import DisclosureError
from legal_bases.limits import REPORT_DAYS_DECIMALS, REPORT_FETCH_ROWS
from legal_bases.vocabulary import Body, Category, Outcome
from records.frozen_counts import apply_frozen
from records.ledger import local_midnight
from records.models import DecisionRow, RequestRow, RequestSubject
from records.timestamps import utc

_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]

#: The outcome of a request on which nothing was decided yet.
UNDECIDED = "undecided"
#: The ground of a submission that named none.
NO_GROUND = "—"
#: Every outcome a report row can have, in report order.
OUTCOMES: tuple[str, ...] = (*(o.value for o in Outcome), UNDECIDED)
#: Every category, in report order (the columns of the CSV).
CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)
_RELEASING = (Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value)
_REJECTED = Outcome.REJECTED.value
_NEEDS_REVIEW = Outcome.NEEDS_REVIEW.value
_SECONDS_PER_DAY = 86_400


class PeriodError(DisclosureError):
    """Raised when a period (or its breakdown) is not one the report knows."""


class Breakdown(StrEnum):
    """How a report's period is divided into rows."""

    QUARTER = "quarter"
    MONTH = "month"


# --- periods -----------------------------------------------------------------------------------

_PERIOD = re.compile(r"^(?P<year>\d{4})(?:-(?:(?P<month>\d{2})|[Qq](?P<quarter>\d)))?$")


@dataclass(frozen=True, slots=True)
class Period:
    """Calendar days ``first`` to ``last`` (inclusive) of receipt in the Netherlands."""

    label: str  # "2026", "2026-Q3" or "2026-07"
    first: date
    last: date

    @property
    def start(self) -> datetime:
        """The first instant of the period (Amsterdam midnight of ``first``), in UTC."""
        return local_midnight(self.first)

    @property
    def end(self) -> datetime:
        """The first instant after the period (Amsterdam midnight after ``last``), in UTC."""
        return local_midnight(self.last + timedelta(days=1))

    @property
    def kind(self) -> str:
        """``year``, ``quarter`` or ``month``."""
        return "quarter" if "Q" in self.label else "month" if "-" in self.label else "year"

    def split(self, by: Breakdown | None) -> tuple[Period, ...]:
        """The quarters or months of this period, in order (itself if ``by`` is None).

        A quarter splits into months; a year into quarters or months. Anything else (a month into
        quarters, a quarter into quarters) raises :class:`PeriodError`.
        """
        if by is None:
            return (self,)
        allowed = {"year": (Breakdown.QUARTER, Breakdown.MONTH), "quarter": (Breakdown.MONTH,)}
        if by not in allowed.get(self.kind, ()):
            raise PeriodError(f"a {self.kind} ({self.label}) cannot be broken down by {by.value}")
        year = self.first.year
        if by is Breakdown.QUARTER:
            return tuple(parse_period(f"{year}-Q{q}") for q in range(1, 5))
        return tuple(parse_period(f"{year}-{m:02d}")
                     for m in range(self.first.month, self.last.month + 1))


def parse_period(text: str) -> Period:
    """The period ``YYYY``, ``YYYY-Qn`` (n 1–4) or ``YYYY-MM`` (01–12).

    Raises :class:`PeriodError` with a message fit for a person otherwise.
    """
    match = _PERIOD.match(text.strip())
    usage = "write a year (2026), a quarter (2026-Q3) or a month (2026-07)"
    if match is None:
        raise PeriodError(f"{text!r} is not a period: {usage}")
    year = int(match["year"])
    if year < 1:
        raise PeriodError(f"{text!r}: there is no year 0")
    if match["quarter"] is not None:
        quarter = int(match["quarter"])
        if not 1 <= quarter <= 4:
            raise PeriodError(f"{text!r}: a quarter is Q1 to Q4")
        first = date(year, 3 * quarter - 2, 1)
        return Period(f"{year}-Q{quarter}", first, _month_end(year, 3 * quarter))
    if match["month"] is not None:
        month = int(match["month"])
        if not 1 <= month <= 12:
            raise PeriodError(f"{text!r}: a month is 01 to 12")
        return Period(f"{year}-{month:02d}", date(year, month, 1), _month_end(year, month))
    return Period(f"{year}", date(year, 1, 1), date(year, 12, 31))


def parse_breakdown(text: str | None) -> Breakdown | None:
    """``quarter``, ``month`` or nothing (None or empty); :class:`PeriodError` otherwise."""
    if not text:
        return None
    try:
        return Breakdown(text.strip().lower())
    except ValueError:
        raise PeriodError(f"{text!r} is not a breakdown: write quarter or month") from None


def _month_end(year: int, month: int) -> date:
    following = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
    return following - timedelta(days=1)


# --- tallies -----------------------------------------------------------------------------------

@dataclass
class Tally:
    """The counts of one group of requests (a report row, a period's totals, the whole report)."""

    requests: int = 0
    subjects: int = 0
    subjects_affected: int = 0
    invalid: int = 0
    reviewed: int = 0
    overridden: int = 0
    deadlines_missed: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    category_requests: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    category_subjects: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    days_engine: list[float] = field(default_factory=list, repr=False)
    days_reviewed: list[float] = field(default_factory=list, repr=False)

    def add(self, fact: _Fact) -> None:
        """Count one request."""
        self.requests += 1
        self.subjects += fact.subjects
        self.invalid += not fact.valid
        self.reviewed += fact.reviewed
        self.overridden += fact.overridden
        self.deadlines_missed += fact.missed
        self.outcomes[fact.outcome] = self.outcomes.get(fact.outcome, 0) + 1
        for category in fact.released:
            self.category_requests[category] = self.category_requests.get(category, 0) + 1
            self.category_subjects[category] = (self.category_subjects.get(category, 0)
                                                + fact.subjects)
        if fact.days is not None:
            (self.days_reviewed if fact.reviewed else self.days_engine).append(fact.days)

    @property
    def decided(self) -> int:
        """Requests with a decision in force that settles them (not awaiting review)."""
        return len(self.days_engine) + len(self.days_reviewed)

    @property
    def median_days(self) -> float | None:
        """Median days from receipt to the decision in force, over the decided requests."""
        return _median([*self.days_engine, *self.days_reviewed])

    @property
    def median_days_engine(self) -> float | None:
        """The same, over the requests the engine decided alone."""
        return _median(self.days_engine)

    @property
    def median_days_reviewed(self) -> float | None:
        """The same, over the requests a reviewer decided."""
        return _median(self.days_reviewed)

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-ready data (medians rounded to ``REPORT_DAYS_DECIMALS``)."""
        return {
            "requests": self.requests,
            "invalid": self.invalid,
            "outcomes": dict(self.outcomes),
            "subjects": self.subjects,
            "subjects_affected": self.subjects_affected,
            "reviewed": self.reviewed,
            "overridden": self.overridden,
            "deadlines_missed": self.deadlines_missed,
            "decided": self.decided,
            "median_days_to_decision": rounded_days(self.median_days),
            "median_days_engine_only": rounded_days(self.median_days_engine),
            "median_days_reviewed": rounded_days(self.median_days_reviewed),
            "categories_released": {
                c: {"requests": self.category_requests[c],
                    "subject_releases": self.category_subjects[c]}
                for c in self.category_requests},
        }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded_days(value: float | None) -> float | None:
    """A number of days as the report gives it."""
    return None if value is None else round(value, REPORT_DAYS_DECIMALS)


class _Fact(NamedTuple):
    """What one request contributes to a tally (a tuple: made once per request, fast)."""

    outcome: str
    valid: bool
    subjects: int
    released: tuple[str, ...]
    reviewed: bool
    overridden: bool
    missed: bool
    days: float | None


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One row of the report: a period × requesting body × ground × outcome, and its counts."""

    period: str
    body: str
    ground: str
    outcome: str
    tally: Tally


@dataclass
class Report:
    """The statistics of ``period`` (divided into ``parts`` by ``breakdown``).

    ``cutoff`` is when a review still waiting is judged against its deadline: the period's end or
    the moment the report was made, whichever is earlier.
    """

    period: Period
    breakdown: Breakdown | None
    parts: tuple[Period, ...]
    made_at: datetime
    cutoff: datetime
    cells: dict[tuple[str, str, str, str], Tally]
    part_totals: dict[str, Tally]
    total: Tally
    body_affected: dict[str, int] = field(default_factory=dict)
    #: whether the distinct subjects of frozen years are read from their frozen counts
    frozen: bool = True

    def rows(self) -> list[ReportRow]:
        """Every non-empty period × body × ground × outcome, in a stable order: periods in time,
        bodies and outcomes in vocabulary order, grounds alphabetically (``—`` last)."""
        order = {p.label: i for i, p in enumerate(self.parts)}
        return [ReportRow(*key, tally) for key, tally in sorted(
            self.cells.items(), key=lambda item: (order[item[0][0]], *_sort_key(item[0][1:])))]

    def by_body(self) -> dict[str, Tally]:
        """Totals per requesting body over the whole period (every body of the vocabulary,
        bodies without requests too), in vocabulary order."""
        out = self._grouped(1, [b.value for b in Body])
        for body, tally in out.items():
            tally.subjects_affected = self.body_affected.get(body, 0)
        return out

    def by_ground(self) -> dict[str, Tally]:
        """Totals per ground claimed over the whole period, alphabetically (``—`` last).
        ``subjects_affected`` is not counted per ground (it stays 0)."""
        return self._grouped(2, [])

    def _grouped(self, index: int, always: Sequence[str]) -> dict[str, Tally]:
        out: dict[str, Tally] = {name: Tally() for name in always}
        for key, tally in self.cells.items():
            merged = out.setdefault(key[index], Tally())
            _merge(merged, tally)
        return dict(sorted(out.items(), key=lambda item: _name_key(item[0], index)))


def _merge(into: Tally, tally: Tally) -> None:
    for name in ("requests", "subjects", "invalid", "reviewed", "overridden", "deadlines_missed"):
        setattr(into, name, getattr(into, name) + getattr(tally, name))
    for target, source in ((into.outcomes, tally.outcomes),
                           (into.category_requests, tally.category_requests),
                           (into.category_subjects, tally.category_subjects)):
        for key, value in source.items():
            target[key] = target.get(key, 0) + value
    into.days_engine += tally.days_engine
    into.days_reviewed += tally.days_reviewed


_BODY_ORDER = {b.value: i for i, b in enumerate(Body)}
_OUTCOME_ORDER = {o: i for i, o in enumerate(OUTCOMES)}


def _name_key(name: str, index: int) -> tuple[int, str]:
    if index == 1:
        return (_BODY_ORDER.get(name, len(_BODY_ORDER)), name)
    return (1 if name == NO_GROUND else 0, name)


def _sort_key(key: tuple[str, ...]) -> tuple[Any, ...]:
    body, ground, outcome = key
    return (*_name_key(body, 1), *_name_key(ground, 2),
            _OUTCOME_ORDER.get(outcome, len(_OUTCOME_ORDER)), outcome)


# --- the queries -------------------------------------------------------------------------------

def transparency_statistics(*, session: Session, period: Period,
                            breakdown: Breakdown | None = None,
                            now: datetime | None = None, frozen: bool = True) -> Report:
    """The statistics of the requests received in ``period``, per quarter or month if asked.

    ``now`` (default: the clock) is when the report is made: it limits the deadline cut-off.
    The requests are streamed once; the distinct subjects are counted by the database.
    """
    now = utc(now, name="now") if now is not None else datetime.now(UTC)
    parts = period.split(breakdown)
    report = Report(period=period, breakdown=breakdown, parts=parts, made_at=now,
                    cutoff=min(period.end, now), cells={},
                    part_totals={p.label: Tally() for p in parts}, total=Tally(),
                    frozen=frozen)
    starts = [p.start for p in parts]
    deadline_ends: dict[date, datetime] = {}
    for row in session.execute(_requests_in_force(period),
                               execution_options={"yield_per": REPORT_FETCH_ROWS}):
        part = parts[bisect_right(starts, row.received_at) - 1].label
        fact = _fact(row, report.cutoff, deadline_ends)
        key = (part, row.requester_body, row.legal_basis or NO_GROUND, fact.outcome)
        cell = report.cells.get(key)
        if cell is None:
            cell = report.cells[key] = Tally()
        cell.add(fact)
    for key, cell in report.cells.items():
        _merge(report.part_totals[key[0]], cell)
        _merge(report.total, cell)
    _count_affected(session, report)
    apply_frozen(session, report)
    return report





def _in_force(requests: FromClause) -> tuple[FromClause, ColumnElement[bool]]:
    """The decisions table aliased as the decision in force, and its join condition."""
    decisions = _DECISIONS.alias("in_force")
    later = _DECISIONS.alias("later")
    latest = (select(func.max(later.c.sequence)).where(later.c.request_id == requests.c.id)
              .scalar_subquery())
    return decisions, and_(decisions.c.request_id == requests.c.id,
                           decisions.c.sequence == latest)


def _in_period(requests: FromClause, period: Period) -> ColumnElement[bool]:
    return and_(requests.c.received_at >= period.start, requests.c.received_at < period.end)


def _requests_in_force(period: Period) -> Select[Any]:
    """One row per request of the period: what it asked, its decision in force, and (for a
    reviewed request) the engine's proposal."""
    requests = _REQUESTS.alias("r")
    decision, joined = _in_force(requests)
    engine = _DECISIONS.alias("engine")
    return (select(requests.c.received_at, requests.c.requester_body, requests.c.legal_basis,
                   requests.c.valid, requests.c.subject_count, decision.c.sequence,
                   decision.c.outcome, decision.c.released, decision.c.decided_at,
                   decision.c.deadline, engine.c.proposal)
            .select_from(requests.outerjoin(decision, joined).outerjoin(
                engine, and_(engine.c.request_id == requests.c.id, engine.c.sequence == 1,
                             decision.c.sequence > 1)))
            .where(_in_period(requests, period)))


def _fact(row: Any, cutoff: datetime, deadline_ends: dict[date, datetime]) -> _Fact:
    (received_at, _body, _ground, valid, subject_count, sequence, recorded, released_json,
     decided_at, deadline, proposal) = row
    decided = sequence is not None
    outcome = recorded if decided else UNDECIDED
    if not valid:
        outcome = _REJECTED
    waiting = recorded == _NEEDS_REVIEW
    settled = decided and not waiting
    released = tuple(released_json) if settled else ()
    reviewed = decided and sequence > 1
    missed = False
    if deadline is not None:
        end = deadline_ends.get(deadline)
        if end is None:
            end = deadline_ends[deadline] = local_midnight(deadline + timedelta(days=1))
        missed = decided_at >= end if settled else (waiting and cutoff >= end)
    return _Fact(
        outcome=outcome, valid=bool(valid), subjects=subject_count or 0, released=released,
        reviewed=reviewed,
        overridden=reviewed and sorted(released) != sorted((proposal or {}).get("released", [])),
        missed=missed,
        days=(decided_at - received_at).total_seconds() / _SECONDS_PER_DAY if settled else None)


def _count_affected(session: Session, report: Report) -> None:
    """Fill in ``subjects_affected``: distinct pseudonyms of the releasing requests, counted by
    the database per row, per part and over the whole period."""
    requests = _REQUESTS.alias("r")
    decision, joined = _in_force(requests)
    subjects = _SUBJECTS.alias("s")
    parts = report.parts
    bucket: ColumnElement[Any] = (
        case(*((requests.c.received_at < p.end, i) for i, p in enumerate(parts[:-1])),
             else_=len(parts) - 1) if len(parts) > 1 else literal_column("0"))
    released = (select(bucket.label("part"), requests.c.requester_body, requests.c.legal_basis,
                       decision.c.outcome, subjects.c.pseudonym)
                .select_from(requests.join(decision, joined).join(
                    subjects, subjects.c.request_id == requests.c.id))
                .where(_in_period(requests, report.period), requests.c.valid,
                       decision.c.outcome.in_(_RELEASING))
                .subquery("released"))
    affected = func.count(distinct(released.c.pseudonym))
    for row in session.execute(
            select(released.c.part, released.c.requester_body, released.c.legal_basis,
                   released.c.outcome, affected)
            .group_by(released.c.part, released.c.requester_body, released.c.legal_basis,
                      released.c.outcome)):
        key = (parts[row.part].label, row.requester_body, row.legal_basis or NO_GROUND,
               row.outcome)
        report.cells[key].subjects_affected = row[4]
    for row in session.execute(select(released.c.part, affected).group_by(released.c.part)):
        report.part_totals[parts[row.part].label].subjects_affected = row[1]
    for row in session.execute(select(released.c.requester_body, affected)
                               .group_by(released.c.requester_body)):
        report.body_affected[row.requester_body] = row[1]
    report.total.subjects_affected = int(session.execute(select(affected)).scalar_one())
