"""Bounded sliding-window counts per key (client address or user name) and brute-force detection.

Memory is bounded twice: at most ``max_keys`` keys (the least recently seen is
evicted and counted in ``evicted``) and at most ``max_buckets`` time buckets per
key (failures in the same second share a bucket; beyond the cap the oldest
buckets merge).
"""

from __future__ import annotations

from collections import OrderedDict, deque


class _Key:
    __slots__ = ("buckets", "total", "over")

    def __init__(self) -> None:
        self.buckets: deque[list[float]] = deque()  # [time, count]
        self.total = 0
        self.over = False


class SlidingCounts:
    """Failures per key within the last ``window`` seconds; crossing ``threshold`` is reported.

    ``add()`` returns True exactly when a key goes from below ``threshold`` to at or
    above it within ``window``; it can fire again for that key only after its count
    has fallen below the threshold.
    """

    def __init__(self, window: float, threshold: int = 0, max_keys: int = 10000, max_buckets: int = 256) -> None:
        self.window = float(window)
        self.threshold = int(threshold)
        self.max_keys = max(1, int(max_keys))
        self.max_buckets = max(2, int(max_buckets))
        self.keys: OrderedDict[str, _Key] = OrderedDict()
        self.evicted = 0

    def add(self, key: str, t: float, count: int = 1) -> bool:
        k = self.keys.get(key)
        if k is None:
            k = _Key()
            self.keys[key] = k
            if len(self.keys) > self.max_keys:
                self.keys.popitem(last=False)
                self.evicted += 1
        else:
            self.keys.move_to_end(key)
        b = k.buckets
        if b and int(b[-1][0]) == int(t):
            b[-1][1] += count
        else:
            b.append([t, count])
            if len(b) > self.max_buckets:
                first = b.popleft()
                b[0][1] += first[1]
        k.total += count
        self._trim(k, t)
        if self.threshold > 0 and not k.over and k.total >= self.threshold:
            k.over = True
            return True
        return False

    def _trim(self, k: _Key, now: float) -> None:
        lo = now - self.window
        b = k.buckets
        while b and b[0][0] < lo:
            k.total -= int(b.popleft()[1])
        if self.threshold > 0 and k.over and k.total < self.threshold:
            k.over = False

    def expire(self, now: float) -> None:
        """Drop what fell out of the window; forget keys with nothing left."""
        dead = []
        for key, k in self.keys.items():
            self._trim(k, now)
            if k.total <= 0:
                dead.append(key)
        for key in dead:
            del self.keys[key]

    def active(self) -> int:
        return sum(1 for k in self.keys.values() if k.total > 0)

    def over(self) -> int:
        return sum(1 for k in self.keys.values() if k.over)

    def count(self, key: str) -> int:
        k = self.keys.get(key)
        return k.total if k is not None else 0

    def top(self, n: int) -> tuple[list[tuple[str, int]], int]:
        """The ``n`` keys with most failures in the window, and the sum of all the others."""
        items = sorted(((key, k.total) for key, k in self.keys.items() if k.total > 0), key=lambda kv: (-kv[1], kv[0]))
        head = items[:n]
        rest = sum(v for _, v in items[n:])
        return head, rest
