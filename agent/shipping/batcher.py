"""The shipper's in-memory buffer and the rule that closes a batch.

A batch closes when it holds ``max_records`` records, or ``max_age`` seconds
(spread by ``jitter``) after its first record arrived, whichever is first. The
buffer is bounded: a collection that does not fit in ``limit_records`` is
dropped whole and counted (``dropped``), never blocking the caller.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

from hostmond.core.model import Event


@dataclasses.dataclass
class Chunk:
    """Part of one collection: samples and events sharing a collection time.

    The shipper buffers its samples as packed records (``wire.pack_sample_records``), with the
    tenants they name in ``tenants``; the batcher only counts and splits them.
    """

    time: float
    samples: list[Any]
    events: list[Event]
    tenants: frozenset[str] = frozenset()  # of the samples (a part split off keeps the whole set)

    def __len__(self) -> int:
        return len(self.samples) + len(self.events)


class Batcher:
    def __init__(
        self,
        max_records: int,
        max_age: float,
        jitter: float,
        limit_records: int,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_records = max(1, int(max_records))
        self.max_age = max_age
        self.jitter = jitter
        self.limit_records = int(limit_records)
        self.rng = rng or random.Random()
        self.clock = clock
        self._chunks: collections.deque[Chunk] = collections.deque()
        self.records = 0
        self.dropped = 0  # records refused because the buffer was full
        self.deadline: float | None = None

    def add(self, time_: float, samples: list[Any], events: list[Event], tenants: frozenset[str] = frozenset()) -> bool:
        n = len(samples) + len(events)
        if n == 0:
            return True
        if self.records + n > self.limit_records:
            self.dropped += n
            return False
        self._chunks.append(Chunk(time_, samples, events, tenants))
        if self.records == 0:
            spread = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
            self.deadline = self.clock() + self.max_age * spread
        self.records += n
        return True

    def due(self, now: float | None = None) -> bool:
        if self.records == 0:
            return False
        if self.records >= self.max_records:
            return True
        assert self.deadline is not None
        return (self.clock() if now is None else now) >= self.deadline

    def take(self) -> list[Chunk]:
        """Remove and return up to ``max_records`` records, oldest first (splitting a chunk if needed)."""
        out: list[Chunk] = []
        room = self.max_records
        while self._chunks and room > 0:
            c = self._chunks[0]
            n = len(c)
            if n <= room:
                out.append(self._chunks.popleft())
                room -= n
                continue
            ns = min(room, len(c.samples))
            ne = room - ns
            out.append(Chunk(c.time, c.samples[:ns], c.events[:ne], c.tenants))
            self._chunks[0] = Chunk(c.time, c.samples[ns:], c.events[ne:], c.tenants)
            room = 0
        taken = sum(len(c) for c in out)
        self.records -= taken
        if self.records == 0:
            self.deadline = None
        else:
            # what is left starts a new batch now
            spread = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
            self.deadline = self.clock() + self.max_age * spread
        return out

    def put_back(self, chunks: list[Chunk]) -> None:
        """Return chunks that could not be sealed to the front of the buffer (not counted as new)."""
        for c in reversed(chunks):
            self._chunks.appendleft(c)
            self.records += len(c)
        if self.records and self.deadline is None:
            self.deadline = self.clock()
