"""How the agent uses glibc's allocator: one malloc arena, and freed heap memory given back.

Both go through glibc (``mallopt``, ``malloc_trim``); on another C library (musl) they do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any


@functools.cache
def _libc() -> Any:
    """glibc, or None where there is none."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):  # musl, or no libc.so.6
        return None


def limit_arenas(n: int = 1) -> None:
    """glibc gives each thread its own malloc arena (64 MB reserved, touched pages stay resident);
    the collector threads need no such scaling: they allocate under the GIL, one at a time. One
    arena kept ~1 MB less resident than two while shipping at a 1 s interval (46.4 against
    47.4 MB, two agents side by side). Same effect as MALLOC_ARENA_MAX=1, which, when set, wins."""
    libc = _libc()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(-8, n)  # M_ARENA_MAX


def trim() -> bool:
    """Return freed heap memory to the kernel; False where the C library has no ``malloc_trim``.

    Sealing a batch builds a few buffers of the batch's size (the packed records, their join, the
    compressed and encrypted copies: ~0.7 MB each for a 10 s batch at a 1 s interval). They are
    freed at once, but glibc keeps freed memory at the top of the heap for the next allocation, so
    it stays resident: ~1.5 MB of the shipping agent's RSS. With one batch every few seconds the
    call's cost (microseconds) is nothing.
    """
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
