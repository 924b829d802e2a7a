"""Step 3 of the flow: everything mailbot sends. ``compose`` writes it, ``outbox`` queues it in
the bot's transaction, ``delivery`` sends it and ``record`` notes the outcome exactly once;
``throttle``, ``notices`` (why mail was refused) and ``bounces`` (DSNs back to us)."""
