"""What replay finds for one request: its status, the engine's decision as recorded and as
replayed and the fields that differ, and for a reviewed request the account of its review (the
answers, the reviewed decisions and their checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from records.replay_differences import Difference


class ReplayStatus(StrEnum):
    """What replay found for one request."""

    AGREES = "agrees"  # the recorded decisions re-derive (and the review checks pass)
    DIFFERS = "differs"  # a field differs, or a review check failed
    CANNOT_REPLAY = "cannot_replay"  # no snapshot, or the submission no longer reads
    UNDECIDED = "undecided"  # received, no decision recorded yet: nothing to replay
    # its retention term ended and its data key was destroyed: the submission cannot be read
    # again; the recorded decision was checked against its table snapshot instead
    SHREDDED = "shredded"


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer given on the request's review form, as recorded.

    ``role`` is the one the answer recorded (None when the identity check refused it: a wrong
    or spent one-time code, an unknown reviewer); ``enrolled_role`` the reviewer's role in the
    reviewer records (None if not enrolled). ``releases`` is what the verdict released, or would
    have released had it been accepted (:func:`records.replay_review.answer_releases`): an
    ``approve`` releases the engine's whole proposal, whatever was ticked with it.
    """

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
    enrolled_role: str | None = None
    releases: tuple[str, ...] = ()

    @property
    def reviewer_role(self) -> str | None:
        """The reviewer's role: as the answer recorded it, else as enrolled."""
        return self.role or self.enrolled_role

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "reviewer_id": self.reviewer_id, "role": self.role,
                "enrolled_role": self.enrolled_role, "verdict": self.verdict,
                "categories": list(self.categories), "releases": list(self.releases),
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
    shredded_on: date | None = None

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
            "shredded_on": self.shredded_on.isoformat() if self.shredded_on else None,
        }

