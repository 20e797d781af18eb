"""The account of a request's review, years later: the engine's proposal, every answer on the
review form (accepted or refused, and why), the decisions recorded after the engine's, and three
checks of the reviewed decision — what was released stays within the proposal and the ground
version's categories, the decision re-derives with :func:`legal_bases.review.reviewed_decision`
from the accepted answers, and a special category was released by two different reviewers who
are the ones ``decided_by`` names.

A request can be reviewed more than once: a later decision of the engine sends it back to review
when a subject was shielded since (:func:`review_cycles`); each cycle is accounted for with the
answers given in it. Against today's table there is the account only, no checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeAlias

from legal_bases.assessment import with_review_trigger
from legal_bases.decision import Decision
from legal_bases.errors import DisclosureError
from legal_bases.ground import GroundVersion
from legal_bases.review import Accepted, ReviewAnswer, check_answer, reviewed_decision
from legal_bases.table import GroundTable
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    Category,
    Outcome,
    ReviewTrigger,
    ReviewVerdict,
)
from records.ledger import ENGINE
from records.replay_differences import LedgerRow, as_recorded, compare, recorded_decision
from records.replay_results import Answer, Check, ReviewAccount, ReviewedDecision

_SPECIAL = frozenset(c.value for c in SPECIAL_CATEGORIES)
#: A review cycle: the engine's decision that sent the request to review, and the ones after it.
Cycle: TypeAlias = tuple[LedgerRow, list[LedgerRow]]


def table_version(table: GroundTable, version_id: str | None) -> GroundVersion | None:
    """The ground version ``version_id`` of ``table`` (None if it has no such version)."""
    if version_id is None:
        return None
    try:
        return table.version(version_id)
    except DisclosureError:
        return None


@dataclass(frozen=True, slots=True)
class _Decisive:
    """The accepted answers that decided a review, and the release they add up to."""

    first: Answer | None
    last: Answer
    release: tuple[Category, ...]


def review_cycles(decisions: Sequence[LedgerRow]) -> list[Cycle]:
    """The decisions in review cycles: the first decision with the ones after it, up to a later
    decision of the engine that sent the request back to review (``needs_review``: a subject
    shielded since), which opens the next. Any other later decision stays in its cycle, where
    the review account finds nothing that explains it."""
    cycles: list[Cycle] = []
    for row in decisions:
        if not cycles or (row.decided_by == ENGINE
                          and row.outcome == Outcome.NEEDS_REVIEW.value):
            cycles.append((row, []))
        else:
            cycles[-1][1].append(row)
    return cycles


class GivenAnswer(Protocol):
    """What :func:`answer_releases` reads of an answer (a ledger row or a replay's answer)."""

    @property
    def seq(self) -> int: ...
    @property
    def verdict(self) -> str: ...
    @property
    def categories(self) -> Sequence[str]: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def step(self) -> str | None: ...
    @property
    def answered_at(self) -> datetime: ...


def answer_releases(answers: Sequence[GivenAnswer],
                    proposals: Sequence[tuple[datetime, Sequence[str]]],
                    ) -> dict[int, tuple[str, ...]]:
    """The categories each answer released (accepted) or would have released (refused), by
    ``seq``, as :func:`legal_bases.review.check_answer` reads a verdict: ``reject`` releases
    nothing, ``approve_partially`` the categories chosen, ``approve`` the engine's whole proposal
    — or, as the second of four eyes, the categories chosen, else what the first released.

    ``proposals`` are the engine's decisions that sent the request to review, as (decided at,
    the categories its proposal releases), oldest first; an answer answers the latest one made
    before it, and a new one starts the count of four eyes afresh.
    """
    released: dict[int, tuple[str, ...]] = {}
    first: tuple[str, ...] | None = None  # the accepted first of two, waiting for a second
    cycle = -1
    for answer in answers:
        now = max([i for i, (at, _) in enumerate(proposals) if at <= answer.answered_at],
                  default=0)
        if now != cycle:
            cycle, first = now, None
        proposal = tuple(proposals[now][1]) if proposals else ()
        chosen = tuple(sorted(set(answer.categories)))
        if answer.verdict == ReviewVerdict.REJECT.value:
            release: tuple[str, ...] = ()
        elif answer.verdict == ReviewVerdict.APPROVE.value:
            release = proposal if first is None else (chosen or first)
        else:
            release = chosen
        released[answer.seq] = release
        if answer.accepted:
            first = release if answer.step == "first" else None
    return released


def review_account(cycles: Sequence[Cycle], answers: tuple[Answer, ...], engine: Decision,
                   table: GroundTable | None) -> ReviewAccount:
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


def _review(engine_row: LedgerRow, later: Sequence[LedgerRow], answers: tuple[Answer, ...],
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
    version = table_version(table, engine_row.ground_version)
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


def _within_bounds(reviewed: LedgerRow, proposal: tuple[Category, ...],
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


def _re_derives(reviewed: LedgerRow, decisive: _Decisive | None, engine: Decision,
                version: GroundVersion | None) -> Check:
    if decisive is None:
        return Check("re_derives", False, "a reviewed decision is recorded but no accepted "
                                          "answer decided it")
    if version is None or engine.proposal is None:
        return Check("re_derives", False, "the engine's replayed decision did not go to review "
                                          "under a known ground version")
    expected = as_recorded(reviewed_decision(engine, version, decisive.release))
    differences = compare(recorded_decision(reviewed), expected)
    if differences:
        return Check("re_derives", False, "the reviewed decision differs from the one the "
                     f"accepted answers give in: {', '.join(d.field for d in differences)}")
    return Check("re_derives", True, f"re-derives from answer {decisive.last.seq}"
                 + (f" after answer {decisive.first.seq}" if decisive.first else ""))


def _four_eyes(reviewed: LedgerRow, decisive: _Decisive | None) -> Check:
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
