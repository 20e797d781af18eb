"""The one gate personal data leaves through (DESIGN.md section 10).

Nothing is fetched from the register or delivered unless, in the ledger as committed:

* the request was accepted as valid — recorded valid, with a ``request_received`` event (not
  ``request_invalid``), and with as many subjects recorded as it names;
* the decision being carried out is the request's decision in force (its highest ``sequence``),
  it releases data (``approved`` or ``partially_approved``), and it releases exactly the
  categories that are about to be sent;
* that decision's ``decision_recorded`` event is on the chain, sealed with the chain key (an
  event someone wrote into the database without the key vouches for nothing), and says the same
  outcome and categories; so is the request's ``request_received`` event;
* the request waits for delivery (state ``decided``).

The delivery step asks :func:`check_releases` just before it reads the register and again holds
the document against the decision (:func:`document_refusal`) just before it hands it to a
destination, so that a bug anywhere upstream — a refused submission decided after all, a decision
superseded by a reviewer, a row edited behind the triggers' back — cannot open the gate again.
A refusal names a code (:data:`REFUSALS`) and ids, never personal data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from legal_bases.vocabulary import Outcome
from records.chain import is_sealed, keys_of
from records.decisions import in_chunks
from records.models import AuditEvent, DecisionRow, RequestRow, RequestStatus, RequestSubject
from records.vocabulary import EventKind, RequestState

_REQUESTS: Table = RequestRow.__table__  # type: ignore[attr-defined]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[attr-defined]
_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_STATUS: Table = RequestStatus.__table__  # type: ignore[attr-defined]
_SUBJECTS: Table = RequestSubject.__table__  # type: ignore[attr-defined]

RELEASING = frozenset({Outcome.APPROVED.value, Outcome.PARTIALLY_APPROVED.value})

#: Why the gate refused a release.
REFUSALS: Mapping[str, str] = {
    "request_missing": "the ledger holds no such request",
    "request_invalid": "the submission was recorded as invalid (refused at intake)",
    "request_event_missing": "the request has no request_received event",
    "subjects_missing": "the request's recorded subjects do not match its subject count",
    "decision_missing": "the ledger holds no such decision on the request",
    "decision_superseded": "a later decision on the request is in force",
    "decision_not_releasing": "the decision in force releases nothing",
    "decision_event_missing": "the decision's decision_recorded event is not on the chain",
    "decision_event_differs": "the decision's event records another outcome or other categories",
    "categories_differ": "what is about to be sent is not exactly what the decision releases",
    "not_awaiting_delivery": "the request is not in state decided",
}


@dataclass(frozen=True, slots=True)
class Release:
    """A release about to happen: the decision carried out and the categories to be sent."""

    request_id: str
    decision_id: str
    categories: tuple[str, ...]


@dataclass
class _Facts:
    """What the ledger holds about one request, as far as the gate asks."""

    request: Any = None
    state: str | None = None
    subjects: int = 0
    received: bool = False
    latest: str | None = None


def check_releases(*, session: Session, releases: Sequence[Release]) -> dict[str, str | None]:
    """For each release (by decision id): None if the gate lets it through, else the refusal
    code (:data:`REFUSALS`). A handful of batched queries for the whole sequence."""
    ids = list(dict.fromkeys(r.request_id for r in releases))
    keys = keys_of(session)
    facts = {request_id: _Facts() for request_id in ids}
    decisions: dict[str, dict[str, Any]] = {}
    events: dict[str, list[Mapping[str, Any]]] = {}
    for chunk in in_chunks(ids):
        for request in session.execute(
                select(_REQUESTS.c.id, _REQUESTS.c.valid, _REQUESTS.c.subject_count)
                .where(_REQUESTS.c.id.in_(chunk))):
            facts[request.id].request = request
        for status in session.execute(select(_STATUS.c.request_id, _STATUS.c.state)
                                      .where(_STATUS.c.request_id.in_(chunk))):
            facts[status.request_id].state = status.state
        for request_id, count in session.execute(
                select(_SUBJECTS.c.request_id, func.count())
                .where(_SUBJECTS.c.request_id.in_(chunk)).group_by(_SUBJECTS.c.request_id)):
            facts[request_id].subjects = int(count)
        for decision in session.execute(
                select(_DECISIONS.c.id, _DECISIONS.c.request_id, _DECISIONS.c.sequence,
                       _DECISIONS.c.outcome, _DECISIONS.c.released)
                .where(_DECISIONS.c.request_id.in_(chunk))):
            decisions[decision.id] = dict(decision._mapping)
            held = facts[decision.request_id].latest
            if held is None or decision.sequence > decisions[held]["sequence"]:
                facts[decision.request_id].latest = decision.id
        for event in session.execute(
                select(_EVENTS)
                .where(_EVENTS.c.request_id.in_(chunk),
                       _EVENTS.c.kind.in_([EventKind.DECISION_RECORDED.value,
                                           EventKind.REQUEST_RECEIVED.value]))):
            if not is_sealed(event, keys):
                continue  # written by someone without the chain key: it vouches for nothing
            if event.kind == EventKind.REQUEST_RECEIVED.value:
                facts[event.request_id].received = True
            elif isinstance(event.payload, dict):
                events.setdefault(str(event.payload.get("decision_id")), []).append(event.payload)
    return {r.decision_id: _refusal(r, facts[r.request_id], decisions.get(r.decision_id),
                                    events.get(r.decision_id, []))
            for r in releases}


def _refusal(release: Release, facts: _Facts, decision: dict[str, Any] | None,
             events: list[Mapping[str, Any]]) -> str | None:
    request = facts.request
    if request is None:
        return "request_missing"
    if request.valid is not True:
        return "request_invalid"
    if not facts.received:
        return "request_event_missing"
    if request.subject_count is None or facts.subjects != request.subject_count:
        return "subjects_missing"
    if decision is None or decision["request_id"] != release.request_id:
        return "decision_missing"
    if facts.latest != release.decision_id:
        return "decision_superseded"
    if decision["outcome"] not in RELEASING:
        return "decision_not_releasing"
    if not events:
        return "decision_event_missing"
    released = sorted(decision["released"] or [])
    if any(e.get("outcome") != decision["outcome"] or sorted(e.get("released") or []) != released
           for e in events):
        return "decision_event_differs"
    if sorted(release.categories) != released or not released:
        return "categories_differ"
    if facts.state != RequestState.DECIDED.value:
        return "not_awaiting_delivery"
    return None


def document_refusal(document: Mapping[str, Any], *, decision_id: str,
                     released: Sequence[str]) -> str | None:
    """None if a delivery document carries exactly the decision's categories and nothing else,
    else ``categories_differ``: the last look before the document leaves."""
    disclosure = document.get("disclosure")
    if not isinstance(disclosure, Mapping) or disclosure.get("decision_id") != decision_id:
        return "categories_differ"
    wanted = sorted(released)
    if sorted(disclosure.get("released") or []) != wanted:
        return "categories_differ"
    for record in document.get("records") or []:
        if not isinstance(record, Mapping) or sorted(k for k in record if k != "subject") != wanted:
            return "categories_differ"
    return None
