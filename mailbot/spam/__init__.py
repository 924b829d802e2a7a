"""Spam: the spamd ``client``, the ``policy`` that turns a score into a decision, the
``quarantine`` and the ``rescan`` of mail stored while spamd was down."""
