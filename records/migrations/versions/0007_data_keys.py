"""Retention: per-request data keys, subject tags, and subjects that can be shredded.

* ``data_keys``: each request's data key, wrapped by a key-encryption key kept outside the
  database (records/data_keys.py). Rows are deleted when a request is shredded under its
  retention term; UPDATE is refused.
* ``request_subjects`` (the inzage index, by pseudonym) loses its DELETE trigger: a shredded
  request's rows are deleted with its data key. UPDATE stays refused; the chain's subjects digest
  and the ``request_shredded`` event let ``audit verify`` tell a shredding from a deletion.

Submissions and motivations a ledger recorded in clear before this revision are listed in
``pending_sealing`` and sealed by records.legacy_sealing when the ledger is next opened (that
needs the KEK, which a migration does not hold).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _lengths(table: str, **lengths: int) -> list[sa.CheckConstraint]:
    return [sa.CheckConstraint(f"length({column}) <= {length}",
                               name=f"ck_{table}_{column}_length")
            for column, length in lengths.items()]


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("request_id", sa.String(36), sa.ForeignKey(
            "requests.id", name="fk_data_keys_request_id"), primary_key=True),
        sa.Column("kek_id", sa.String(32), nullable=False),
        sa.Column("wrapped", sa.String(96), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        *_lengths("data_keys", request_id=36, kek_id=32, wrapped=96),
    )
    # the requests recorded before this revision, in clear: sealed when the ledger is next opened
    op.create_table(
        "pending_sealing",
        sa.Column("request_id", sa.String(36), sa.ForeignKey(
            "requests.id", name="fk_pending_sealing_request_id"), primary_key=True),
    )
    op.execute("INSERT INTO pending_sealing (request_id) SELECT id FROM requests")
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS request_subjects_no_delete")
        for table, kind, operations in (
                ("data_keys", "deleted only by shredding", ("UPDATE",)),):
            for operation in operations:
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is {kind}: {operation} refused'); END")
    else:
        op.execute("DROP TRIGGER IF EXISTS request_subjects_append_only ON request_subjects")
        op.execute("CREATE TRIGGER request_subjects_no_update BEFORE UPDATE ON request_subjects "
                   "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
        op.execute("CREATE TRIGGER data_keys_no_update BEFORE UPDATE ON data_keys "
                   "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("CREATE TRIGGER request_subjects_no_delete BEFORE DELETE ON request_subjects "
                   "BEGIN SELECT RAISE(ABORT, 'request_subjects is append-only: DELETE refused'); "
                   "END")
    else:
        op.execute("DROP TRIGGER IF EXISTS request_subjects_no_update ON request_subjects")
        op.execute("CREATE TRIGGER request_subjects_append_only BEFORE UPDATE OR DELETE ON "
                   "request_subjects FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
    op.drop_table("pending_sealing")
    op.drop_table("data_keys")
