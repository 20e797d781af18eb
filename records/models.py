"""The ledger's tables (sqlmodel on SQLAlchemy 2), as created by ``migrations/versions``.

Five tables are the **record** and append-only — the migration installs triggers that make the
database itself refuse UPDATE and DELETE on them: ``requests``, ``decisions``, ``deliveries``,
``table_snapshots`` and ``audit_events``. A correction is a new row (a decision with
``supersedes``), never an update. ``request_subjects`` refuses UPDATE; its rows are deleted only
when a request is shredded under its retention term, with the request's data key
(:mod:`records.data_keys`, :mod:`records.retention`).

``request_status`` is the one mutable table. It is **not** the record: it is a work-queue
projection (which requests wait for what, and who has claimed them). Its ``state`` is the
``state`` carried by the latest state-changing audit event of the request, so it can always be
rebuilt from ``audit_events`` (:func:`records.ledger.derived_state`); claims are short leases,
not facts.

Every string column has a declared length, and a CHECK constraint on that length (named
``ck_<table>_<column>_length``) so that SQLite, which ignores VARCHAR lengths, refuses what
PostgreSQL refuses. Timestamps are UTC-aware (:class:`~records.timestamps.UTCDateTime`).
Personal data: ``requests.raw_body`` keeps the submission exactly as received (the record of
what a partner sent), sealed with the request's data key; ``request_subjects`` names subjects by
keyed pseudonym until the request is shredded.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from legal_bases import limits
from legal_bases.vocabulary import Outcome, SubjectIdType
from records.timestamps import UTCDateTime
from records.vocabulary import Channel

#: Lengths of the string columns (characters): stated in legal_bases/limits.py.
ID_LENGTH = limits.COLUMN_ID_LENGTH
HASH_LENGTH = limits.COLUMN_HASH_LENGTH
PARTNER_ID_LENGTH = limits.COLUMN_PARTNER_ID_LENGTH
BODY_LENGTH = limits.COLUMN_BODY_LENGTH
CHANNEL_LENGTH = limits.COLUMN_CHANNEL_LENGTH
REFERENCE_LENGTH = limits.MAX_REFERENCE_LENGTH
SLUG_LENGTH = limits.MAX_SLUG_LENGTH  # ground ids, purposes
GROUND_VERSION_LENGTH = limits.COLUMN_GROUND_VERSION_LENGTH
CORRELATION_ID_LENGTH = limits.COLUMN_CORRELATION_ID_LENGTH
INTAKE_KEY_LENGTH = limits.COLUMN_INTAKE_KEY_LENGTH
ID_TYPE_LENGTH = limits.COLUMN_ID_TYPE_LENGTH
OUTCOME_LENGTH = limits.COLUMN_OUTCOME_LENGTH
ACTOR_LENGTH = limits.COLUMN_ACTOR_LENGTH
FLOW_RUN_ID_LENGTH = limits.COLUMN_FLOW_RUN_ID_LENGTH
DESTINATION_LENGTH = limits.COLUMN_DESTINATION_LENGTH
IDEMPOTENCY_KEY_LENGTH = limits.COLUMN_IDEMPOTENCY_KEY_LENGTH
STATUS_LENGTH = limits.COLUMN_STATUS_LENGTH
KIND_LENGTH = limits.COLUMN_KIND_LENGTH
KEY_ID_LENGTH = limits.COLUMN_KEY_ID_LENGTH

#: The tables that are the record: insert-only, guarded by triggers in the migration.
APPEND_ONLY_TABLES: tuple[str, ...] = (
    "requests",
    "decisions",
    "deliveries",
    "table_snapshots",
    "audit_events",
)

metadata: MetaData = SQLModel.metadata


def _one_of(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class RequestRow(SQLModel, table=True):
    """One submission as received, valid or not (insert-only).

    ``raw_body`` is the exact text received; ``body_hash`` the sha256 of its canonical JSON (or of
    the text if it is not JSON), which tells a repeated submission from a conflicting one. The
    partial unique index lets a partner have one *accepted* request per reference while invalid
    attempts may repeat.
    """

    __tablename__ = "requests"
    __table_args__ = (
        Index("uq_requests_intake_key", "intake_key", unique=True),
        # a partner's own requests in order (GET /v1/requests), without scanning the others'
        Index("ix_requests_partner_received", "partner_id", "received_at", "id"),
        # requests in order of receipt, for a period (replay, the transparency report)
        Index("ix_requests_received_at", "received_at", "id"),
        Index("uq_requests_partner_reference", "partner_id", "reference", unique=True,
              sqlite_where=text("valid"), postgresql_where=text("valid")),
        CheckConstraint(_one_of("channel", [c.value for c in Channel]),
                        name="ck_requests_channel"),
        CheckConstraint("subject_count >= 0", name="ck_requests_subject_count"),
    )

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    partner_id: str = Field(sa_column=Column(String(PARTNER_ID_LENGTH), nullable=False))
    requester_body: str = Field(sa_column=Column(String(BODY_LENGTH), nullable=False))
    channel: str = Field(sa_column=Column(String(CHANNEL_LENGTH), nullable=False))
    reference: str | None = Field(default=None, sa_column=Column(String(REFERENCE_LENGTH)))
    received_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    raw_body: str = Field(sa_column=Column(Text, nullable=False))
    body_hash: str = Field(sa_column=Column(String(HASH_LENGTH), nullable=False))
    valid: bool = Field(sa_column=Column(Boolean, nullable=False))
    validation_errors: list[dict[str, str]] = Field(sa_column=Column(JSON, nullable=False))
    legal_basis: str | None = Field(default=None, sa_column=Column(String(SLUG_LENGTH)))
    purpose: str | None = Field(default=None, sa_column=Column(String(SLUG_LENGTH)))
    reference_date: date | None = Field(default=None, sa_column=Column(Date))
    due_date: date | None = Field(default=None, sa_column=Column(Date))
    subject_count: int | None = Field(default=None, sa_column=Column(Integer))
    correlation_id: str | None = Field(default=None,
                                       sa_column=Column(String(CORRELATION_ID_LENGTH)))
    intake_key: str | None = Field(default=None, sa_column=Column(String(INTAKE_KEY_LENGTH)))


class RequestSubject(SQLModel, table=True):
    """A data subject of a request, by pseudonym only (insert-only; never the plain number).

    ``position`` counts from 0 through the request's subjects as parsed (a subject listed twice
    in the submission is one subject).
    """

    __tablename__ = "request_subjects"
    __table_args__ = (
        CheckConstraint(_one_of("id_type", [t.value for t in SubjectIdType]),
                        name="ck_request_subjects_id_type"),
    )

    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_request_subjects_request_id"),
        primary_key=True))
    position: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    id_type: str = Field(sa_column=Column(String(ID_TYPE_LENGTH), nullable=False))
    pseudonym: str = Field(sa_column=Column(String(HASH_LENGTH), nullable=False,
                                            index=True))


class TableSnapshot(SQLModel, table=True):
    """The canonical text of a table of grounds a decision was read from (insert-only)."""

    __tablename__ = "table_snapshots"

    hash: str = Field(sa_column=Column(String(HASH_LENGTH), primary_key=True))
    content: str = Field(sa_column=Column(Text, nullable=False))
    first_used_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class DecisionRow(SQLModel, table=True):
    """One decision on a request (insert-only).

    ``sequence`` 1 is the engine's; a reviewer's decision or a correction is the next sequence
    with ``supersedes`` naming the decision it replaces. ``ground_version`` and ``table_hash`` pin
    the exact law applied, so replay reads the same table.
    """

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("request_id", "sequence", name="uq_decisions_request_sequence"),
        CheckConstraint("sequence >= 1", name="ck_decisions_sequence"),
        CheckConstraint(_one_of("outcome", [o.value for o in Outcome]),
                        name="ck_decisions_outcome"),
    )

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_decisions_request_id"),
        nullable=False))
    sequence: int = Field(sa_column=Column(Integer, nullable=False))
    outcome: str = Field(sa_column=Column(String(OUTCOME_LENGTH), nullable=False))
    released: list[str] = Field(sa_column=Column(JSON, nullable=False))
    withheld: list[str] = Field(sa_column=Column(JSON, nullable=False))
    reasons: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    review_triggers: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    proposal: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    ground_id: str | None = Field(default=None, sa_column=Column(String(SLUG_LENGTH)))
    ground_version: str | None = Field(default=None,
                                       sa_column=Column(String(GROUND_VERSION_LENGTH)))
    table_hash: str = Field(sa_column=Column(
        String(HASH_LENGTH), ForeignKey("table_snapshots.hash", name="fk_decisions_table_hash"),
        nullable=False))
    decided_by: str = Field(sa_column=Column(String(ACTOR_LENGTH), nullable=False))
    decided_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(FLOW_RUN_ID_LENGTH)))
    deadline: date | None = Field(default=None, sa_column=Column(Date))
    supersedes: str | None = Field(default=None, sa_column=Column(
        String(ID_LENGTH), ForeignKey("decisions.id", name="fk_decisions_supersedes")))


class DeliveryRow(SQLModel, table=True):
    """One delivery attempt's outcome and receipt (insert-only); the idempotency key is unique."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
        # deliveries in order, for a period (the Logboek Dataverwerkingen export)
        Index("ix_deliveries_delivered_at", "delivered_at", "id"),
    )

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_deliveries_request_id"),
        nullable=False, index=True))
    decision_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("decisions.id", name="fk_deliveries_decision_id"),
        nullable=False))
    partner_id: str = Field(sa_column=Column(String(PARTNER_ID_LENGTH), nullable=False))
    destination: str = Field(sa_column=Column(String(DESTINATION_LENGTH), nullable=False))
    idempotency_key: str = Field(sa_column=Column(String(IDEMPOTENCY_KEY_LENGTH), nullable=False))
    status: str = Field(sa_column=Column(String(STATUS_LENGTH), nullable=False))
    receipt: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    delivered_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(FLOW_RUN_ID_LENGTH)))


