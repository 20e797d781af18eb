"""What DUO must be able to account for per ground: its processing activity, and who may see it.

Read from ``legal_bases/accountability.yaml`` (once per file; checked against
``schemas/accountability.yaml``). Per ground id:

* ``processing_activity_id``: the URI of the entry in DUO's register of processing activities
  (AVG art. 30), the Logboek Dataverwerkingen attribute ``dpl.core.processing_activity_id``;
* ``subject_access``: ``open`` (a data subject's inzage answer shows the requests) or
  ``restricted`` with the citation that allows keeping them out of it (UAVG art. 41), so they go
  to the privacy officer instead.

:meth:`Accountability.restriction_for` is the one rule that decides whether a request stays out
of the data subject's answer. Every error names the file and the field, like the table's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
                         "processing_activity_id and subject_access")


@dataclass(frozen=True, slots=True)
class GroundAccountability:
    """The accountability entry of one ground."""

    ground_id: str
    processing_activity_id: str
    subject_access: SubjectAccess
    restriction: Citation | None = None

    @property
    def restricted(self) -> bool:
        return self.subject_access is SubjectAccess.RESTRICTED


@dataclass(frozen=True)
class Accountability:
    """The checked accountability entries, by ground id."""

    grounds: Mapping[str, GroundAccountability]
    source: str

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
    if not validator.validate(raw):
        problems.extend(Problem(name, e.path or "(file)", e.message)
                        for e in validator.field_errors())
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
            subject_access=access,
            restriction=Citation.from_dict(restriction) if restriction else None)
    if problems:
        raise AccountabilityError(problems)
    return Accountability(grounds=MappingProxyType(grounds), source=name)


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
