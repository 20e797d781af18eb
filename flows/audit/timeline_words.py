"""The timeline's words: how a time, a flow run's id, a ledger event and a Prefect log line read
in a row of ``disclosure timeline``, and the masking every text shown passes through.

Pure functions of the ledger's and Prefect's values; the rows of the timeline
(:mod:`flows.audit.request_timeline`) carry what they say, in the text and the JSON alike. No
subject number appears: the ledger's payloads carry counts, categories, codes and digests, and
every detail shown is masked for nine-digit numbers as the log is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flows.logs import mask_identifiers
from flows.pipeline.review_runs import REVIEW_RUN_STARTED
from legal_bases.vocabulary import Outcome
from records.ledger import ENGINE
from records.models import AuditEvent
from records.vocabulary import EventKind

#: Keys of a structlog line that the timeline already shows elsewhere.
_LOG_NOISE = {"event", "timestamp", "level", "flow_run_id", "request_id", "logger"}


def utc_text(at: datetime) -> str:
    """A time as the timeline shows it: UTC, ISO 8601, milliseconds, ``Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def short_id(run_id: str | None) -> str:
    return run_id[:8] if run_id else "—"


def mask(text: str) -> str:
    """``text`` with every BSN-shaped number masked (the log's own last line of defence)."""
    return str(mask_identifiers(None, "", {"text": text})["text"])


# -- ledger events and log lines ---------------------------------------------------------------

def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


@dataclass(frozen=True)
class ReviewWords:
    """What a review answer's event does not say itself: the role each reviewer is enrolled
    with (an answer the identity check refused records no role) and the categories each answer
    released or would have released, by its ``seq`` (an ``approve`` releases the engine's
    proposal: :func:`records.replay_review.answer_releases`)."""

    roles: Mapping[str, str] = field(default_factory=dict)
    releases: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    def answer(self, p: Mapping[str, Any]) -> str:
        """The detail of a ``review_answer_recorded`` event with payload ``p``."""
        reviewer = str(p.get("reviewer_id"))
        role = p.get("role") or self.roles.get(reviewer) or "not enrolled"
        seq = p.get("seq")
        found = self.releases.get(seq) if isinstance(seq, int) else None
        releases = ", ".join(found if found is not None else p.get("categories") or ()) or (
            "nothing")
        if p.get("accepted"):
            return (f"#{seq} {p.get('verdict')} by {reviewer} ({role}): releases {releases}; "
                    f"accepted ({p.get('step')})")
        return (f"#{seq} {p.get('verdict')} by {reviewer} ({role}): would release {releases}; "
                f"refused: {p.get('refusal_code')}")


def describe_event(event: AuditEvent, review: ReviewWords | None = None) -> tuple[str, str]:
    """What an audit event says, as (what, detail): ids, codes, categories and counts only;
    ``review`` words the review answers."""
    p = event.payload
    kind = event.kind
    if kind == EventKind.REQUEST_RECEIVED.value:
        by_type = ", ".join(f"{k} {v}" for k, v in sorted((p.get("subjects_by_type") or {})
                                                           .items()))
        due = f"; due {p['due_date']}" if p.get("due_date") else ""
        return "received", (f"valid, via {p.get('channel')}; {p.get('legal_basis')} for "
                            f"{p.get('purpose')}, reference date {p.get('reference_date')}; "
                            f"{p.get('subject_count')} subject(s) ({by_type}); asks "
                            f"{_list(p.get('categories'))}{due}")
    if kind == EventKind.REQUEST_INVALID.value:
        return "received (invalid)", (f"via {p.get('channel')}; {p.get('error_count')} "
                                      f"error(s): {_list(p.get('error_codes'))}")
    if kind == EventKind.DECISION_RECORDED.value:
        return _describe_decision(p)
    if kind == EventKind.DELIVERY_RECORDED.value:
        receipt = str(p.get("receipt_sha256") or "")[:12]
        return "delivered", (f"to {p.get('destination')} ({p.get('status')}); "
                             f"{p.get('records', '?')} record(s), {p.get('not_found', '?')} not "
                             f"found; receipt sha256 {receipt or '—'}")
    if kind == EventKind.DELIVERY_FAILED.value:
        how = ("refused for good" if p.get("permanent")
               else "transient, the next sweep tries again")
        return "delivery failed", f"{p.get('error')}: {how}"
    if kind == REVIEW_RUN_STARTED:
        return "review run started", f"review run {short_id(str(p.get('review_run_id')))}"
    if kind == "review_answer_recorded":
        return "review answer", (review or ReviewWords()).answer(p)
    if kind == EventKind.REQUEST_SET_ASIDE.value:
        return "set aside", (f"at {p.get('step')}: {p.get('reason')} ({p.get('detail')}); an "
                             "operator must act")
    if kind == EventKind.REQUEST_SHREDDED.value:
        removed = p.get("removed") or {}
        return "shredded under retention", (
            f"term {p.get('term')}, {p.get('term_started')} – {p.get('term_ended')}: data key "
            f"destroyed; {removed.get('subject_rows', 0)} subject pseudonym(s) and "
            f"{removed.get('motivations', 0)} motivation(s) no longer readable")
    if kind == EventKind.OUTBOX_CLEANED.value:
        return "removed from the outbox", (
            f"{p.get('files')} file(s) of delivery {p.get('idempotency_key')} at "
            f"{p.get('partner_id')}: {_list(p.get('reasons'))}")
    if kind in ("review_overdue", "review_escalated"):
        return kind.replace("_", " "), f"deadline {p.get('deadline')}"
    return kind, ", ".join(f"{k}={_compact(v)}" for k, v in sorted(p.items()))


def _describe_decision(p: dict[str, Any]) -> tuple[str, str]:
    outcome = p.get("outcome")
    ground = p.get("ground_version") or p.get("ground_id") or "no ground"
    deadline = f"; deadline {p['deadline']}" if p.get("deadline") else ""
    if outcome == Outcome.NEEDS_REVIEW.value:
        proposal = p.get("proposal") or {}
        return "assessed: needs review", (
            f"{ground}; triggers {_list(p.get('review_triggers'))}; the proposal releases "
            f"{_list(proposal.get('released'))}{deadline}")
    engine = p.get("decided_by", ENGINE) == ENGINE
    what = "decided" if engine else "decided (review)"
    by = "engine" if engine else f"reviewer(s) {p.get('decided_by')}"
    reasons = f"; reasons {_list(p.get('reason_codes'))}" if p.get("reason_codes") else ""
    withheld = f"; withheld {_list(p.get('withheld'))}" if p.get("withheld") else ""
    return what, (f"{by}: {outcome} under {ground}; released {_list(p.get('released'))}"
                  f"{withheld}{reasons}{deadline}")


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def log_text(message: str) -> str:
    """A log line, shortened: a structlog JSON line as ``event key=value ...``."""
    try:
        data = json.loads(message)
    except ValueError:
        return message
    if not isinstance(data, dict) or "event" not in data:
        return message
    rest = [f"{k}={_compact(v)}" for k, v in sorted(data.items()) if k not in _LOG_NOISE]
    return " ".join([str(data["event"]), *rest])

