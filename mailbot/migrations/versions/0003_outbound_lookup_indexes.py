"""outbound lookups by case-folded address: the send limit and the RCPT return-path check

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_outbound_recipient_lower",
        "outbound_messages",
        [sa.text("lower(recipient)"), "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_outbound_mail_from_lower",
        "outbound_messages",
        [sa.text("lower(mail_from)")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_outbound_mail_from_lower", table_name="outbound_messages")
    op.drop_index("ix_outbound_recipient_lower", table_name="outbound_messages")