class AuditEvent(SQLModel, table=True):
    """One link of the hash chain (insert-only); see :mod:`records.chain`.

    ``hash`` is the HMAC-SHA256, under the chain key ``key_id``, of ``prev_hash`` and the canonical
    JSON of every other field (:func:`records.chain.event_hash`); ``prev_hash`` is unique, so the
    chain cannot fork. The
    payload carries ids, outcomes, categories, counts and pseudonyms — never personal data.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("id", name="uq_audit_events_id"),
        UniqueConstraint("prev_hash", name="uq_audit_events_prev_hash"),
        UniqueConstraint("hash", name="uq_audit_events_hash"),
        CheckConstraint("seq >= 1", name="ck_audit_events_seq"),
        # the few events of a kind (reviewer enrolments, API keys) without a scan of the chain
        Index("ix_audit_events_kind", "kind", "seq"),
    )

    # Assigned by records.chain.append_events under the chain lock (it is part of the hash),
    # so the database does not generate it.
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    id: str = Field(sa_column=Column(String(ID_LENGTH), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    kind: str = Field(sa_column=Column(String(KIND_LENGTH), nullable=False))
    request_id: str | None = Field(default=None, sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_audit_events_request_id"),
        index=True))
    actor: str = Field(sa_column=Column(String(ACTOR_LENGTH), nullable=False))
    flow_run_id: str | None = Field(default=None, sa_column=Column(String(FLOW_RUN_ID_LENGTH)))
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(HASH_LENGTH), nullable=False))
    hash: str = Field(sa_column=Column(String(HASH_LENGTH), nullable=False))
    # The chain key that sealed the event (records.chain_keys); None for the events of a ledger
    # written before the chain was keyed (0.3.0), whose hash is a plain sha256.
    key_id: str | None = Field(default=None, sa_column=Column(String(KEY_ID_LENGTH)))


class RequestStatus(SQLModel, table=True):
    """Where a request stands in the work queue: the ONE mutable table, a projection.

    Not the record: ``state`` and ``updated_at`` follow from the request's audit events
    (:func:`records.ledger.derived_state`); ``claimed_by``/``claimed_until`` are a worker's lease.
    """

    __tablename__ = "request_status"

    request_id: str = Field(sa_column=Column(
        String(ID_LENGTH), ForeignKey("requests.id", name="fk_request_status_request_id"),
        primary_key=True))
    state: str = Field(sa_column=Column(String(STATUS_LENGTH), nullable=False, index=True))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    claimed_by: str | None = Field(default=None, sa_column=Column(String(ACTOR_LENGTH)))
    claimed_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


def overlong(table: Table, values: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The bounded string columns of ``table`` whose value in ``values`` is longer than the column
    holds, as ``(column, length)``; empty when everything fits. Checked before a row is written, so
    that a value from outside is refused or set aside by name instead of failing its transaction
    (and every other row in it) at the database."""
    found: list[tuple[str, int]] = []
    for name, value in values.items():
        column = table.columns.get(name)
        length = getattr(column.type, "length", None) if column is not None else None
        if isinstance(value, str) and length is not None and len(value) > length:
            found.append((name, length))
    return found


