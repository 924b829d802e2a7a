"""The database: tables (``models``), engine, readers and migrations (``db``), acceptance in
shared commits (``group_commit``), the inbound spool (the only place an inbound status
changes), reply tokens and conversations. Beside them: the blob store (``blobs``) for big raw
mail and ``attachments``, ``retention`` (old raw mail and attachments removed) and ``notify``
(waking the workers of other nodes)."""
