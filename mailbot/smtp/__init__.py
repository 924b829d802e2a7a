"""Step 1 of the flow: the SMTP server. Listen, decide RCPT and DATA, store, then answer.

``listener`` runs the server and its connection limits, ``handler`` has a hook per SMTP verb
(RCPT: is this a live address of ours; DATA: screen, spam-at-DATA, store durably, then 250),
``replies`` holds every answer it can give. Nothing here loads the Bot API, the pipeline or
the outbox: the SMTP policy stays small and fast.
"""
