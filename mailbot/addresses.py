"""The address grammar, in one place: split an address, and our two kinds of local part.

- ``reply+<token>@<domain>``: a reply address; the token names one participant of one
  conversation (:mod:`mailbot.store.tokens` mints and checks it).
- ``bounces+<id>@<domain>``: the return path (VERP) of one mail we sent, so that a bounce
  names the mail it is about (:mod:`mailbot.outbound.bounces`).

Pure functions on strings: no database, no other mailbot module. Local parts are matched in
any case, since some senders upper-case the whole address.

>>> split("<Reply+abc@Example.ORG> ")
('Reply+abc', 'example.org')
>>> token_from_local_part("REPLY+abc"), token_from_local_part("support")
('abc', None)
>>> bounce_address("0f3a", "example.org")
'bounces+0f3a@example.org'
"""

from __future__ import annotations

REPLY_PREFIX = "reply+"
BOUNCE_PREFIX = "bounces+"  # VERP: one return path per mail we send


def split(address: str) -> tuple[str, str]:
    """``local@domain`` (angle brackets and outer whitespace allowed) → (local, domain).

    The domain is lower-cased (domains have no case); the local part is kept as written.
    The split is at the last ``@``: a quoted local part may hold one.
    """
    local, _, domain = address.strip().strip("<>").rpartition("@")
    return local, domain.lower()


def domain_of(address: str) -> str:
    """The lower-cased domain of an address ("" when it has none)."""
    return split(address)[1]


def _after_prefix(local: str, prefix: str) -> str | None:
    if not local.lower().startswith(prefix):
        return None
    return local[len(prefix) :]


def token_from_local_part(local: str) -> str | None:
    """``reply+<token>`` (any case) → the token as written; anything else → None."""
    return _after_prefix(local, REPLY_PREFIX)


def reply_address(token: str, domain: str) -> str:
    return f"{REPLY_PREFIX}{token}@{domain}"


def bounce_id_from_local_part(local: str) -> str | None:
    """``bounces+<id>`` (any case) → the id as written; anything else → None."""
    return _after_prefix(local, BOUNCE_PREFIX)


def bounce_address(verp_id: str, domain: str) -> str:
    return f"{BOUNCE_PREFIX}{verp_id}@{domain}"
