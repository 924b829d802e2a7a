"""Reply extraction: :func:`mailbot.strip.reply.strip` cuts quoted history (``quotes``) and
signatures (``signatures``, talon's classifier) from a reply; ``html_text`` renders HTML parts;
``evaluate`` and ``baselines`` measure it against real corpora (``mailbot eval-strip``)."""
