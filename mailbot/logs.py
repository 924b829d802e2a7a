"""What a node writes to its log, and how: text for people, JSON lines for collectors.

``log_level`` (debug, info, warning, error) and ``log_format`` (text, json) are settings like
any other. Every record goes out through :class:`Redacting` whatever the format: a reply
token or return-path id in a message (a recipient, an exception's words) is replaced by its
fingerprint, and control characters are escaped, so that no log line shows a credential and
no sender can forge a log line with a CR or LF in an address.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from mailbot.redact import redact_text

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 and C1 controls (a tab may stay), line and paragraph separators, direction overrides.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")
# Fields a record carries for a JSON collector (``log.info(..., extra={"inbound": 12})``).
_EXTRA = ("inbound", "outbound", "status", "ms", "bot", "peer")


def _clean(text: str) -> str:
    text = redact_text(text)
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Redacting(logging.Formatter):
    """The text format, redacted and with control characters escaped (a traceback keeps its
    own line breaks: it is ours, not a sender's)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return _clean(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return redact_text(super().formatException(ei))


class JsonLines(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the extras it carries."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for name in _EXTRA:
            if name in record.__dict__:
                value = record.__dict__[name]
                line[name] = redact_text(value) if isinstance(value, str) else value
        if record.exc_info:
            line["error"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str = "info", form: str = "text") -> None:
    """Set the root logger up for a node (once per process; a later call replaces it)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if form == "json" else Redacting(TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiosmtpd logs every command it reads; ours says what matters, once per message.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))
