"""``softnet``: per-CPU packet processing counters from ``{proc_root}/net/softnet_stat`` (node_exporter's ``softnet``).

One line per online CPU, hexadecimal columns: processed, dropped, time_squeeze,
... node_exporter 1.5 labels each line with its position (``cpu="0"``, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import COUNTER, Collector, MetricSpec, Sample


def parse_softnet(text: str) -> list[tuple[int, int, int]]:
    """(processed, dropped, times_squeezed) per line."""
    out: list[tuple[int, int, int]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise ValueError(f"softnet_stat: expected at least 3 columns, got {line!r}")
        out.append((int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)))
    return out


class SoftnetCollector(Collector):
    name = "softnet"
    inline = True
    metrics = (
        MetricSpec("node_softnet_processed_total", COUNTER, "Number of processed packets", ("cpu",)),
        MetricSpec("node_softnet_dropped_total", COUNTER, "Number of dropped packets", ("cpu",)),
        MetricSpec("node_softnet_times_squeezed_total", COUNTER, "Number of times processing packets ran out of quota", ("cpu",)),
    )

    def collect(self) -> Iterator[Sample]:
        rows = parse_softnet(_procfs.read_text(os.path.join(self.ctx.proc_root, "net", "softnet_stat")))
        for i, (processed, dropped, squeezed) in enumerate(rows):
            lab = {"cpu": str(i)}
            yield self.sample("node_softnet_processed_total", float(processed), lab)
            yield self.sample("node_softnet_dropped_total", float(dropped), dict(lab))
            yield self.sample("node_softnet_times_squeezed_total", float(squeezed), dict(lab))
