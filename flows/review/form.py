"""The legal reviewer's form on a waiting ``review-request`` run, and the account it opens with.

The form is a typed Prefect ``RunInput``: the Prefect UI renders it from its JSON schema (a
drop-down for the decision, a multi-select limited to the categories the ground version allows
for this request, text fields for motivation, reviewer id and one-time code). The server checks
the schema; the flow checks everything else after resuming and, if it refuses, opens the form
again with the reason on top.

The description tells the reviewer everything needed and nothing more: subjects appear only
masked (the last three digits) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field, create_model

from legal_bases import limits
from legal_bases.decision import Decision
from legal_bases.ground import GroundVersion
from legal_bases.request import DisclosureRequest
from legal_bases.vocabulary import Category, ReviewVerdict

VERDICT_HELP = {
    ReviewVerdict.APPROVE.value: "approve: release everything offered",
    ReviewVerdict.APPROVE_PARTIALLY.value: "approve_partially: release only the categories "
                                           "selected below",
    ReviewVerdict.REJECT.value: "reject: release nothing",
}


def review_form(releasable: tuple[Category, ...]) -> type[RunInput]:
    """The form for a review that can release at most ``releasable`` (the engine's proposal,
    or for a second reviewer what the first approved): only those are offered.

    The decision is required (no default: a reviewer chooses). Categories are asked for only
    where they matter: with two or more releasable, ``approve_partially`` and the
    categories to release are offered; with one, narrowing is a rejection, so the form offers
    approve or reject and no categories field.
    """
    narrowable = len(releasable) > 1
    verdicts = [v.value for v in ReviewVerdict
                if narrowable or v is not ReviewVerdict.APPROVE_PARTIALLY]
    verdict: Any = Literal[tuple(verdicts)]
    help_text = " · ".join(VERDICT_HELP[v] for v in verdicts)
    fields: dict[str, Any] = {
        "decision": (verdict, Field(
            title="Decision", description=help_text, json_schema_extra={"position": 0})),
    }
    if narrowable:
        choice: Any = Literal[tuple(c.value for c in releasable)]
        fields["categories"] = (list[choice], Field(
            # Empty unless chosen: the UI sends no ``categories`` when none is selected, and a
            # default of the whole proposal would put categories in the answer the reviewer
            # never chose (approve_partially "chose the whole proposal"; a second reviewer's
            # approve "widened" a narrowed first review).
            default_factory=list, title="Categories to release (approve_partially only)",
            description="Only for approve_partially: the categories to release (the others "
                        "are withheld). Leave empty for approve and reject. Only what can "
                        "still be released for this request is offered.",
            json_schema_extra={"position": 1}))
    fields |= {
        "motivation": (str, Field(
            min_length=limits.MIN_MOTIVATION_CHARS, max_length=limits.MAX_MOTIVATION_CHARS,
            title="Motivation",
            description="Why this decision: the facts and the weighing. Never write a BSN or "
                        "another identifier here.", json_schema_extra={"position": 2})),
        "reviewer_id": (str, Field(
            min_length=1, max_length=limits.MAX_REVIEWER_ID_LENGTH, title="Your reviewer id",
            description="As enrolled with `disclosure reviewers add`.",
            json_schema_extra={"position": 3})),
        "code": (str, Field(
            pattern=rf"^[0-9]{{{limits.TOTP_DIGITS}}}$", title="One-time code",
            description="The current code from your authenticator app; each code counts once.",
            json_schema_extra={"position": 4})),
    }
    model: type[RunInput] = create_model(
        "ReviewDecision", __base__=RunInput, **fields)
    return model


@dataclass(frozen=True)
class FirstReview:
    """The accepted first half of a four-eyes review, as the second reviewer sees it."""

    reviewer: str
    role: str
    verdict: str
    categories: list[str]
    motivation: str


def plain(text: str) -> str:
    """A partner's free text (a case reference, an authorisation's reference) as Markdown
    shows it literally: a code span, in which no link, autolink, image, HTML or emphasis of the
    partner's making reaches the reviewer's screen (a backtick, which would end the span,
    is shown as an apostrophe)."""
    literal = text.replace("`", "'")
    return f"`{literal}`"


@dataclass(frozen=True)
class Case:
    """What a reviewer is told about a request: the request, its ground, the engine's
    proposal and why a person must decide (subjects masked and counted)."""

    request: DisclosureRequest
    request_id: str
    partner: str
    body: str
    ground_title: str
    version: GroundVersion
    decision: Decision
    deadline: date | None


def describe(case: Case, *, today: date, first: FirstReview | None,
             refusal: str | None) -> str:
    """The Markdown account the reviewer reads above the form."""
    lines: list[str] = []
    if refusal:
        lines += [f"> **Your last answer was not accepted:** {refusal}", ""]
    lines += case_account(case, today=today)
    if first is not None:
        lines += ["---", "#### Four eyes: a special category would be released",
                  f"**First review** by {first.reviewer} ({first.role}): `{first.verdict}`"
                  + (f" — {', '.join(first.categories)}" if first.categories else ""),
                  f"> {first.motivation}", "",
                  "You are the second reviewer: confirm, narrow (approve_partially with fewer "
                  "categories) or reject. You cannot be the first reviewer.", ""]
    lines.append("*Fill in the form below. Your reviewer id and current one-time code are "
                 "checked by the engine; the decision is recorded in the ledger with your "
                 "motivation, and only then is anything delivered.*")
    return "\n".join(lines)


def case_account(case: Case, *, today: date) -> list[str]:
    """The case in Markdown lines: the same on the form and on the review run's page."""
    request, decision, version, deadline = (case.request, case.decision, case.version,
                                            case.deadline)
    lines = [f"### Request `{request.reference}` from {case.partner} ({case.body})",
             f"Ledger id `{case.request_id}`", ""]
    citation = version.citation
    lines += [f"**Ground:** `{version.ground_id}` — {case.ground_title}",
              f"[{citation.short}]({citation.url}) · version `{version.id}`", ""]
    lines.append(f"**Purpose:** {request.purpose.value}  ")
    lines.append(f"**Case reference:** {plain(request.case_reference or '—')}  ")
    if request.authorisations:
        shown = ", ".join(f"{a.kind.value} {plain(a.reference)}"
                          + (f" (issued {a.issued_on.isoformat()})" if a.issued_on else "")
                          for a in request.authorisations)
        lines.append(f"**Authorisations:** {shown}  ")
    lines.append(f"**Reference date:** {request.reference_date.isoformat()}")
    lines.append("")
    count = len(request.subjects)
    shown_subjects = ", ".join(f"`{s.id_type.value} {s.masked}`"
                               for s in request.subjects[:limits.REVIEW_FORM_SUBJECTS_SHOWN])
    more = f" and {count - limits.REVIEW_FORM_SUBJECTS_SHOWN} more" if (
        count > limits.REVIEW_FORM_SUBJECTS_SHOWN) else ""
    lines += [f"**Subjects:** {count} — {shown_subjects}{more}", ""]
    lines.append(f"**Requested categories:** {', '.join(c.value for c in request.categories)}")
    lines.append("")
    proposal = decision.proposal
    if proposal is not None:
        lines.append("**The engine proposes to release:** "
                     + (", ".join(c.value for c in proposal.released) or "nothing"))
    withheld = [f"{', '.join(c.value for c in r.categories)} ({r.code.value}: {r.citation.short})"
                for r in decision.reasons if r.code.value != "ground_applies" and r.categories]
    if withheld:
        lines.append(f"**Withheld by law whatever you decide:** {'; '.join(withheld)}")
    lines.append("")
    lines.append("**Why a person must decide:**")
    for trigger in decision.review_triggers:
        about = f" ({', '.join(c.value for c in trigger.categories)})" if trigger.categories else ""
        lines.append(f"- `{trigger.code.value}`{about} — {trigger.citation.short}")
    lines.append("")
    if deadline is not None:
        days = (deadline - today).days
        when = (f"{days} day(s) left" if days > 0 else "today" if days == 0
                else f"{-days} day(s) OVERDUE")
        lines += [f"**Deadline:** {deadline.isoformat()} ({when})", ""]
    return lines
