"""The decision policy of DESIGN.md section 6 as one pure function, :func:`assess`.

The checks run in the policy's order and the first failing one decides. Every decision carries
reason codes, each with the citation it rests on: the applied ground version's article, or for
the general rules the article in ``principles.yaml``. No clock, no I/O, no randomness: the same
request read against the same table decides the same, today and in ten years.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

from legal_bases.citation import Citation
from legal_bases.decision import Decision, Proposal, Reason
from legal_bases.errors import Problem, TableError
from legal_bases.request import DisclosureRequest, InvalidRequest
from legal_bases.table import GroundTable
from legal_bases.validator import load_yaml, new_validator
from legal_bases.vocabulary import (
    SPECIAL_CATEGORIES,
    Body,
    Category,
    Outcome,
    ReasonCode,
    ReviewMode,
    ReviewTrigger,
)

PRINCIPLES_FILE = Path(__file__).parent / "principles.yaml"

#: Reasons that rest on a general rule rather than on the claimed ground's own article.
PRINCIPLED: tuple[ReasonCode | ReviewTrigger, ...] = (
    ReasonCode.INVALID_REQUEST,
    ReasonCode.UNKNOWN_GROUND,
    ReasonCode.PURPOSE_NOT_COVERED,
    ReasonCode.CATEGORY_NOT_COVERED,
    ReasonCode.NOTHING_TO_RELEASE,
    ReasonCode.SPECIAL_CATEGORY_NOT_ALLOWED,
    ReviewTrigger.SPECIAL_CATEGORY,
    ReviewTrigger.SHIELDED_SUBJECT,
    ReasonCode.WITHHELD_BY_REVIEWER,
    ReasonCode.REJECTED_BY_REVIEWER,
)


@cache
def principles() -> dict[str, Citation]:
    """The citations of the general rules, by reason code (loaded and checked once)."""
    name = str(PRINCIPLES_FILE)
    raw = load_yaml(PRINCIPLES_FILE.read_text("utf-8"))
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise TableError([Problem(name, "(file)", "must be a mapping of reason code to citation")])
    out: dict[str, Citation] = {}
    for code, citation in raw.items():
        validator = new_validator("ground", "principle")
        if not isinstance(citation, dict) or not validator.validate(citation):
            errs = validator.field_errors() if isinstance(citation, dict) else []
            problems.extend(Problem(name, f"{code}.{e.path}", e.message) for e in errs)
            if not isinstance(citation, dict):
                problems.append(Problem(name, str(code), "must be a citation mapping"))
            continue
        out[str(code)] = Citation.from_dict(citation)
    problems.extend(Problem(name, code.value, "is missing") for code in PRINCIPLED
                    if code.value not in out and code.value not in {p.field for p in problems})
    if problems:
        raise TableError(problems)
    return out


def principle(code: ReasonCode | ReviewTrigger) -> Citation:
    return principles()[code.value]


def assess(request: DisclosureRequest | InvalidRequest, requester_body: Body,
           table: GroundTable) -> Decision:
    """Decide a request for a requester of ``requester_body`` against ``table``.

    Implements DESIGN.md section 6 exactly; see the module docstring.
    """
    body, table_hash = requester_body, table.hash
    # 1. invalid request
    if isinstance(request, InvalidRequest):
        return Decision(Outcome.REJECTED, body, table_hash,
                        (Reason(ReasonCode.INVALID_REQUEST,
                                principle(ReasonCode.INVALID_REQUEST)),),
                        ground_id=request.legal_basis, errors=request.errors)
    subject_count = len(request.subjects)

    def rejected(code: ReasonCode, citation: Citation, version: str | None = None) -> Decision:
        return Decision(Outcome.REJECTED, body, table_hash, (Reason(code, citation),),
                        ground_id=request.legal_basis, ground_version=version,
                        subject_count=subject_count)

    # 2. unknown ground
    ground = table.get(request.legal_basis)
    if ground is None:
        return rejected(ReasonCode.UNKNOWN_GROUND, principle(ReasonCode.UNKNOWN_GROUND))
    # 3. not in force on the reference date
    version = ground.version_on(request.reference_date)
    if version is None:
        return rejected(ReasonCode.GROUND_NOT_IN_FORCE, ground.citation)
    cite, vid = version.citation, version.id
    # 4. requester's body
    if body not in version.requesters:
        return rejected(ReasonCode.REQUESTER_NOT_ENTITLED, cite, vid)
    # 5. purpose
    if request.purpose not in version.purposes:
        return rejected(ReasonCode.PURPOSE_NOT_COVERED,
                        principle(ReasonCode.PURPOSE_NOT_COVERED), vid)
    # 6. case reference, then authorisations
    if version.case_reference_required and not request.case_reference:
        return rejected(ReasonCode.MISSING_CASE_REFERENCE, cite, vid)
    if version.authorisations_required:
        present = request.authorisation_kinds
        if any(kind not in present for kind in version.authorisations_required):
            return rejected(ReasonCode.MISSING_AUTHORISATION, cite, vid)
    # 7. bulk where a single subject only is allowed
    if version.single_subject and subject_count > 1:
        return rejected(ReasonCode.BULK_NOT_ALLOWED, cite, vid)
    # 8. per category
    releasable = version.releasable
    released = tuple(c for c in request.categories if c in releasable)
    not_special = tuple(c for c in request.categories
                        if c not in releasable and c in SPECIAL_CATEGORIES)
    not_covered = tuple(c for c in request.categories
                        if c not in releasable and c not in SPECIAL_CATEGORIES)
    withheld = tuple(sorted(not_special + not_covered))
    withheld_reasons: tuple[Reason, ...] = ()
    if not_special:
        code = ReasonCode.SPECIAL_CATEGORY_NOT_ALLOWED
        withheld_reasons += (Reason(code, principle(code), not_special),)
    if not_covered:
        code = ReasonCode.CATEGORY_NOT_COVERED
        withheld_reasons += (Reason(code, principle(code), not_covered),)
    # 9. nothing left
    if not released:
        code = ReasonCode.NOTHING_TO_RELEASE
        return Decision(Outcome.REJECTED, body, table_hash,
                        (*withheld_reasons, Reason(code, principle(code))),
                        withheld=withheld, ground_id=ground.id, ground_version=vid,
                        subject_count=subject_count)
    # 10. review triggers
    triggers: tuple[Reason, ...] = ()
    if version.review is ReviewMode.ALWAYS:
        triggers += (Reason(ReviewTrigger.REVIEW_ALWAYS, cite),)
    special = tuple(c for c in released if c in SPECIAL_CATEGORIES)
    if special:
        triggers += (Reason(ReviewTrigger.SPECIAL_CATEGORY,
                            principle(ReviewTrigger.SPECIAL_CATEGORY), special),)
    if subject_count > version.auto_limit:
        triggers += (Reason(ReviewTrigger.ABOVE_AUTO_LIMIT, cite),)
    reasons = (Reason(ReasonCode.GROUND_APPLIES, cite, released), *withheld_reasons)
    if triggers:
        return Decision(Outcome.NEEDS_REVIEW, body, table_hash, reasons, withheld=withheld,
                        review_triggers=triggers, proposal=Proposal(released, withheld),
                        ground_id=ground.id, ground_version=vid, subject_count=subject_count)
    # 11. approved, or partially
    outcome = Outcome.PARTIALLY_APPROVED if withheld else Outcome.APPROVED
    return Decision(outcome, body, table_hash, reasons, released=released, withheld=withheld,
                    ground_id=ground.id, ground_version=vid, subject_count=subject_count)


def with_review_trigger(decision: Decision, trigger: ReviewTrigger,
                        categories: tuple[Category, ...] = ()) -> Decision:
    """The decision sent to review for a trigger found outside :func:`assess` (a shielded subject).

    An approved or partially approved decision becomes ``needs_review`` with its release as the
    proposal; a decision already in review gains the trigger; a rejection stays as it is.
    """
    reason = Reason(trigger, principle(trigger), categories)
    if decision.outcome is Outcome.REJECTED:
        return decision
    if decision.outcome is Outcome.NEEDS_REVIEW:
        if trigger in {r.code for r in decision.review_triggers}:
            return decision
        return replace(decision, review_triggers=(*decision.review_triggers, reason))
    return replace(decision, outcome=Outcome.NEEDS_REVIEW, released=(),
                   review_triggers=(reason,),
                   proposal=Proposal(decision.released, decision.withheld))
