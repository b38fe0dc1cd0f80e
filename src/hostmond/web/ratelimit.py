"""A token bucket per client address, bounded in the number of addresses it remembers.

Each client address (IPv4 as is, IPv6 grouped by its /64, since one host usually
owns a whole /64) has a bucket of ``burst`` tokens refilled at
``requests_per_second``. A request takes one token or is refused with the time
until the next token (for ``Retry-After``). At most ``max_clients`` buckets are
kept, least recently used first out; each eviction is counted (an evicted client
simply starts again with a full bucket). The limiter is checked before
authentication, so a flood of bad credentials is refused cheaply and never
reaches bcrypt.

Single-threaded by design: it is only called from the event loop.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable


def client_key(remote: str | None) -> str:
    """The bucket key for a peer address: IPv4 as is, IPv6 by /64, IPv4-mapped IPv6 as IPv4."""
    if not remote:
        return "local"
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return "local"  # a unix socket path or similar
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


class RateLimiter:
    """Per-client token buckets. ``allow(key)`` -> (allowed, seconds until a token is free)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be greater than 0")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = int(max_clients)
        self._clock = clock
        # key -> (tokens, time of last update); move_to_end on use gives LRU order
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.evictions = 0
        self.refused = 0

    def allow(self, key: str) -> tuple[bool, float]:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_clients:
                self._buckets.popitem(last=False)
                self.evictions += 1
        else:
            tokens, last = bucket
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            self._buckets.move_to_end(key)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return True, 0.0
        self._buckets[key] = (tokens, now)
        self.refused += 1
        return False, (1.0 - tokens) / self.rate

    def penalize(self, key: str, tokens: float) -> None:
        """Take ``tokens`` more from a client's bucket (down to at most -burst: the debt is bounded)."""
        bucket = self._buckets.get(key)
        if bucket is None or tokens <= 0:
            return
        have, last = bucket
        self._buckets[key] = (max(-self.burst, have - tokens), last)

    def tracked(self) -> int:
        return len(self._buckets)

    def limited_clients(self) -> int:
        """Addresses whose bucket is empty right now (their next request would be refused)."""
        now = self._clock()
        n = 0
        for tokens, last in self._buckets.values():
            if tokens + (now - last) * self.rate < 1.0:
                n += 1
        return n

    def prune(self) -> None:
        """Forget buckets that have refilled completely (they behave exactly like a new client)."""
        now = self._clock()
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(seconds)))
