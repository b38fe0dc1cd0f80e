"""``filefd``: allocated and maximum file handles from ``{proc_root}/sys/fs/file-nr`` (node_exporter's ``filefd``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample


def parse_file_nr(text: str) -> tuple[int, int]:
    """``1039\\t0\\t2466177`` -> (allocated, maximum); the middle field (always 0 since 2.6) is ignored."""
    parts = text.split()
    if len(parts) != 3:
        raise ValueError(f"file-nr: expected 3 fields, got {text!r}")
    return int(parts[0]), int(parts[2])


class FileFDCollector(Collector):
    name = "filefd"
    inline = True
    metrics = (
        MetricSpec("node_filefd_allocated", GAUGE, "File descriptor statistics: allocated."),
        MetricSpec("node_filefd_maximum", GAUGE, "File descriptor statistics: maximum."),
    )

    def collect(self) -> Iterator[Sample]:
        alloc, mx = parse_file_nr(_procfs.read_text(os.path.join(self.ctx.proc_root, "sys", "fs", "file-nr")))
        yield self.sample("node_filefd_allocated", float(alloc))
        yield self.sample("node_filefd_maximum", float(mx))
