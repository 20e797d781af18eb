"""Legal review on the record: reviewers, their removals, spent one-time codes, form answers.

All four tables are insert-only, guarded by the same kind of triggers as the record tables of
0001 (on PostgreSQL the trigger function of 0001 is reused).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("reviewers", "reviewer_removals", "totp_uses", "review_answers")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _lengths(table: str, **lengths: int) -> list[sa.CheckConstraint]:
    return [sa.CheckConstraint(f"length({column}) <= {length}",
                               name=f"ck_{table}_{column}_length")
            for column, length in lengths.items()]


def upgrade() -> None:
    op.create_table(
        "reviewers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("totp_secret_sealed", sa.String(512), nullable=False),
        sa.Column("enrolled_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        *_lengths("reviewers", id=64, name=200, role=64, totp_secret_sealed=512),
    )
    op.create_table(
        "reviewer_removals",
        sa.Column("reviewer_id", sa.String(64), nullable=False),
        sa.Column("removed_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("reviewer_id"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], name="fk_removals_reviewer"),
        *_lengths("reviewer_removals", reviewer_id=64),
    )
    op.create_table(
        "totp_uses",
        sa.Column("reviewer_id", sa.String(64), nullable=False),
        sa.Column("time_step", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("used_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("reviewer_id", "time_step"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["reviewers.id"], name="fk_totp_uses_reviewer"),
        *_lengths("totp_uses", reviewer_id=64),
    )
    op.create_table(
        "review_answers",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("reviewer_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("motivation", sa.Text(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("step", sa.String(32), nullable=True),
        sa.Column("refusal_code", sa.String(64), nullable=True),
        sa.Column("refusal_message", sa.Text(), nullable=True),
        sa.Column("answered_at", _timestamp(), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "seq"),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"],
                                name="fk_review_answers_request"),
        *_lengths("review_answers", request_id=36, reviewer_id=128, role=64, verdict=32,
                  step=32, refusal_code=64, flow_run_id=64),
    )
    dialect = op.get_context().dialect.name
    for table in TABLES:
        if dialect == "sqlite":
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); "
                    f"END")
        else:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
