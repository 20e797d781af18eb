"""The rules of legal review: narrow, never widen; four eyes for special categories."""

from __future__ import annotations

from datetime import date

import pytest

from legal_bases import limits
from legal_bases.assessment import assess
from legal_bases.decision import Decision
from legal_bases.request import parse_request
from legal_bases.review import Accepted, Refusal, ReviewAnswer, check_answer, reviewed_decision
from legal_bases.table import GroundTable
from legal_bases.vocabulary import Body, Category, Outcome, ReviewVerdict

PER, OPL, GEZ = Category.PERSONALIA, Category.OPLEIDINGSGEGEVENS, Category.GEZONDHEID
PROPOSAL = (GEZ, OPL, PER)
WHY = "Noodzakelijk voor het verzuimonderzoek van deze leerling."


def answer(verdict: ReviewVerdict, *categories: Category, who: str = "anna",
           motivation: str = WHY) -> ReviewAnswer:
    return ReviewAnswer(who, verdict, categories, motivation)


def leerplicht(table: GroundTable) -> Decision:
    request = parse_request({
        "reference": "LP-1", "legal_basis": "wro-21", "purpose": "leerplicht",
        "subjects": [{"bsn": "111222333"}],
        "categories": ["personalia", "opleidingsgegevens", "gezondheid", "contacthistorie"]},
        received_on=date(2026, 11, 28))
    return assess(request, Body.GEMEENTE, table)


@pytest.mark.parametrize(("given", "first", "expected"), [
    (answer(ReviewVerdict.APPROVE), None, Accepted(PROPOSAL, needs_second=True)),
    (answer(ReviewVerdict.APPROVE, *PROPOSAL), None, Accepted(PROPOSAL, needs_second=True)),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, PER, OPL), None,
     Accepted((OPL, PER), needs_second=False)),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, GEZ), None, Accepted((GEZ,), needs_second=True)),
    (answer(ReviewVerdict.REJECT), None, Accepted((), needs_second=False)),
    # the second reviewer confirms, narrows, or rejects
    (answer(ReviewVerdict.APPROVE, who="bram"), answer(ReviewVerdict.APPROVE),
     Accepted(PROPOSAL, needs_second=False)),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, PER, who="bram"), answer(ReviewVerdict.APPROVE),
     Accepted((PER,), needs_second=False)),
    (answer(ReviewVerdict.APPROVE, who="bram"), answer(ReviewVerdict.APPROVE_PARTIALLY, GEZ, PER),
     Accepted((GEZ, PER), needs_second=False)),
    (answer(ReviewVerdict.REJECT, who="bram"), answer(ReviewVerdict.APPROVE),
     Accepted((), needs_second=False)),
])
def test_accepted_answers(given: ReviewAnswer, first: ReviewAnswer | None,
                          expected: Accepted) -> None:
    assert check_answer(given, proposal=PROPOSAL, first=first) == expected


@pytest.mark.parametrize(("given", "first", "code"), [
    (answer(ReviewVerdict.APPROVE, motivation="ok"), None, "motivation_too_short"),
    (answer(ReviewVerdict.APPROVE, motivation=" " * 40), None, "motivation_too_short"),
    (answer(ReviewVerdict.APPROVE, motivation="x" * (limits.MAX_MOTIVATION_CHARS + 1)), None,
     "motivation_too_long"),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, Category.CONTACTHISTORIE), None,
     "category_not_allowed"),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, Category.STRAFRECHTELIJKE_GEGEVENS, PER), None,
     "category_not_allowed"),
    (answer(ReviewVerdict.APPROVE, PER), None, "use_approve_partially"),
    (answer(ReviewVerdict.APPROVE_PARTIALLY), None, "no_categories"),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, *PROPOSAL), None, "use_approve"),
    (answer(ReviewVerdict.APPROVE), answer(ReviewVerdict.APPROVE), "same_reviewer"),
    (answer(ReviewVerdict.APPROVE_PARTIALLY, OPL, who="bram"),
     answer(ReviewVerdict.APPROVE_PARTIALLY, GEZ, PER), "wider_than_first"),
])
def test_refused_answers_say_why(given: ReviewAnswer, first: ReviewAnswer | None,
                                 code: str) -> None:
    refused = check_answer(given, proposal=PROPOSAL, first=first)
    assert isinstance(refused, Refusal)
    assert refused.code == code
    assert len(refused.message) > 20


def test_a_reviewed_decision_keeps_the_proposal_and_explains_what_the_reviewer_withheld(
        shipped_table: GroundTable) -> None:
    engine = leerplicht(shipped_table)
    assert engine.outcome is Outcome.NEEDS_REVIEW
    version = shipped_table.version(engine.ground_version or "")
    partial = reviewed_decision(engine, version, (OPL, PER))
    assert partial.outcome is Outcome.PARTIALLY_APPROVED
    assert partial.released == (OPL, PER)
    assert partial.withheld == (Category.CONTACTHISTORIE, GEZ)
    assert partial.proposal == engine.proposal
    assert partial.review_triggers == engine.review_triggers
    assert [(r.code.value, r.categories) for r in partial.reasons] == [
        ("ground_applies", (OPL, PER)), ("category_not_covered", (Category.CONTACTHISTORIE,)),
        ("withheld_by_reviewer", (GEZ,))]
    rejected = reviewed_decision(engine, version, ())
    assert rejected.outcome is Outcome.REJECTED
    assert rejected.released == ()
    assert [r.code.value for r in rejected.reasons] == ["category_not_covered",
                                                        "rejected_by_reviewer"]
    full = reviewed_decision(engine, version, PROPOSAL)
    assert full.outcome is Outcome.PARTIALLY_APPROVED  # contacthistorie stays withheld by law
    assert full.released == PROPOSAL
