"""API keys of the intake API (insert-only, like the record), and the index its listing reads.

``api_keys`` holds one row per issued key (the sha256 of the key, never the key);
``api_key_revocations`` one row per revoked key. Both get the triggers of 0001 that refuse
UPDATE and DELETE (and TRUNCATE on PostgreSQL): a key is revoked by inserting its revocation.

``ix_requests_partner_received`` serves ``GET /v1/requests`` (a partner's own requests, oldest
first, paged by received_at and id) without scanning every partner's requests.

Written out by hand, frozen: it does not import records.api_keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("api_keys", "api_key_revocations")


def _lengths(table: str, **lengths: int) -> list[sa.CheckConstraint]:
    """The length checks the models add to every bounded string column."""
    return [sa.CheckConstraint(f"length({column}) <= {length}",
                               name=f"ck_{table}_{column}_length")
            for column, length in lengths.items()]


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
        *_lengths("api_keys", key_id=16, partner_id=64, key_hash=64, issued_by=128),
    )
    op.create_index("ix_api_keys_partner_id", "api_keys", ["partner_id"])
    op.create_table(
        "api_key_revocations",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.key_id"],
                                name="fk_api_key_revocations_key_id"),
        *_lengths("api_key_revocations", key_id=16, revoked_by=128, reason=200),
    )
    op.create_index("ix_requests_partner_received", "requests",
                    ["partner_id", "received_at", "id"])
    dialect = op.get_context().dialect.name
    for table in TABLES:
        if dialect == "sqlite":
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); "
                    f"END")
        elif dialect == "postgresql":
            # ledger_refuse_change() comes with 0001.
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()")
        else:
            raise NotImplementedError(f"the ledger cannot guard its tables on {dialect!r}")


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    for table in TABLES:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.drop_index("ix_requests_partner_received", table_name="requests")
    op.drop_table("api_key_revocations")
    op.drop_index("ix_api_keys_partner_id", table_name="api_keys")
    op.drop_table("api_keys")
