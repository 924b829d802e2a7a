"""Commands in mail: ``/close``, ``/assign @bob``, ``/label bug, urgent`` in a reply (as GitLab's
quick actions), or ``subscribe``, ``status 42``, ``help`` lines in mail to a command address
(as debbugs' ``control@``).

- :mod:`.declare`: a bot declares each command with ``@command`` on a method, its arguments
  typed, its help text, who may use it, and whether it needs a confirmation;
- :mod:`.find`: which lines of the person's own text are commands (never the quoted history
  or the signature: those were cut before), and the text left once they are lifted out;
- :mod:`.run`: each command checked and run in the bot's transaction, and the one answer
  that tells the sender what became of each.
"""
