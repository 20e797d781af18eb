"""The rules of legal review (DESIGN.md section 6, step 10), as pure functions.

A reviewer starts from the engine's proposal and may narrow it, never widen it beyond what the
ground version allows. Releasing a special category takes two reviewers who are not the same
person: the first's decision stands only once a second, different reviewer confirms it (and
may narrow it further). These functions check one reviewer's answer against those rules and
turn the accepted answers into the request's decision; who the reviewer is (enrolled, with a
valid one-time code) is checked by the caller, which has the register of reviewers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from legal_bases import limits
from legal_bases.assessment import principle
from legal_bases.decision import Decision, Reason
from legal_bases.ground import GroundVersion
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    Category,
    Outcome,
    ReasonCode,
    ReviewVerdict,
)


@dataclass(frozen=True, slots=True)
class ReviewAnswer:
    """What one reviewer submitted on the form (identity already verified by the caller)."""

    reviewer_id: str
    verdict: ReviewVerdict
    categories: tuple[Category, ...]
    motivation: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an answer was not accepted; the form opens again with ``message`` on top."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted answer: what it releases, and whether a second reviewer must still confirm."""

    release: tuple[Category, ...]
    needs_second: bool


def check_answer(answer: ReviewAnswer, *, proposal: tuple[Category, ...],
                 first: ReviewAnswer | None = None) -> Accepted | Refusal:
    """Check one reviewer's answer against the engine's proposal and, if any, the first review.

    ``proposal`` is what the engine would release: the requested categories the ground version
    allows. ``first`` is the accepted first answer when this one is the second of four eyes.
    """
    motivation = answer.motivation.strip()
    if len(motivation) < limits.MIN_MOTIVATION_CHARS:
        return Refusal("motivation_too_short", f"write a motivation of at least "
                       f"{limits.MIN_MOTIVATION_CHARS} characters: why this decision, "
                       "on which facts")
    if len(motivation) > limits.MAX_MOTIVATION_CHARS:
        return Refusal("motivation_too_long",
                       f"keep the motivation under {limits.MAX_MOTIVATION_CHARS} characters")
    chosen = tuple(sorted(set(answer.categories)))
    outside = [c for c in chosen if c not in proposal]
    if outside:
        return Refusal("category_not_allowed", f"{', '.join(outside)} cannot be released: the "
                       f"ground allows at most {', '.join(proposal)}")
    if first is not None and first.reviewer_id == answer.reviewer_id:
        return Refusal("same_reviewer", "a special category needs a second reviewer who is not "
                       "the first: another reviewer must decide")
    if answer.verdict is ReviewVerdict.REJECT:
        return Accepted((), needs_second=False)
    if answer.verdict is ReviewVerdict.APPROVE:
        if first is None and chosen and chosen != proposal:
            return Refusal("use_approve_partially", "you selected fewer categories than the "
                           "proposal: choose approve_partially to release only those")
        release = proposal if first is None else _first_release(first, proposal)
        chosen = release if not chosen or first is None else chosen
    else:
        if not chosen:
            return Refusal("no_categories", "approve_partially needs the categories to release")
        if first is None and chosen == proposal:
            return Refusal("use_approve", "you selected the whole proposal: choose approve")
    if first is not None:
        allowed = _first_release(first, proposal)
        wider = [c for c in chosen if c not in allowed]
        if wider:
            return Refusal("wider_than_first", f"{', '.join(wider)} was not approved by the "
                           "first reviewer: the second may narrow the release, not widen it")
        return Accepted(chosen, needs_second=False)
    return Accepted(chosen, needs_second=any(c in SPECIAL_CATEGORIES for c in chosen))


def _first_release(first: ReviewAnswer, proposal: tuple[Category, ...]) -> tuple[Category, ...]:
    if first.verdict is ReviewVerdict.APPROVE:
        return proposal
    return tuple(sorted(set(first.categories)))


def reviewed_decision(engine: Decision, version: GroundVersion,
                      release: tuple[Category, ...]) -> Decision:
    """The request's decision after review: the engine's decision with the reviewed release.

    The engine's proposal stays beside it; categories the reviewer withheld carry
    ``withheld_by_reviewer``, a release of nothing ``rejected_by_reviewer``.
    """
    assert engine.proposal is not None, "only a decision that waited for review is reviewed"
    proposal = engine.proposal
    released = tuple(sorted(set(release)))
    by_reviewer = tuple(c for c in proposal.released if c not in released)
    withheld = tuple(sorted(set(proposal.withheld) | set(by_reviewer)))
    engine_withheld = tuple(r for r in engine.reasons if r.code is not ReasonCode.GROUND_APPLIES)
    reasons: tuple[Reason, ...]
    if not released:
        code = ReasonCode.REJECTED_BY_REVIEWER
        reasons = (*engine_withheld, Reason(code, principle(code), by_reviewer))
        outcome = Outcome.REJECTED
    else:
        reasons = (Reason(ReasonCode.GROUND_APPLIES, version.citation, released), *engine_withheld)
        if by_reviewer:
            code = ReasonCode.WITHHELD_BY_REVIEWER
            reasons += (Reason(code, principle(code), by_reviewer),)
        outcome = Outcome.PARTIALLY_APPROVED if withheld else Outcome.APPROVED
    return replace(engine, outcome=outcome, released=released, withheld=withheld,
                   reasons=reasons)
