"""Batch closing by size and by jittered age; the bounded buffer."""

from __future__ import annotations

import random

from hostmond.agent.shipping.batcher import Batcher

from hostmond.api import Event, Sample


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(n: int, start: int = 0) -> list[Sample]:
    return [Sample("m", "gauge", float(i), {}) for i in range(start, start + n)]


def test_batch_closes_by_size_and_splits_a_large_collection_in_order() -> None:
    b = Batcher(max_records=10, max_age=60.0, jitter=0.0, limit_records=1000, clock=Clock())
    b.add(1.0, samples(7), [])
    assert not b.due()
    b.add(2.0, samples(8, 7), [Event("e", 2.0, {}, {})])
    assert b.due() and b.records == 16
    first = b.take()
    assert [s.value for c in first for s in c.samples] == [float(i) for i in range(10)]
    assert [c.time for c in first] == [1.0, 2.0]
    rest = b.take()
    assert [s.value for c in rest for s in c.samples] == [float(i) for i in range(10, 15)]
    assert sum(len(c.events) for c in rest) == 1 and b.records == 0 and b.deadline is None


def test_batch_closes_by_age_within_the_jitter_bounds() -> None:
    clock = Clock()
    rng = random.Random(7)
    deadlines = []
    for _ in range(200):
        b = Batcher(max_records=100, max_age=10.0, jitter=0.2, limit_records=1000, rng=rng, clock=clock)
        b.add(1.0, samples(1), [])
        deadlines.append(b.deadline - clock.now)
    assert all(8.0 <= d <= 12.0 for d in deadlines)
    assert max(deadlines) - min(deadlines) > 3.0  # actually spread
    b = Batcher(max_records=100, max_age=10.0, jitter=0.0, limit_records=1000, clock=clock)
    b.add(1.0, samples(3), [])
    clock.now += 9.99
    assert not b.due()
    clock.now += 0.02
    assert b.due()


def test_full_buffer_refuses_whole_collections_and_counts_records() -> None:
    b = Batcher(max_records=100, max_age=10.0, jitter=0.0, limit_records=20, clock=Clock())
    assert b.add(1.0, samples(15), [])
    assert not b.add(1.0, samples(6), [])
    assert b.add(1.0, samples(5), [])
    assert (b.records, b.dropped) == (20, 6)
    chunks = b.take()
    b.put_back(chunks)
    assert b.records == 20 and b.dropped == 6
