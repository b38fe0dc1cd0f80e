"""Give freed heap memory back to the kernel (glibc's ``malloc_trim``).

Sealing a batch builds a few buffers of the batch's size (the packed records, their join, the
compressed and encrypted copies: ~0.7 MB each for a 10 s batch at a 1 s interval). They are
freed at once, but glibc keeps freed memory at the top of the heap for the next allocation, so
it stays resident: ~1.5 MB of the shipping agent's RSS. ``malloc_trim(0)`` returns it; with
one batch every few seconds its cost (tens of microseconds) is nothing.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

_lock = threading.Lock()
_trim: Any = None  # the libc function, False where there is none (not glibc)


def trim() -> bool:
    """Return freed heap memory to the kernel; False where the C library has no ``malloc_trim``."""
    global _trim
    if _trim is None:
        with _lock:
            if _trim is None:
                try:
                    fn = ctypes.CDLL("libc.so.6").malloc_trim
                    fn.argtypes = [ctypes.c_size_t]
                    fn.restype = ctypes.c_int
                    _trim = fn
                except (OSError, AttributeError):  # musl, or no libc.so.6
                    _trim = False
    if _trim is False:
        return False
    _trim(0)
    return True
