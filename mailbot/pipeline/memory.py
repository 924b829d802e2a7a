"""Giving memory back to the operating system after big mail.

CPython frees objects, but glibc's allocator keeps freed heap for reuse, and it raises its
mmap threshold after every large free block (up to 32 MiB), so buffers of a 24 MiB message
end up on the heap, where fragmentation keeps them for good: a node that received a few
big messages stays gigabytes large. Two calls fix that, both no-ops off glibc:

- :func:`return_big_blocks` pins the mmap threshold at 1 MiB: every allocation over it gets
  its own mapping, returned to the system the moment it is freed;
- :func:`trim` hands the free top of the heap back (``malloc_trim``), after a big message.

And one for time: :func:`settle_heap`, once a node has started, moves what start-up made
(modules, the app, the ORM's registry) out of the cyclic collector's sight. Otherwise every
full collection walks all of it, holding the event loop 50-100 ms at a time while SMTP
clients wait (measured with tests/loop_watch.py on a hostile-mail test).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import sys
from functools import lru_cache

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1024 * 1024


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def return_big_blocks() -> bool:
    """Pin the mmap threshold (see the module docstring); True when it took effect."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def settle_heap() -> None:
    """Collect start-up's garbage, then freeze what is left (``gc.freeze``): it is never
    garbage, and need not be walked again."""
    gc.collect()
    gc.freeze()


def trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when the process that started it dies, even by
    SIGKILL: an analyser must not outlive its node (holding 100+ MB each, forever).

    Called first thing in the child. If the parent died before the request took effect,
    exit now. Elsewhere than Linux, nothing: the pool notices a dead parent on its next job.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
