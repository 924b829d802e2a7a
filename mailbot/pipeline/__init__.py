"""Step 2 of the flow: what happens to a stored mail, in order (``stages``), and the ``worker``
that claims mail from the spool and runs it. CPU work (``analyse``) runs in other processes."""
