"""The HTTP side: health, a JSON API over the stored records (and later the live page).

Closed by default: :func:`check_exposure` refuses a non-loopback bind without credentials.
"""

from mailbot.web.api import make_app
from mailbot.web.guard import check_exposure

__all__ = ["check_exposure", "make_app"]
