"""Requests get an intake key: the source's own idempotency key (a drop-off file's line).

A folder drop-off that is stopped half-way and run again must not record a line twice, valid or
not; ``intake_key`` (unique where set) is how it recognises a line it recorded before.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHECK = "ck_requests_intake_key_length"


def upgrade() -> None:
    if op.get_context().dialect.name == "sqlite":
        # SQLite cannot add a table constraint without rebuilding the table (which would drop
        # its append-only triggers); a column constraint comes with ADD COLUMN.
        op.execute("ALTER TABLE requests ADD COLUMN intake_key VARCHAR(200) "
                   f"CONSTRAINT {_CHECK} CHECK (length(intake_key) <= 200)")
    else:
        op.add_column("requests", sa.Column("intake_key", sa.String(200), nullable=True))
        op.create_check_constraint(_CHECK, "requests", "length(intake_key) <= 200")
    op.create_index("uq_requests_intake_key", "requests", ["intake_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_requests_intake_key", table_name="requests")
    if op.get_context().dialect.name != "sqlite":
        op.drop_constraint(_CHECK, "requests", type_="check")
    op.drop_column("requests", "intake_key")
