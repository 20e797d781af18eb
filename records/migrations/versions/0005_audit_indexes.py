"""Indexes for the audit tools: requests by time of receipt (replay, the transparency report)
and deliveries by time of delivery (the Logboek Dataverwerkingen export).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_requests_received_at", "requests", ["received_at", "id"])
    op.create_index("ix_deliveries_delivered_at", "deliveries", ["delivered_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_delivered_at", table_name="deliveries")
    op.drop_index("ix_requests_received_at", table_name="requests")
