"""``network``: per-interface traffic counters, link state, TCP connections by state.

Reads ``{proc_root}/net/dev`` (node_exporter's ``netdev`` names),
``{sys_root}/class/net/<iface>/operstate`` and ``carrier`` (its ``netclass`` names)
and TCP connections by state (its ``tcpstat`` name, ``node_tcp_connection_states{state}``).

TCP states come, like node_exporter's, from the kernel's sock_diag netlink
interface: one dump walks the connection hash table once for IPv4 and IPv6
together, where reading ``/proc/net/tcp`` and ``tcp6`` walks it twice and costs
several times the CPU (about 12 ms against 2 ms on a 24 GB machine, whose hash
table has 256k buckets whatever the number of connections). ``tcp_source = "auto"``
uses netlink when ``proc_root`` is a real procfs (netlink answers for the agent's
network namespace, which is what ``{proc_root}/net`` shows too) and the
``{proc_root}/net/tcp{,6}`` files otherwise (a fixture tree); a netlink failure
(a seccomp profile that forbids it) falls back to the files.

``{proc_root}/net`` is the network namespace of the process that reads it: in a
container the agent must share the host's network namespace (as node_exporter
must) for these to be the host's figures.

Reading ``carrier`` of an interface that is administratively down fails with
EINVAL: the carrier series is then absent for that interface, not an error.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
    check_regex,
    field,
)

_HELP = {
    "bytes": ("Network device statistic {}_bytes.", "bytes"),
    "packets": ("Network device statistic {}_packets.", ""),
    "errs": ("Network device statistic {}_errs.", ""),
    "drop": ("Network device statistic {}_drop.", ""),
    "fifo": ("Network device statistic {}_fifo.", ""),
    "frame": ("Network device statistic {}_frame.", ""),
    "compressed": ("Network device statistic {}_compressed.", ""),
    "multicast": ("Network device statistic {}_multicast.", ""),
    "colls": ("Network device statistic {}_colls.", ""),
    "carrier": ("Network device statistic {}_carrier.", ""),
}


def _netdev_specs() -> tuple[MetricSpec, ...]:
    out = []
    for f in _procfs.NETDEV_FIELDS:
        direction, _, what = f.partition("_")
        help_, unit = _HELP[what]
        out.append(MetricSpec(f"node_network_{f}_total", COUNTER, help_.format(direction), ("device",), unit))
    return tuple(out)


def _check_source(v: str) -> None:
    if v not in ("auto", "netlink", "proc"):
        raise ValueError("must be one of auto, netlink, proc")


def is_procfs(path: str, mounts_text: str | None = None) -> bool:
    """Whether ``path`` is a mount of the proc file system in this process's mount table."""
    real = os.path.realpath(path)
    if mounts_text is None:
        try:
            mounts_text = _procfs.read_text("/proc/self/mounts")
        except OSError:
            return False
    return any(m.fstype == "proc" and m.mountpoint == real for m in _procfs.parse_mounts(mounts_text))


@dataclass
class NetworkConfig(CollectorConfig):
    device_exclude: str = field(
        "", "Regular expression of interfaces left out (e.g. '^veth'); empty keeps all.", check=check_regex
    )
    tcp_states: bool = field(True, "Count TCP connections by state (IPv4 and IPv6).")
    tcp_source: str = field(
        "auto",
        "Where TCP states come from: 'netlink' (sock_diag, cheapest), 'proc' (the net/tcp and net/tcp6 files), "
        "or 'auto' (netlink when proc_root is a real procfs, else the files).",
        check=_check_source,
    )


class NetworkCollector(Collector[NetworkConfig]):
    name = "network"
    config_class = NetworkConfig
    metrics = (
        *_netdev_specs(),
        MetricSpec("node_network_up", GAUGE, "Value is 1 if operstate is 'up', 0 otherwise.", ("device",)),
        MetricSpec("node_network_carrier", GAUGE, "Network device property: carrier (1 = link detected).", ("device",)),
        MetricSpec("node_tcp_connection_states", GAUGE, "Number of connection states.", ("state",)),
    )

    config: NetworkConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._exclude = re.compile(self.config.device_exclude) if self.config.device_exclude else None
        src = self.config.tcp_source
        self._netlink = src == "netlink" or (src == "auto" and is_procfs(ctx.proc_root))

    def collect(self) -> Iterator[Sample]:
        s = self.sample
        devs = _procfs.parse_net_dev(_procfs.read_text(os.path.join(self.ctx.proc_root, "net", "dev")))
        for dev, fields in devs.items():
            if self._exclude is not None and self._exclude.search(dev):
                continue
            labels = {"device": dev}
            for f, v in fields.items():
                yield s(f"node_network_{f}_total", float(v), labels)
            yield from self._link(dev, labels)
        if self.config.tcp_states:
            yield from self._tcp()

    def _link(self, dev: str, labels: dict[str, str]) -> Iterator[Sample]:
        base = os.path.join(self.ctx.sys_root, "class", "net", dev)
        try:
            oper = _procfs.read_text(os.path.join(base, "operstate")).strip()
        except FileNotFoundError:
            return  # interface gone between the two reads, or no sysfs: nothing to say
        except OSError:
            self.partial_error("operstate_unreadable")
            return
        yield self.sample("node_network_up", 1.0 if oper == "up" else 0.0, labels)
        try:
            carrier = _procfs.read_text(os.path.join(base, "carrier")).strip()
        except OSError:
            return  # EINVAL while the interface is down; absent on some virtual devices
        if carrier in ("0", "1"):
            yield self.sample("node_network_carrier", float(carrier), labels)

    def _tcp(self) -> Iterator[Sample]:
        if self._netlink:
            try:
                counts = tcp_states_netlink()
            except (OSError, ValueError) as e:
                # Forbidden or unsupported here: use the files from now on, and say so once.
                self._netlink = False
                self.partial_error("tcp_netlink_failed")
                self.log.warning("sock_diag netlink failed; reading TCP states from proc files", extra={"error": str(e)})
            else:
                for state, n in counts.items():
                    yield self.sample("node_tcp_connection_states", float(n), {"state": state})
                return
        counts2: dict[str, int] | None = None
        found = False
        for name in ("tcp", "tcp6"):
            try:
                text = _procfs.read_text(os.path.join(self.ctx.proc_root, "net", name))
            except FileNotFoundError:
                continue  # no IPv6 in this kernel
            except OSError:
                self.partial_error(f"{name}_unreadable")
                continue
            found = True
            counts2 = _procfs.count_tcp_states(text, counts2)
        if not found or counts2 is None:
            return
        for state, n in counts2.items():
            yield self.sample("node_tcp_connection_states", float(n), {"state": state})


NETLINK_SOCK_DIAG = 4


def tcp_states_netlink(timeout: float = 2.0) -> dict[str, int]:
    """Count TCP sockets by state with one sock_diag dump (IPv4 and IPv6) of this network namespace."""
    counts = {name: 0 for name in _procfs.TCP_STATES.values()}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
        s.settimeout(timeout)
        s.send(_procfs.inet_diag_tcp_request())
        while True:
            data = s.recv(1 << 16)
            if not data:
                raise OSError("sock_diag: connection closed before the end of the dump")
            if _procfs.count_inet_diag_states(data, counts):
                return counts
