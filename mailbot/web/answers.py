"""How every JSON answer is made: redacted (mailbot/redact.py), errors as ``{"error": ...}``."""

from __future__ import annotations

import re
from typing import Any

from fastapi.responses import JSONResponse

from mailbot.redact import redact

MAX_ID = 2**31 - 1  # ids are INTEGER columns; PostgreSQL's is 32-bit
MAX_LIMIT = 1000
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: int() also reads "٣", " 3" and "1_0"
ID_PATTERN = "^[0-9]{1,10}$"


class Redacted(JSONResponse):
    """Every answer passes through redaction, whatever the route put in it."""

    def render(self, content: Any) -> bytes:
        return super().render(redact(content))


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Redacted:
    return Redacted({"error": message}, status_code=status, headers=headers)


def number(value: str, lowest: int = 1) -> int | None:
    """A path id, read strictly: ASCII digits in range, or None (answered 404)."""
    return int(value) if _DIGITS.fullmatch(value) and lowest <= int(value) <= MAX_ID else None


def limit(value: str) -> int | None:
    return int(value) if _DIGITS.fullmatch(value) and 1 <= int(value) <= MAX_LIMIT else None
