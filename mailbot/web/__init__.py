"""The HTTP side: health, a JSON API over the stored records (and later the live page)."""

from mailbot.web.api import make_app

__all__ = ["make_app"]
