"""``entropy``: the kernel's entropy pool from ``{proc_root}/sys/kernel/random/`` (node_exporter's ``entropy``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample


def parse_int(text: str) -> int:
    """A file holding one integer (``256\\n``)."""
    return int(text.strip())


class EntropyCollector(Collector):
    name = "entropy"
    inline = True
    metrics = (
        MetricSpec("node_entropy_available_bits", GAUGE, "Bits of available entropy."),
        MetricSpec("node_entropy_pool_size_bits", GAUGE, "Bits of entropy pool."),
    )

    def collect(self) -> Iterator[Sample]:
        base = os.path.join(self.ctx.proc_root, "sys", "kernel", "random")
        yield self.sample("node_entropy_available_bits", float(parse_int(_procfs.read_text(os.path.join(base, "entropy_avail")))))
        yield self.sample("node_entropy_pool_size_bits", float(parse_int(_procfs.read_text(os.path.join(base, "poolsize")))))
