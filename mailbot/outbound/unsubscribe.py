"""One-click unsubscribe (RFC 8058): each notification says how to stop them.

A notification to a participant carries ``List-Unsubscribe: <https://…/unsubscribe/ID.SIG>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` when ``public_url`` says where
people reach this node's web side. Gmail and Yahoo show an "unsubscribe" button for it (and
ask bulk senders for it). A POST to the link mutes that participant in that conversation,
as ``/unsubscribe`` in a reply does; a GET only shows a page with the button, since mail
scanners follow links. ``SIG`` is an HMAC of the participant's id under
``unsubscribe_secret`` (one made and kept in the data directory when none is set; several
nodes behind one URL need the same one): a link works for its own participant only, and
nobody can make one for another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from mailbot.config import Settings

PATH = "/unsubscribe/"
_REF = re.compile(r"^([1-9][0-9]{0,18})\.([0-9a-f]{32})$")
_KEY_FILE = "unsubscribe.key"


def link(settings: Settings, participant_id: int) -> str | None:
    """The one-click link for this participant, or None without ``public_url``."""
    if settings.public_url is None:
        return None
    base = str(settings.public_url).rstrip("/")
    return f"{base}{PATH}{participant_id}.{_sign(settings, participant_id)}"


def participant_of(settings: Settings, ref: str) -> int | None:
    """The participant id a link's last part names, if its signature is ours."""
    found = _REF.match(ref)
    if found is None:
        return None
    participant_id = int(found.group(1))
    if not hmac.compare_digest(found.group(2), _sign(settings, participant_id)):
        return None
    return participant_id


def _sign(settings: Settings, participant_id: int) -> str:
    mac = hmac.new(secret(settings), f"unsubscribe:{participant_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def secret(settings: Settings) -> bytes:
    """``unsubscribe_secret``, else a random key made once in the data directory."""
    if settings.unsubscribe_secret is not None:
        return settings.unsubscribe_secret.get_secret_value().encode()

    path = settings.home_dir / _KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return _make_key(path)


def _make_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:  # O_EXCL: two processes starting at once keep the first one's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as file:
        file.write(key)
        file.flush()
        os.fsync(file.fileno())
    return key
