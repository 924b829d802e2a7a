"""Outbound delivery lifetime, and an index on the mails sent to each participant

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 01:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The new statuses (sending, deferred, suppressed) need nothing: the column is a
    # non-native enum, a string without a CHECK constraint.
    with op.batch_alter_table("outbound_messages") as table:
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        table.create_index("ix_outbound_participant", ["participant_id", "id"])


def downgrade() -> None:
    op.execute(
        "UPDATE outbound_messages SET status = 'queued' WHERE status IN ('sending', 'deferred')"
    )
    op.execute("UPDATE outbound_messages SET status = 'failed' WHERE status = 'suppressed'")
    with op.batch_alter_table("outbound_messages") as table:
        table.drop_index("ix_outbound_participant")
        table.drop_column("expires_at")
