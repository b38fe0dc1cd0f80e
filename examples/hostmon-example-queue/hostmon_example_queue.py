"""Example hostmon plugin: how deep and how old is a file-based queue (a mail spool, an upload dir)?

It shows the whole plugin API: a config dataclass with help sentences, declared
metrics, a pure function apart from the I/O, a partial error, and an entry point.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorUnavailable,
    MetricSpec,
    Sample,
    field,
)


@dataclasses.dataclass
class QueueConfig(CollectorConfig):
    queues: dict[str, str] = field({}, "Queue name -> directory; each file in the directory is one queued item.")

    def validate(self) -> None:
        for name, path in self.queues.items():
            if not os.path.isabs(path):
                raise ValueError(f"queues.{name}: {path!r} must be an absolute path")


def summarize(entries: list[tuple[int, float]], now: float) -> tuple[int, int, float]:
    """(files, bytes, age of the oldest in seconds) from (size, mtime) pairs. Pure."""
    if not entries:
        return 0, 0, 0.0
    return len(entries), sum(s for s, _ in entries), max(0.0, now - min(m for _, m in entries))


class QueueDepthCollector(Collector[QueueConfig]):
    """Depth, size and age of file-based queues."""

    name = "example_queue"
    default_enabled = True
    config_class = QueueConfig
    metrics = (
        MetricSpec("example_queue_files", GAUGE, "Items (files) waiting in the queue.", ("queue",)),
        MetricSpec("example_queue_bytes", GAUGE, "Bytes waiting in the queue.", ("queue",), "bytes"),
        MetricSpec("example_queue_oldest_age_seconds", GAUGE, "Age of the oldest waiting item.", ("queue",), "seconds"),
        MetricSpec("example_queue_scans_total", COUNTER, "Scans of the queue directories since start."),
    )
    config: QueueConfig

    def start(self) -> None:
        if not self.config.queues:
            raise CollectorUnavailable("no queues configured")
        self.scans = 0

    def collect(self) -> Iterator[Sample]:
        now = time.time()
        self.scans += 1
        yield self.sample("example_queue_scans_total", self.scans)
        for name, path in sorted(self.config.queues.items()):
            entries = []
            try:
                with os.scandir(path) as it:
                    for e in it:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # taken off the queue while we looked
                        if e.is_file(follow_symlinks=False):
                            entries.append((st.st_size, st.st_mtime))
            except OSError:
                self.partial_error("queue_unreadable")
                continue
            files, size, age = summarize(entries, now)
            lab = {"queue": name}
            yield self.sample("example_queue_files", files, dict(lab))
            yield self.sample("example_queue_bytes", size, dict(lab))
            yield self.sample("example_queue_oldest_age_seconds", age, dict(lab))
