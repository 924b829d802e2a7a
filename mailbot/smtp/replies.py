"""Every answer the SMTP server gives, in one place: code, enhanced status and words.

The policy (:mod:`mailbot.smtp.handler`), the listener (:mod:`mailbot.smtp.listener`) and the rate
limits (:mod:`mailbot.smtp.ratelimit`) answer with these; each is named after what it says.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: basic code, enhanced status code (RFC 3463), and words for people."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    def format(self, **values: object) -> str:
        return f"{self.code} {self.status} {self.text.format(**values)}"


# The transaction (mailbot.smtp.handler).
OK_SENDER = Reply(250, "2.1.0", "Sender OK")
OK_RECIPIENT = Reply(250, "2.1.5", "Recipient OK")
QUEUED = Reply(250, "2.0.0", "OK: queued as {id}")
NO_RELAY = Reply(550, "5.7.1", "Relaying denied: {domain} is not a domain this server receives for")
UNKNOWN_TOKEN = Reply(
    550, "5.1.1", "This reply address is unknown: check that the whole address was copied"
)
EXPIRED_TOKEN = Reply(
    550, "5.1.1", "This reply address has expired: reply to a newer notification instead"
)
REVOKED_TOKEN = Reply(550, "5.1.1", "This reply address was revoked and no longer accepts mail")
NO_SUCH_USER = Reply(550, "5.1.1", "No such mailbox here: {address}")
BAD_ADDRESS = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_HELO = Reply(501, "5.5.2", "Syntax: {verb} hostname ({problem})")
BAD_SENDER = Reply(553, "5.1.7", "Bad sender address syntax ({problem})")
BAD_RECIPIENT = Reply(553, "5.1.3", "Bad recipient address syntax ({problem})")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send a non-ASCII address")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
STORE_FAILED = Reply(451, "4.3.0", "Temporary failure storing the message, please try again later")
LOOKUP_FAILED = Reply(451, "4.3.0", "Temporary failure checking the recipient, try again later")
INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary server error, please try again later")
OVER_LIMIT = Reply(552, "5.3.4", "Message refused: {reason}")
SPAM_REFUSED = Reply(
    550, "5.7.1", "Message refused as spam (score {score:.1f}, this address refuses {limit:.1f})"
)
SPAM_CHECK_UNAVAILABLE = Reply(
    451, "4.7.1", "Temporary failure checking the message for spam, please try again later"
)

# The connection (mailbot.smtp.listener).
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TOO_MANY = Reply(421, "4.7.0", "Too many failed authentication attempts, goodbye")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, goodbye")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle too long, closing the connection")

# The rate limits (mailbot.smtp.ratelimit).
SERVER_BUSY = Reply(421, "4.3.2", "Too many connections, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from {ip}, try again later")
CONNECTING_TOO_FAST = Reply(421, "4.7.0", "Too many connections from {ip} this minute, slow down")
IP_SENDING_TOO_FAST = Reply(451, "4.7.1", "Too many messages from {ip} this minute, slow down")
SENDER_TOO_FAST = Reply(451, "4.7.1", "Too many messages from {sender} this minute, slow down")
