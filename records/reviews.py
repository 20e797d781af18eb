"""Legal review on the record: the enrolled reviewers, the one-time codes they used, and every
answer they gave on a request's review form, accepted or refused (all insert-only).

Prefect's open-source server records nobody as the sender of a resume, and a name typed in a
form proves nothing, so identity is bound here: a reviewer is enrolled with a TOTP secret
(RFC 6238) that only their authenticator app and the ledger (sealed) know; an answer counts only
with the current code, and each code counts once (``totp_uses``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel, col

from legal_bases import limits
from records import chain, data_keys, totp
from records.chain import NewEvent
from records.decisions import set_states
from records.errors import DataKeyError, LedgerError
from records.models import (
    ACTOR_LENGTH,
    FLOW_RUN_ID_LENGTH,
    ID_LENGTH,
    REVIEW_TABLES,
    STATUS_LENGTH,
    AuditEvent,
    add_length_checks,
)
from records.timestamps import UTCDateTime, iso, utc
from records.vocabulary import RequestState

REVIEWER_ID_LENGTH = limits.COLUMN_REVIEWER_ID_LENGTH
NAME_LENGTH = limits.COLUMN_NAME_LENGTH
ROLE_LENGTH = limits.COLUMN_ROLE_LENGTH
SEALED_LENGTH = 512
CODE_LENGTH = 64

#: The audit events of enrolling and removing a reviewer.
ENROLLED = "reviewer_enrolled"
REMOVED = "reviewer_removed"
#: The roles a reviewer can have; any enrolled reviewer may decide, the role is on the record.
ROLES = ("jurist", "senior_jurist", "privacy_officer")



class ReviewerRow(SQLModel, table=True):
    """An enrolled reviewer (insert-only): id, name, role, and the sealed TOTP secret."""

    __tablename__ = "reviewers"

    id: str = Field(sa_column=Column(String(REVIEWER_ID_LENGTH), primary_key=True))
    name: str = Field(sa_column=Column(String(NAME_LENGTH), nullable=False))
    role: str = Field(sa_column=Column(String(ROLE_LENGTH), nullable=False))
    totp_secret_sealed: str = Field(sa_column=Column(String(SEALED_LENGTH), nullable=False))
    enrolled_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ReviewerRemoval(SQLModel, table=True):
    """A reviewer who may no longer decide, from ``removed_at`` on (insert-only)."""

    __tablename__ = "reviewer_removals"

    reviewer_id: str = Field(sa_column=Column(
        String(REVIEWER_ID_LENGTH), ForeignKey("reviewers.id", name="fk_removals_reviewer"),
        primary_key=True))
    removed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class TotpUse(SQLModel, table=True):
    """A one-time code that was used (insert-only): the same code never counts twice."""

    __tablename__ = "totp_uses"

    reviewer_id: str = Field(sa_column=Column(
        String(REVIEWER_ID_LENGTH), ForeignKey("reviewers.id", name="fk_totp_uses_reviewer"),
        primary_key=True))
    time_step: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    used_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class ReviewAnswerRow(SQLModel, table=True):
    """One answer on a request's review form, accepted or refused, in order (insert-only).

    ``seq`` numbers the answers of a request from 0; the review flow waits for answer ``seq``
    under the form key ``review-<seq>``, so after a restart it knows where it was.
    """

    __tablename__ = "review_answers"

    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_review_answers_request"),
        primary_key=True))
    seq: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    reviewer_id: str = Field(sa_column=Column(String(ACTOR_LENGTH), nullable=False))
    role: str | None = Field(default=None, sa_column=Column(String(ROLE_LENGTH)))
    verdict: str = Field(sa_column=Column(String(STATUS_LENGTH), nullable=False))
    categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    motivation: str = Field(sa_column=Column(Text, nullable=False))
    accepted: bool = Field(sa_column=Column(Boolean, nullable=False))
    step: str | None = Field(default=None, sa_column=Column(String(STATUS_LENGTH)))
    refusal_code: str | None = Field(default=None, sa_column=Column(String(CODE_LENGTH)))
    refusal_message: str | None = Field(default=None, sa_column=Column(Text))
    answered_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(FLOW_RUN_ID_LENGTH)))


for _name in REVIEW_TABLES:
    add_length_checks(SQLModel.metadata.tables[_name])


class ReviewerError(LedgerError):
    """Raised when a reviewer cannot be enrolled or removed as asked."""


@dataclass(frozen=True, slots=True)
class Reviewer:
    """An enrolled reviewer as the review flow sees them."""

    id: str
    name: str
    role: str
    active: bool


def enroll_reviewer(*, session: Session, reviewer_id: str, name: str, role: str,
                    seal: totp.SecretSeal, now: datetime) -> str:
    """Enrol a reviewer; returns the new TOTP secret, to be shown once and never again."""
    if role not in ROLES:
        raise ReviewerError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if session.get(ReviewerRow, reviewer_id) is not None:
        raise ReviewerError(f"reviewer {reviewer_id!r} is already enrolled")
    secret = totp.new_secret()
    sealed = seal.seal(secret)
    with session.begin_nested():
        session.add(ReviewerRow(id=reviewer_id, name=name, role=role,
                                totp_secret_sealed=sealed, enrolled_at=utc(now)))
        session.flush()
        chain.append_events(session=session, events=[NewEvent(
            kind=ENROLLED, occurred_at=utc(now), actor="operator",
            payload={"reviewer_id": reviewer_id, "role": role,
                     "sealed_secret_sha256": sealed_secret_digest(sealed)})])
    return secret


def sealed_secret_digest(sealed: str) -> str:
    """What a ``reviewer_enrolled`` event says of the reviewer's sealed secret."""
    return hashlib.sha256(sealed.encode("utf-8")).hexdigest()


