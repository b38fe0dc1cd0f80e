"""``arp``: ARP entries per interface from ``{proc_root}/net/arp`` (node_exporter's ``arp``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs

from hostmond.api import (
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
    check_regex,
    field,
)


def count_arp(text: str) -> dict[str, int]:
    """Entries per device (last column); the header line is skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6:
            out[parts[5]] = out.get(parts[5], 0) + 1
    return out


@dataclass
class ARPConfig(CollectorConfig):
    device_include: str = field("", "Regular expression of interfaces reported; empty reports all.", check=check_regex)
    device_exclude: str = field("", "Regular expression of interfaces left out; empty leaves none out.", check=check_regex)


class ARPCollector(Collector[ARPConfig]):
    name = "arp"
    inline = True
    config_class = ARPConfig
    metrics = (MetricSpec("node_arp_entries", GAUGE, "ARP entries by device", ("device",)),)

    config: ARPConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._inc = re.compile(self.config.device_include) if self.config.device_include else None
        self._exc = re.compile(self.config.device_exclude) if self.config.device_exclude else None

    def collect(self) -> Iterator[Sample]:
        counts = count_arp(_procfs.read_text(os.path.join(self.ctx.proc_root, "net", "arp")))
        for dev, n in sorted(counts.items()):
            if (self._inc is not None and not self._inc.search(dev)) or (self._exc is not None and self._exc.search(dev)):
                continue
            yield self.sample("node_arp_entries", float(n), {"device": dev})
