"""Give memory freed by a large answer back to the operating system.

A big exposition is built and written by worker threads; glibc keeps what they freed in
per-thread arenas, so a burst of scrapes of a large fleet can leave the process hundreds of MiB
above its usual size long after the scrapes are gone. Two remedies, both glibc only (elsewhere
they do nothing): blocks of 1 MiB and more (an answer as read, the exposition's chunks, the
body) are mapped on their own, so freeing one returns it at once (`big_blocks_on_their_own`),
and `malloc_trim` hands back what smaller blocks left free (`release_after`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

BIG_BODY = 4 * 1024 * 1024  # bytes: answers smaller than this leave too little to matter
_MIN_INTERVAL = 1.0  # seconds between two trims: one costs a few ms on a large heap


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_trim = _load_trim()

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
BIG_BLOCK = 1024 * 1024


def big_blocks_on_their_own() -> bool:
    """Have glibc map every block of BIG_BLOCK or more by itself; True if it agreed.

    glibc's own threshold starts at 128 KiB and grows to the largest block freed (up to
    32 MiB), after which a scrape's big blocks come from the heap and their pages stay with
    the process when freed. A fixed threshold keeps them apart. Measured at 10,000 devices x
    3 doors over 20 gzip scrapes: RSS between scrapes 111 -> 71 MiB, peak 165 -> 144 MiB, for
    a few percent more CPU (the kernel zero-fills the fresh pages).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt: Callable[[int, int], int] = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK) == 1


_lock = threading.Lock()
_last = 0.0
_pending: threading.Timer | None = None


def release_after(size: int) -> None:
    """Call when an answer of `size` bytes is done with.

    Trims at once, or, within a second of the last trim, once more a second after it: a burst
    of big answers ending together costs two trims, and the last one frees what all of them
    left.
    """
    global _last, _pending
    if _trim is None or size < BIG_BODY:
        return
    with _lock:
        wait = _last + _MIN_INTERVAL - time.monotonic()
        if wait > 0:
            if _pending is None:
                _pending = threading.Timer(wait, _trim_now)
                _pending.daemon = True
                _pending.start()
            return
        _last = time.monotonic()
    _trim(0)


def _trim_now() -> None:
    global _last, _pending
    with _lock:
        _pending = None
        _last = time.monotonic()
    if _trim is not None:
        _trim(0)
