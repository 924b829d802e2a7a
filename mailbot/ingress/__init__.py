"""Other ways in: mail that Mailgun, Postmark or SendGrid received, posted to this node over
HTTP and stored in the same spool as SMTP mail, as Action Mailbox's ingresses do.

``POST /ingress/mailgun/messages.mime``, ``/ingress/postmark``, ``/ingress/sendgrid``: each
answers 404 until its credential is set (``mailgun_signing_key``, ``postmark_password``,
``sendgrid_public_key``), checks the provider's own proof before it stores anything, and
takes the raw message as the provider received it, never one rebuilt from parsed fields.
Then every post is what an SMTP transaction would be (:mod:`mailbot.ingress.intake`): the
recipients checked as RCPT checks them, the message stored as DATA stores it, committed
before the 200. The routes need no API token (a provider cannot log in); their proof is
the signature or the credentials, compared in constant time and never logged.
"""

from mailbot.ingress.routes import check, router, wanted

__all__ = ["check", "router", "wanted"]