def remove_reviewer(*, session: Session, reviewer_id: str, now: datetime) -> None:
    """Stop a reviewer from deciding from now on (the enrolment stays on the record)."""
    if session.get(ReviewerRow, reviewer_id) is None:
        raise ReviewerError(f"no reviewer {reviewer_id!r}")
    if session.get(ReviewerRemoval, reviewer_id) is not None:
        raise ReviewerError(f"reviewer {reviewer_id!r} was removed before")
    with session.begin_nested():
        session.add(ReviewerRemoval(reviewer_id=reviewer_id, removed_at=utc(now)))
        session.flush()
        chain.append_events(session=session, events=[NewEvent(
            kind=REMOVED, occurred_at=utc(now), actor="operator",
            payload={"reviewer_id": reviewer_id})])


def reviewers(*, session: Session) -> list[Reviewer]:
    """Every enrolled reviewer, active or removed, by id."""
    removed = set(session.execute(select(col(ReviewerRemoval.reviewer_id))).scalars())
    return [Reviewer(r.id, r.name, r.role, r.id not in removed)
            for r in session.execute(select(ReviewerRow).order_by(col(ReviewerRow.id))).scalars()]


def verify_code(*, session: Session, reviewer_id: str, code: str, seal: totp.SecretSeal,
                now: datetime) -> Reviewer | str:
    """The reviewer if ``code`` is their current one-time code and unused; else why not.

    A reviewer counts only as the record has them: their enrolment's ``reviewer_enrolled``
    event, sealed with the chain key, names them (and, since 0.4.0, the digest of their sealed
    secret, so a row whose secret was swapped for another reviewer's does not count), and
    neither a removal row nor a sealed ``reviewer_removed`` event stops them. Someone who can
    write to the database but does not hold the chain key cannot make a reviewer. A code that
    matches is spent at once (in the caller's transaction), so it counts once.
    """
    row = session.get(ReviewerRow, reviewer_id)
    if row is None:
        return "unknown_reviewer"
    enrolled = [e for e in chain.sealed_events(session=session, kind=ENROLLED)
                if e.payload.get("reviewer_id") == reviewer_id]
    digest = enrolled[-1].payload.get("sealed_secret_sha256") if enrolled else None
    if not enrolled or (digest is not None
                        and digest != sealed_secret_digest(row.totp_secret_sealed)):
        return "reviewer_not_on_record"
    if session.get(ReviewerRemoval, reviewer_id) is not None or any(
            e.payload.get("reviewer_id") == reviewer_id
            for e in chain.sealed_events(session=session, kind=REMOVED)):
        return "reviewer_removed"
    step = totp.matching_step(seal.open(row.totp_secret_sealed), code, now=utc(now).timestamp())
    if step is None:
        return "wrong_code"
    try:
        with session.begin_nested():
            session.add(TotpUse(reviewer_id=reviewer_id, time_step=step, used_at=utc(now)))
            session.flush()
    except IntegrityError:
        return "code_reused"
    return Reviewer(row.id, row.name, str(enrolled[-1].payload.get("role") or row.role), True)


