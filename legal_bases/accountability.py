"""What DUO must be able to account for per ground: its processing activity, and who may see it.

Read from ``legal_bases/accountability.yaml`` (once per file; checked against
``schemas/accountability.yaml``). Per ground id:

* ``processing_activity_id``: the URI of the entry in DUO's register of processing activities
  (AVG art. 30), the Logboek Dataverwerkingen attribute ``dpl.core.processing_activity_id``;
* ``subject_access``: ``open`` (a data subject's inzage answer shows the requests) or
  ``restricted`` with the citation that allows keeping them out of it (UAVG art. 41), so they go
  to the privacy officer instead;
* ``retention``: how long the personal data held about a request under the ground (the raw
  submission, its subjects, the reviewers' motivations) are kept before they are destroyed
  (AVG art. 5 lid 1 onder e), as a :class:`RetentionTerm`.

``default_retention`` is the term of a request that claims no ground, or a ground the file does
not know (an invalid submission, a made-up ground).

:meth:`Accountability.restriction_for` is the one rule that decides whether a request stays out
of the data subject's answer, :meth:`Accountability.retention_for` the one that says how long its
data are kept. Every error names the file and the field, like the table's.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from legal_bases.citation import Citation
from legal_bases.errors import DisclosureError, Problem, TableError
from legal_bases.table import GroundTable
from legal_bases.validator import load_yaml, new_validator

#: The accountability data the product ships, beside the shipped table of grounds.
DEFAULT_ACCOUNTABILITY_FILE = Path(__file__).parent / "accountability.yaml"


class SubjectAccess(StrEnum):
    """Whether the requests under a ground appear in the data subject's inzage answer."""

    OPEN = "open"
    RESTRICTED = "restricted"


class CountedFrom(StrEnum):
    """The event a retention term is counted from."""

    FINAL_DECISION = "final_decision"
    #: The last delivery of the request; a request never delivered counts from its final decision.
    DELIVERY = "delivery"


class RetentionUnit(StrEnum):
    """The unit a retention term is written in: years and months are calendar months."""

    YEARS = "years"
    MONTHS = "months"
    DAYS = "days"


_SINGULAR = {RetentionUnit.YEARS: "year", RetentionUnit.MONTHS: "month",
             RetentionUnit.DAYS: "day"}
_EVENT = {CountedFrom.FINAL_DECISION: "the final decision",
          CountedFrom.DELIVERY: "the last delivery"}


@dataclass(frozen=True, slots=True)
class RetentionTerm:
    """How long the personal data held about a request are kept: ``amount`` ``unit`` counted
    from ``counted_from``, on the authority of ``source``.

    A term is written with exactly one unit (``years: 20`` in the file is ``amount=20,
    unit=YEARS``); the arithmetic is :meth:`ends`, a pure function of the date it starts on.
    """

    amount: int
    unit: RetentionUnit
    counted_from: CountedFrom
    source: Citation
    note: str | None = None

    def __post_init__(self) -> None:
        if type(self.amount) is not int or self.amount < 1:
            raise ValueError(f"a retention term needs a positive whole number, not "
                             f"{self.amount!r}")

    def start(self, *, final_decision: date, last_delivery: date | None) -> date:
        """The day the term is counted from, for a request decided on ``final_decision`` and
        last delivered on ``last_delivery`` (None: never delivered, so its final decision)."""
        if self.counted_from is CountedFrom.DELIVERY and last_delivery is not None:
            return last_delivery
        return final_decision

    def ends(self, start: date) -> date:
        """The day the term ends when it starts on ``start``.

        Years and months are calendar months: the same day of the month that many months on,
        or that month's last day when it has no such day (29 February 2024 + 1 year is
        28 February 2025; 31 January + 1 month is the last day of February). Days are days.
        """
        if self.unit is RetentionUnit.DAYS:
            return start + timedelta(days=self.amount)
        months = self.amount * 12 if self.unit is RetentionUnit.YEARS else self.amount
        year, month0 = divmod(start.year * 12 + start.month - 1 + months, 12)
        day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
        return start.replace(year=year, month=month0 + 1, day=day)

    def describe(self) -> str:
        """One line for people, e.g. ``7 years from the final decision (Archiefwet 1995 art.
        5 lid 1)``."""
        unit = self.unit.value if self.amount != 1 else _SINGULAR[self.unit]
        return f"{self.amount} {unit} from {_EVENT[self.counted_from]} ({self.source.short})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetentionTerm:
        """A term from a mapping the schema has checked (exactly one unit, checked before)."""
        [unit] = [u for u in RetentionUnit if u.value in data]
        return cls(amount=data[unit.value], unit=unit,
                   counted_from=CountedFrom(data["counted_from"]),
                   source=Citation.from_dict(data["source"]), note=data.get("note"))


