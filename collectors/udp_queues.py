"""``udp_queues``: bytes queued in UDP sockets (node_exporter's ``udp_queues``).

node_exporter sums the ``tx_queue``/``rx_queue`` columns of ``{proc_root}/net/udp`` and
``udp6``. Reading those files walks the kernel's whole UDP hash table once per file, with a
lock per bucket (here 16,384 buckets: about 100 µs per file with no socket at all). When
``proc_root`` is a real procfs (the agent's own network namespace, which is what
``{proc_root}/net`` shows too) the same figures come from one sock_diag netlink dump per
family, which the kernel fills from the same fields (``sk_wmem_alloc_get``,
``udp_rqueue_get``) at about a third of the cost. A netlink failure (no ``udp_diag``
module, a seccomp profile) falls back to the files for good, counted once as the partial
error ``udp_netlink_failed``; a fixture tree is always read from its files.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import (
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
)

NETLINK_SOCK_DIAG = 4
_FAMILIES = (("v4", "udp", socket.AF_INET), ("v6", "udp6", socket.AF_INET6))


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


def udp_queues_netlink(family: int, timeout: float = 2.0) -> tuple[int, int]:
    """(tx, rx) summed over this network namespace's UDP sockets of ``family``, by sock_diag."""
    acc = [0, 0]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
        s.settimeout(timeout)
        s.send(_procfs.inet_diag_v2_request(family, socket.IPPROTO_UDP))
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise OSError("sock_diag: connection closed before the end of the dump")
            if _procfs.sum_inet_diag_queues(data, acc):
                return acc[0], acc[1]


class UDPQueuesCollector(Collector):
    name = "udp_queues"
    metrics = (MetricSpec("node_udp_queues", GAUGE, "Number of allocated memory in the kernel for UDP datagrams in bytes.", ("ip", "queue")),)

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._netlink = _procfs.is_procfs(ctx.proc_root)

    def _has(self, fname: str) -> bool:
        """Whether the kernel has that protocol family (no IPv6: no udp6 file, no v6 series)."""
        return os.path.exists(os.path.join(self.ctx.proc_root, "net", fname))

    def collect(self) -> Iterator[Sample]:
        got: list[tuple[str, int, int]] = []
        if self._netlink:
            try:
                got = [(ip, *udp_queues_netlink(fam)) for ip, fname, fam in _FAMILIES if self._has(fname)]
            except (OSError, ValueError) as e:
                self._netlink = False
                got = []
                self.partial_error("udp_netlink_failed")
                self.log.warning("sock_diag netlink failed; reading UDP queues from proc files", extra={"error": str(e)})
        if not self._netlink:
            for ip, fname, _ in _FAMILIES:
                try:
                    text = _procfs.read_text(os.path.join(self.ctx.proc_root, "net", fname))
                except FileNotFoundError:
                    continue  # no IPv6 here
                got.append((ip, *sum_udp_queues(text)))
        for ip, tx, rx in got:
            yield self.sample("node_udp_queues", float(tx), {"ip": ip, "queue": "tx"})
            yield self.sample("node_udp_queues", float(rx), {"ip": ip, "queue": "rx"})
