"""The case on the review run's page: a Markdown artifact that says where the review stands.

The Prefect UI shows a suspended run's form only once Resume is opened; the run's Artifacts tab
shows this account from the start: the same case summary as the form
(:func:`flows.review.form.case_account`), where the review stands, every answer so far
(accepted or refused, by whom in which role, what it would release, and why a refused one was
refused) and, at the end, the decision recorded and whether it was delivered. Motivations stay
in the ledger (free text may name people); the account says that one was given. Anything
shaped like a BSN or onderwijsnummer is masked as a last defence. The artifact's key is
``review-case-<reference>-<request id>``; it changes only when the account does, in place on
the review run that wrote it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from flows.artifacts import publish_markdown
from flows.review.form import Case, case_account
from flows.review.labels import shown_reference
from legal_bases.identifiers import mask_identifier_shapes

#: How much of the reference a case's artifact key carries.
KEY_REFERENCE_CHARS = 24
_NOT_KEY = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class AnswerShown:
    """One answer on the form, as the case page shows it."""

    seq: int
    answered_at: datetime
    reviewer: str
    role: str
    verdict: str
    categories: list[str]
    accepted: bool
    step: str | None
    refusal: str | None


@dataclass(frozen=True)
class DecisionShown:
    """The reviewed decision in force, and what became of it."""

    outcome: str
    released: list[str]
    decided_by: str
    decided_at: datetime
    state: str


def case_key(request_id: str, reference: str | None) -> str:
    """The artifact key of a request's case: ``review-case-<reference>-<request id>`` (keys
    are lower-case letters, digits and dashes; the reference masked, the id keeps it unique)."""
    slug = _NOT_KEY.sub("-", shown_reference(reference).lower()).strip("-")[:KEY_REFERENCE_CHARS]
    return f"review-case-{slug.strip('-') or 'request'}-{request_id}".lower()


def _answer_line(answer: AnswerShown) -> str:
    what = f"`{answer.verdict}`" + (f" — {', '.join(answer.categories)}"
                                    if answer.categories else "")
    at = answer.answered_at.strftime("%Y-%m-%d %H:%M UTC")
    who = f"{answer.reviewer} ({answer.role or 'role not on record'})"
    if not answer.accepted:
        return f"{answer.seq + 1}. {at} · {who} · {what} · **refused**: {answer.refusal}"
    step = {"first": "accepted as the first of two reviewers",
            "second": "accepted as the second reviewer: decided",
            "single": "accepted: decided"}.get(answer.step or "", "accepted")
    return f"{answer.seq + 1}. {at} · {who} · {what} · {step} (motivation recorded)"


def case_markdown(case: Case, *, today: date, status: str, answers: list[AnswerShown],
                  decision: DecisionShown | None) -> str:
    """The case page: status, the case, the answers so far, the decision."""
    lines = [f"**Status:** {status}", "", *case_account(case, today=today), "#### Answers"]
    lines += [_answer_line(a) for a in answers] or ["*None yet.*"]
    lines.append("")
    if decision is not None:
        lines += ["#### Decision",
                  f"`{decision.outcome}` by {decision.decided_by} on "
                  f"{decision.decided_at.strftime('%Y-%m-%d %H:%M UTC')} — released: "
                  f"{', '.join(decision.released) or 'nothing'}; the request is now "
                  f"`{decision.state}`."]
    return mask_identifier_shapes("\n".join(lines))


def publish_case(request_id: str, reference: str | None, markdown: str, *, title: str,
                 status: str, run_id: str | None) -> bool:
    """Write the case artifact of a request if it changed: in place on the review run
    ``run_id`` once it has one (one card on the run's page), else a new version on it.
    ``title`` names the case in the Artifacts list (the review run's name)."""
    return publish_markdown(case_key(request_id, reference), markdown,
                            description=f"{title}: {status}", owner_run_id=run_id)
