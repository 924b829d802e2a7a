"""webhook deliveries: each event for each URL, queued with the change that caused it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 17:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column(
            "inbound_id",
            sa.Integer(),
            sa.ForeignKey("inbound_messages.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_answer", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_webhook_status_next", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_inbound_id", "webhook_deliveries", ["inbound_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_inbound_id", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_status_next", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