def add_length_checks(table: Table) -> None:
    """A CHECK on the length of every bounded string column, so SQLite refuses what PostgreSQL
    refuses (SQLite ignores VARCHAR lengths)."""
    for column in table.columns:
        length = getattr(column.type, "length", None)
        if isinstance(column.type, String) and length is not None:
            table.append_constraint(CheckConstraint(
                f"length({column.name}) <= {length}",
                name=f"ck_{table.name}_{column.name}_length"))


#: Tables whose rows are never updated, and deleted only when a request is shredded (its data
#: key, its subjects' pseudonyms).
SHREDDABLE_TABLES: tuple[str, ...] = ("request_subjects", "data_keys")

#: Every table of the ledger.
LEDGER_TABLES: tuple[str, ...] = (*APPEND_ONLY_TABLES, "request_subjects", "request_status")

for _name in LEDGER_TABLES:
    add_length_checks(metadata.tables[_name])

#: The tables of legal review (records/reviews.py), insert-only like the record.
REVIEW_TABLES = ("reviewers", "reviewer_removals", "totp_uses", "review_answers")
APPEND_ONLY_TABLES = (*APPEND_ONLY_TABLES, *REVIEW_TABLES)
LEDGER_TABLES = (*APPEND_ONLY_TABLES, *SHREDDABLE_TABLES, "request_status")
