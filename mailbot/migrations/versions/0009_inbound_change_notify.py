"""PostgreSQL: every new inbound row and every status change NOTIFYs the live inbox

A trigger, so every path that changes a status (SMTP, worker, operator, on any node) is
heard without each remembering to announce it. The NOTIFY is part of the changing
transaction: it is delivered when that commits and never when it rolls back. The payload is
``<id> <status>``, nothing more (never a token). Nothing on SQLite: one machine, and the
live inbox reads the file (mailbot/web/live.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 09:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "mailbot_inbound_changed"  # mailbot/store/notify.py CHANGES_CHANNEL


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION mailbot_inbound_changed() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
                PERFORM pg_notify('{CHANNEL}', NEW.id::text || ' ' || NEW.status::text);
            END IF;
            RETURN NULL;
        END
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        # OF status: claims, lease renewals and outcomes that leave the status alone do not
        # even run the function.
        "CREATE TRIGGER inbound_changed AFTER INSERT OR UPDATE OF status ON inbound_messages "
        "FOR EACH ROW EXECUTE FUNCTION mailbot_inbound_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS inbound_changed ON inbound_messages")
    op.execute("DROP FUNCTION IF EXISTS mailbot_inbound_changed()")
