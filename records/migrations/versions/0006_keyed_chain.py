"""The keyed chain: every audit event names the chain key that sealed it; events by kind.

Events written before (0.3.0) keep ``key_id`` NULL: their hash stays a plain sha256, and
verification accepts such events only before the first keyed one. The column is added in place
(no table rebuild), so the append-only triggers stay as they are.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_ID_LENGTH = 32


def upgrade() -> None:
    # the engine checks the sealed events of a few kinds (reviewer enrolments, API keys) before
    # it trusts the rows they record
    op.create_index("ix_audit_events_kind", "audit_events", ["kind", "seq"])
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with its constraint in one statement (ALTER TABLE cannot add a
        # table constraint later).
        op.execute(f"ALTER TABLE audit_events ADD COLUMN key_id VARCHAR({KEY_ID_LENGTH}) "
                   "CONSTRAINT ck_audit_events_key_id_length "
                   f"CHECK (length(key_id) <= {KEY_ID_LENGTH})")
        return
    op.add_column("audit_events", sa.Column("key_id", sa.String(KEY_ID_LENGTH), nullable=True))
    op.create_check_constraint("ck_audit_events_key_id_length", "audit_events",
                               f"length(key_id) <= {KEY_ID_LENGTH}")


def downgrade() -> None:
    op.drop_index("ix_audit_events_kind", table_name="audit_events")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE audit_events DROP COLUMN key_id")
        return
    op.drop_constraint("ck_audit_events_key_id_length", "audit_events", type_="check")
    op.drop_column("audit_events", "key_id")