class AccountabilityError(TableError):
    """Raised when the accountability file cannot be loaded or does not cover the table;
    lists every problem with file and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        DisclosureError.__init__(
            self, f"the accountability data has {len(self.problems)} problem(s):\n{lines}")


class UnaccountedGroundError(DisclosureError):
    """Raised when a ground needed for an answer has no entry in the accountability file."""

    def __init__(self, ground_id: str, source: str) -> None:
        self.ground_id = ground_id
        super().__init__(f"ground {ground_id!r} has no entry in {source}: add its "
                         "processing_activity_id, subject_access and retention")


@dataclass(frozen=True, slots=True)
class GroundAccountability:
    """The accountability entry of one ground."""

    ground_id: str
    processing_activity_id: str
    subject_access: SubjectAccess
    retention: RetentionTerm
    restriction: Citation | None = None

    @property
    def restricted(self) -> bool:
        return self.subject_access is SubjectAccess.RESTRICTED


@dataclass(frozen=True)
class Accountability:
    """The checked accountability entries, by ground id, and the retention term of a request
    under none of them.

    ``default_retention`` is always set by :func:`load_accountability` (the file requires it);
    it may be left out only by code that builds a partial value for a test, and then
    :meth:`retention_for` refuses the requests that would need it.
    """

    grounds: Mapping[str, GroundAccountability]
    source: str
    default_retention: RetentionTerm | None = None

    def of(self, ground_id: str) -> GroundAccountability:
        """The entry of ``ground_id``; :class:`UnaccountedGroundError` if it has none."""
        entry = self.grounds.get(ground_id)
        if entry is None:
            raise UnaccountedGroundError(ground_id, self.source)
        return entry

    def missing(self, table: GroundTable) -> list[str]:
        """The ground ids of ``table`` that have no entry, sorted."""
        return sorted(g for g in table.grounds if g not in self.grounds)

    def check_covers(self, table: GroundTable) -> None:
        """Raise :class:`AccountabilityError` naming every ground of ``table`` without an entry.

        Call this before answering from ``table``: a ground nobody classified must not be shown
        to a data subject by default (fail closed).
        """
        missing = self.missing(table)
        if missing:
            raise AccountabilityError([
                Problem(self.source, f"grounds.{g}",
                        f"has no entry, but the table at {table.source} has this ground")
                for g in missing])

    def retention_for(self, ground_id: str | None) -> RetentionTerm:
        """The retention term of a request claiming ``ground_id``: the ground's own term, or
        ``default_retention`` when it claims none or a ground without an entry (an invalid
        submission, a made-up ground)."""
        entry = self.grounds.get(ground_id) if ground_id else None
        if entry is not None:
            return entry.retention
        if self.default_retention is None:
            claimed = f"ground {ground_id!r}" if ground_id else "no ground"
            raise AccountabilityError([Problem(
                self.source, "default_retention",
                f"is required: no term for a request under {claimed}")])
        return self.default_retention

    def restriction_for(self, *, ground_id: str | None, body: str,
                        table: GroundTable) -> Citation | None:
        """The citation that keeps a request out of its data subjects' inzage answer, or None.

        A request is restricted when the ground it claims is restricted, or when every ground of
        ``table`` open to its requester's ``body`` is restricted — whatever it claims: an
        unknown or made-up ground, none at all (an invalid request), or another body's ground.
        An ``openbaar_ministerie`` request reveals an investigation whichever ground it names.
        Raises :class:`UnaccountedGroundError` if a ground this needs has no entry.
        """
        claimed = self.grounds.get(ground_id) if ground_id else None
        if claimed is not None and claimed.restriction is not None:
            return claimed.restriction
        body_grounds = sorted(g.id for g in table if body in g.requesters)
        entries = [self.of(g) for g in body_grounds]
        if entries and all(e.restriction is not None for e in entries):
            return entries[0].restriction
        return None


def load_accountability(path: Path | str | None = None) -> Accountability:
    """Load and check an accountability file (default: the one the product ships), once."""
    return _load(Path(path) if path is not None else DEFAULT_ACCOUNTABILITY_FILE)


@cache
def _load(path: Path) -> Accountability:
    name = str(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "is not UTF-8 text"
        raise AccountabilityError([Problem(name, "(file)", f"cannot be read: {reason}")]) from None
    try:
        raw = load_yaml(text)
        repeated = _repeated_keys(text)
    except yaml.YAMLError as exc:
        message = f"is not valid YAML: {exc}".replace("\n", " ")
        raise AccountabilityError([Problem(name, "(file)", message)]) from None
    problems = [Problem(name, field, "is listed twice") for field in repeated]
    if not isinstance(raw, dict):
        problems.append(Problem(name, "(file)", "must be a mapping with grounds"))
        raise AccountabilityError(problems)
    validator = new_validator("accountability", "accountability")
    valid = validator.validate(raw)
    if not valid:
        problems.extend(Problem(name, e.path or "(file)", e.message)
                        for e in validator.field_errors())
    # What the schema cannot say: one unit per term, and a number that is not true or false
    # (YAML's booleans are integers to cerberus). Checked on the raw file, so that they are
    # reported with the schema's problems rather than after them are fixed.
    terms = [Problem(name, field, message) for field, message in _term_problems(raw)]
    problems.extend(terms)
    if not valid or terms:
        raise AccountabilityError(problems)
    document: dict[str, Any] = validator.document
    grounds: dict[str, GroundAccountability] = {}
    for ground_id, entry in sorted(document["grounds"].items()):
        access = SubjectAccess(entry["subject_access"])
        restriction = entry["restriction"]
        field = f"grounds.{ground_id}.restriction"
        if access is SubjectAccess.RESTRICTED and restriction is None:
            problems.append(Problem(name, field, "is required when subject_access is restricted "
                                                 "(cite the article that allows it)"))
        elif access is SubjectAccess.OPEN and restriction is not None:
            problems.append(Problem(name, field, "must be absent when subject_access is open"))
        grounds[ground_id] = GroundAccountability(
            ground_id=ground_id, processing_activity_id=entry["processing_activity_id"],
            subject_access=access, retention=RetentionTerm.from_dict(entry["retention"]),
            restriction=Citation.from_dict(restriction) if restriction else None)
    if problems:
        raise AccountabilityError(problems)
    return Accountability(grounds=MappingProxyType(grounds), source=name,
                          default_retention=RetentionTerm.from_dict(document["default_retention"]))


def _terms(raw: dict[Any, Any]) -> Iterator[tuple[str, object]]:
    """Every retention mapping of a raw document, with its dotted path."""
    yield "default_retention", raw.get("default_retention")
    shared = raw.get("retention_terms")
    if isinstance(shared, dict):
        yield from ((f"retention_terms.{key}", term) for key, term in shared.items())
    grounds = raw.get("grounds")
    if isinstance(grounds, dict):
        for ground_id, entry in grounds.items():
            if isinstance(entry, dict):
                yield f"grounds.{ground_id}.retention", entry.get("retention")


def _term_problems(raw: dict[Any, Any]) -> Iterator[tuple[str, str]]:
    """(field, message) of each retention mapping without exactly one of years, months and days,
    or with a boolean for one."""
    for path, term in _terms(raw):
        if not isinstance(term, dict):
            continue  # absent or not a mapping: the schema says so
        units = [u.value for u in RetentionUnit if u.value in term]
        if len(units) != 1:
            found = ", ".join(units) if units else "none"
            yield path, f"needs exactly one of years, months, days (found {found})"
        for unit in units:
            if isinstance(term[unit], bool):
                yield f"{path}.{unit}", "must be of type integer"


def _repeated_keys(text: str) -> list[str]:
    """Dotted paths of keys repeated in one mapping (YAML itself keeps the last silently)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found: list[str] = []

    def walk(node: yaml.Node | None, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            found.extend(".".join((*path, k)) for k in _repeats(keys))
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    walk(value, (*path, key.value))

    walk(root, ())
    return found


def _repeats(keys: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for key in keys:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    return repeated
