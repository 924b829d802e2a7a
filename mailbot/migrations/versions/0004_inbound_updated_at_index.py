"""inbound rows by their last change: the live inbox asks what changed since a moment

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_inbound_updated_at", "inbound_messages", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_inbound_updated_at", table_name="inbound_messages")
