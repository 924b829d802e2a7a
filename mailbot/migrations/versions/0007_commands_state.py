"""Commands in mail: a conversation's bot state, participants' roles and mute

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("state", sa.JSON(), nullable=True))
    with op.batch_alter_table("participants") as table:
        table.add_column(sa.Column("roles", sa.JSON(), nullable=True))
        table.add_column(sa.Column("muted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("participants") as table:
        table.drop_column("muted_at")
        table.drop_column("roles")
    with op.batch_alter_table("conversations") as table:
        table.drop_column("state")