def answers_for(*, session: Session, request_id: str) -> list[ReviewAnswerRow]:
    """The answers given on a request's review form, in order, their motivations opened with
    the request's data key (:data:`MOTIVATION_REMOVED` once the request is shredded). The rows
    are detached from the session: they are read, never written back."""
    rows = list(session.execute(select(ReviewAnswerRow)
                                .where(col(ReviewAnswerRow.request_id) == request_id)
                                .order_by(col(ReviewAnswerRow.seq))).scalars())
    key = data_keys.key_for(session, request_id) if rows else None
    pending = bool(rows) and data_keys.is_pending(session, request_id)
    for row in rows:
        session.expunge(row)
        row.motivation = open_motivation(key, row.motivation, pending=pending)
    return rows


#: What a motivation reads as once its request is shredded.
MOTIVATION_REMOVED = "(removed under retention)"


def open_motivation(key: data_keys.DataKey | None, stored: str, *, pending: bool = False) -> str:
    """A stored motivation's text (:data:`MOTIVATION_REMOVED` once its key is gone; in clear
    only for a request of before 0.8.0 still to be sealed, ``pending``)."""
    text = data_keys.open_field(key, data_keys.MOTIVATION, stored, pending=pending)
    return MOTIVATION_REMOVED if text is None else text


def motivation_digest(motivation: str) -> str:
    """sha256 of a motivation as stored: of its sealed text (or, for an answer recorded before
    0.8.0, of the clear text the event of that time committed to)."""
    return hashlib.sha256(motivation.encode("utf-8")).hexdigest()


def record_answer(*, session: Session, answer: ReviewAnswerRow,
                  submitted_at: datetime | None = None) -> ReviewAnswerRow:
    """Record one answer and its audit event. The motivation is free text that may name people:
    it is stored sealed with the request's data key, and the event holds the sha256 of the
    sealed text (``motivation_sealed_sha256``), which stays checkable after shredding.

    ``submitted_at`` is when the reviewer submitted it (the time its one-time code was checked
    as of), where that differs from when the review run took it (``answered_at``). The row
    returned is detached, with the motivation in clear.
    """
    key = data_keys.key_for(session, answer.request_id)
    if key is None:
        raise DataKeyError(f"request {answer.request_id} has no data key (shredded): "
                                     "no answer can be recorded on it")
    plain = answer.motivation
    answer.motivation = key.seal(data_keys.MOTIVATION, plain)
    with session.begin_nested():
        session.add(answer)
        session.flush()
        payload: dict[str, Any] = {
            "seq": answer.seq, "reviewer_id": answer.reviewer_id, "role": answer.role,
            "verdict": answer.verdict, "categories": answer.categories,
            "accepted": answer.accepted, "step": answer.step,
            "refusal_code": answer.refusal_code,
            "motivation_sealed_sha256": motivation_digest(answer.motivation)}
        if submitted_at is not None:
            payload["submitted_at"] = iso(submitted_at)
        chain.append_events(session=session, events=[NewEvent(
            kind="review_answer_recorded", occurred_at=answer.answered_at,
            actor=answer.reviewer_id, request_id=answer.request_id,
            flow_run_id=answer.flow_run_id, payload=payload)])
    session.expunge(answer)
    answer.motivation = plain
    return answer


def record_review_event(*, session: Session, request_id: str, kind: str, now: datetime,
                        payload: dict[str, Any], state: str | None = None,
                        flow_run_id: str | None = None) -> None:
    """An audit event about a review (overdue, escalated), moving the request's state if given."""
    with session.begin_nested():
        if state is not None:
            set_states(session, {request_id: (RequestState(state), utc(now))})
        chain.append_events(session=session, events=[NewEvent(
            kind=kind, occurred_at=utc(now), actor="engine", request_id=request_id,
            flow_run_id=flow_run_id,
            payload={**payload, **({"state": state} if state is not None else {})})])


def has_event(*, session: Session, request_id: str, kind: str) -> bool:
    """Whether the request's audit trail has an event of ``kind``."""
    return session.execute(select(col(AuditEvent.seq)).where(
        col(AuditEvent.request_id) == request_id, col(AuditEvent.kind) == kind).limit(1)
    ).first() is not None


def reviewer_names(*, session: Session, ids: Sequence[str]) -> dict[str, Reviewer]:
    """The reviewers with ``ids`` (for the form's account of a first review)."""
    return {r.id: r for r in reviewers(session=session) if r.id in ids}
