"""``udp_queues``: bytes queued in UDP sockets from ``{proc_root}/net/udp`` and ``udp6`` (node_exporter's ``udp_queues``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample


def sum_udp_queues(text: str) -> tuple[int, int]:
    """(tx_queue, rx_queue) summed over the sockets; the 5th column is ``TX:RX`` in hexadecimal."""
    tx = rx = 0
    for line in text.splitlines()[1:]:
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        t, sep, r = parts[4].partition(":")
        if not sep:
            raise ValueError(f"udp: bad queue column {parts[4]!r}")
        tx += int(t, 16)
        rx += int(r, 16)
    return tx, rx


class UDPQueuesCollector(Collector):
    name = "udp_queues"
    metrics = (MetricSpec("node_udp_queues", GAUGE, "Number of allocated memory in the kernel for UDP datagrams in bytes.", ("ip", "queue")),)

    def collect(self) -> Iterator[Sample]:
        for ip, fname in (("v4", "udp"), ("v6", "udp6")):
            try:
                text = _procfs.read_text(os.path.join(self.ctx.proc_root, "net", fname))
            except FileNotFoundError:
                continue  # no IPv6 here
            tx, rx = sum_udp_queues(text)
            yield self.sample("node_udp_queues", float(tx), {"ip": ip, "queue": "tx"})
            yield self.sample("node_udp_queues", float(rx), {"ip": ip, "queue": "rx"})
