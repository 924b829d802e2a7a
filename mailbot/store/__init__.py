"""The database: tables (``models``), engine and migrations (``db``), the inbound spool (the
only place an inbound status changes), reply tokens and conversations."""
