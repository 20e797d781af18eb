"""What :func:`~legal_bases.assessment.assess` returns: an immutable, self-explaining decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from legal_bases.citation import Citation
from legal_bases.errors import FieldError
from legal_bases.vocabulary import Body, Category, Outcome, ReasonCode, ReviewTrigger


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason for a decision (or one review trigger), with the citation it rests on.

    ``categories`` names the categories the reason is about, where it is about some (a withheld
    category, the categories released under the ground).
    """

    code: ReasonCode | ReviewTrigger
    citation: Citation
    categories: tuple[Category, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code.value, "citation": self.citation.to_dict()}
        if self.categories:
            out["categories"] = [c.value for c in self.categories]
        return out


@dataclass(frozen=True, slots=True)
class Proposal:
    """What the engine would release and withhold; the reviewer starts from this."""

    released: tuple[Category, ...]
    withheld: tuple[Category, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"released": [c.value for c in self.released],
                "withheld": [c.value for c in self.withheld]}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of assessing one request against one table of grounds.

    ``released`` is what this decision releases: empty for ``rejected`` and for ``needs_review``
    (where ``proposal`` holds what the reviewer starts from). ``withheld`` lists the requested
    categories the ground does not cover. Both are sorted. ``ground_version`` is the immutable id
    of the version applied and ``table_hash`` the content hash of the table it was read from, so
    the same decision can be reproduced from the stored snapshot years later.
    """

    outcome: Outcome
    requester_body: Body
    table_hash: str
    reasons: tuple[Reason, ...]
    released: tuple[Category, ...] = ()
    withheld: tuple[Category, ...] = ()
    review_triggers: tuple[Reason, ...] = ()
    proposal: Proposal | None = None
    ground_id: str | None = None
    ground_version: str | None = None
    subject_count: int = 0
    errors: tuple[FieldError, ...] = field(default=())

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.reasons)

    @property
    def trigger_codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.review_triggers)

    def to_dict(self) -> dict[str, Any]:
        """The decision as plain JSON-ready data (the shape ``disclosure decide`` prints)."""
        out: dict[str, Any] = {
            "outcome": self.outcome.value,
            "requester_body": self.requester_body.value,
            "ground": self.ground_id,
            "ground_version": self.ground_version,
            "table_hash": self.table_hash,
            "released": [c.value for c in self.released],
            "withheld": [c.value for c in self.withheld],
            "reasons": [r.to_dict() for r in self.reasons],
            "review_triggers": [r.to_dict() for r in self.review_triggers],
            "subject_count": self.subject_count,
        }
        if self.proposal is not None:
            out["proposal"] = self.proposal.to_dict()
        if self.errors:
            out["errors"] = [e.to_dict() for e in self.errors]
        return out
