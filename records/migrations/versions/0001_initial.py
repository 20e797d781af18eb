"""The ledger: requests, subjects, decisions, deliveries, table snapshots, audit chain, status.

Written out by hand, frozen: it does not import records.models, so later changes to the models
need a new migration (tests/test_migrations.py checks that models and migrations agree).

The six record tables get triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL):
the database itself keeps them append-only.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_TABLES = (
    "requests",
    "request_subjects",
    "decisions",
    "deliveries",
    "table_snapshots",
    "audit_events",
)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _lengths(table: str, **lengths: int) -> list[sa.CheckConstraint]:
    """The length checks records.models adds to every bounded string column."""
    return [sa.CheckConstraint(f"length({column}) <= {length}",
                               name=f"ck_{table}_{column}_length")
            for column, length in lengths.items()]


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("requester_body", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.Column("received_at", _timestamp(), nullable=False),
        sa.Column("raw_body", sa.Text(), nullable=False),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("validation_errors", sa.JSON(), nullable=False),
        sa.Column("legal_basis", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(64), nullable=True),
        sa.Column("reference_date", sa.Date(), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("subject_count", sa.Integer(), nullable=True),
        sa.Column("correlation_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("channel IN ('cli', 'api', 'dropoff')", name="ck_requests_channel"),
        sa.CheckConstraint("subject_count >= 0", name="ck_requests_subject_count"),
        *_lengths("requests", id=36, partner_id=64, requester_body=32, channel=16,
                  reference=64, body_hash=64, legal_basis=64, purpose=64, correlation_id=128),
    )
    op.create_index("uq_requests_partner_reference", "requests", ["partner_id", "reference"],
                    unique=True, sqlite_where=sa.text("valid"),
                    postgresql_where=sa.text("valid"))

    op.create_table(
        "request_subjects",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id_type", sa.String(16), nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "position"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"],
                                name="fk_request_subjects_request_id"),
        sa.CheckConstraint("id_type IN ('bsn', 'onderwijsnummer')",
                           name="ck_request_subjects_id_type"),
        *_lengths("request_subjects", request_id=36, id_type=16, pseudonym=64),
    )
    op.create_index("ix_request_subjects_pseudonym", "request_subjects", ["pseudonym"])

    op.create_table(
        "table_snapshots",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("first_used_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("hash"),
        *_lengths("table_snapshots", hash=64),
    )

    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("released", sa.JSON(), nullable=False),
        sa.Column("withheld", sa.JSON(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("review_triggers", sa.JSON(), nullable=False),
        sa.Column("proposal", sa.JSON(), nullable=True),
        sa.Column("ground_id", sa.String(64), nullable=True),
        sa.Column("ground_version", sa.String(128), nullable=True),
        sa.Column("table_hash", sa.String(64), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=False),
        sa.Column("decided_at", _timestamp(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("deadline", sa.Date(), nullable=True),
        sa.Column("supersedes", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_decisions_request_id"),
        sa.ForeignKeyConstraint(["table_hash"], ["table_snapshots.hash"],
                                name="fk_decisions_table_hash"),
        sa.ForeignKeyConstraint(["supersedes"], ["decisions.id"], name="fk_decisions_supersedes"),
        sa.UniqueConstraint("request_id", "sequence", name="uq_decisions_request_sequence"),
        sa.CheckConstraint("sequence >= 1", name="ck_decisions_sequence"),
        sa.CheckConstraint(
            "outcome IN ('approved', 'partially_approved', 'rejected', 'needs_review')",
            name="ck_decisions_outcome"),
        *_lengths("decisions", id=36, request_id=36, outcome=32, ground_id=64,
                  ground_version=128, table_hash=64, decided_by=128, flow_run_id=64,
                  supersedes=36),
    )

    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(512), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("delivered_at", _timestamp(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_deliveries_request_id"),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"],
                                name="fk_deliveries_decision_id"),
        sa.UniqueConstraint("idempotency_key", name="uq_deliveries_idempotency_key"),
        *_lengths("deliveries", id=36, request_id=36, decision_id=36, partner_id=64,
                  destination=512, idempotency_key=128, status=32, flow_run_id=64),
    )
    op.create_index("ix_deliveries_request_id", "deliveries", ["request_id"])

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("occurred_at", _timestamp(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"],
                                name="fk_audit_events_request_id"),
        sa.UniqueConstraint("id", name="uq_audit_events_id"),
        sa.UniqueConstraint("prev_hash", name="uq_audit_events_prev_hash"),
        sa.UniqueConstraint("hash", name="uq_audit_events_hash"),
        sa.CheckConstraint("seq >= 1", name="ck_audit_events_seq"),
        *_lengths("audit_events", id=36, kind=64, request_id=36, actor=128, flow_run_id=64,
                  prev_hash=64, hash=64),
    )
    op.create_index("ix_audit_events_request_id", "audit_events", ["request_id"])

    op.create_table(
        "request_status",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"],
                                name="fk_request_status_request_id"),
        *_lengths("request_status", request_id=36, state=32, claimed_by=128),
    )
    op.create_index("ix_request_status_state", "request_status", ["state"])

    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        for table in APPEND_ONLY_TABLES:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); "
                    f"END")
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP\n"
            "    USING ERRCODE = 'restrict_violation';\n"
            "END\n"
            "$$")
        for table in APPEND_ONLY_TABLES:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()")
    else:
        raise NotImplementedError(f"the ledger cannot guard its tables on {dialect!r}")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    for table in APPEND_ONLY_TABLES:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    op.drop_index("ix_request_status_state", table_name="request_status")
    op.drop_table("request_status")
    op.drop_index("ix_audit_events_request_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_deliveries_request_id", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_table("decisions")
    op.drop_table("table_snapshots")
    op.drop_index("ix_request_subjects_pseudonym", table_name="request_subjects")
    op.drop_table("request_subjects")
    op.drop_index("uq_requests_partner_reference", table_name="requests")
    op.drop_table("requests")
