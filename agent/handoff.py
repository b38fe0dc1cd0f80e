"""The hand-off from the runtime to consumers of collected data (the shipper).

After every collection the runtime tags the samples and events (``tenant_id``
and static tags) and calls ``submit()`` on each registered :class:`Consumer`
from the event loop. ``submit`` must not block: a consumer copies what it needs
into its own bounded buffer and returns. A consumer that must drop data counts
it in its own self-metrics (``self_metrics()``), which the exposition renders.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

from hostmond.core.model import Event, Sample


@dataclasses.dataclass(slots=True)
class Collection:
    """What one collector produced in one run, already tagged."""

    collector: str
    time: float  # wall-clock seconds when the collection finished
    samples: list[Sample]
    events: list[Event]


class Consumer(Protocol):
    def submit(self, collection: Collection) -> None:
        """Take one collection; never blocks, never raises for a full buffer (count and drop)."""

    def self_metrics(self) -> Iterable[Sample]:
        """Samples describing the consumer itself (queue size, limit, dropped, ...)."""
