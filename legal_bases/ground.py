"""A statutory ground and its dated versions, as loaded from one ground file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from legal_bases.citation import Citation
from legal_bases.vocabulary import AuthorisationKind, Body, Category, Purpose, ReviewMode


@dataclass(frozen=True, slots=True)
class GroundVersion:
    """The content of a ground in force from ``valid_from`` through ``valid_until`` (inclusive).

    ``id`` is derived from the version's content and its ground's, so any edit of the law as
    encoded gives a new id, and a recorded decision pins exactly the text it applied.
    """

    id: str
    ground_id: str
    valid_from: date
    valid_until: date | None
    citation: Citation
    requesters: frozenset[Body]
    purposes: frozenset[Purpose]
    categories: frozenset[Category]
    special_categories: frozenset[Category]
    case_reference_required: bool
    authorisations_required: tuple[AuthorisationKind, ...]
    single_subject: bool
    auto_limit: int
    review: ReviewMode
    response_days: int
    pseudonymise: bool

    def in_force(self, on: date) -> bool:
        """Whether this version is the law on ``on``."""
        return self.valid_from <= on and (self.valid_until is None or on <= self.valid_until)

    @property
    def releasable(self) -> frozenset[Category]:
        """Every category this version can release (special ones only with review)."""
        return self.categories | self.special_categories


@dataclass(frozen=True, slots=True)
class Ground:
    """A statutory ground: who may ask, for which purposes, and its versions in date order."""

    id: str
    title: str
    citation: Citation
    requesters: frozenset[Body]
    purposes: frozenset[Purpose]
    versions: tuple[GroundVersion, ...]

    def version_on(self, on: date) -> GroundVersion | None:
        """The version in force on ``on``, or None."""
        for version in self.versions:
            if version.in_force(on):
                return version
        return None
