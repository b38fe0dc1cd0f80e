"""``network``: per-interface traffic counters, interface attributes, TCP connections by state.

Reads ``{proc_root}/net/dev`` and ``{sys_root}/class/net/<iface>/statistics/rx_nohandler``
(node_exporter's ``netdev`` names; ``lo`` left out by default as Debian's
node_exporter does), the attributes in ``{sys_root}/class/net/<iface>/`` of every
interface (its ``netclass``: ``node_network_info``, ``up``, ``mtu_bytes``,
``speed_bytes``, ``carrier``, ``flags``, ...) and TCP connections by state (its
``tcpstat`` name, ``node_tcp_connection_states{state}``).

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

Reading ``carrier`` (or ``speed``, ``duplex``) of an interface that is down fails
with EINVAL: that series is then absent for that interface, not an error
(node_exporter does the same).

A sysfs attribute file re-read from offset 0 (``pread``) shows the current value, so the
attribute files of an interface are opened once and kept, for at most ``MAX_KEPT_FDS``
descriptors in all (the interfaces beyond are read by path each cycle): a third of the cost
of open/read/close. They are closed when the interface goes away or its ``ifindex`` changes
(re-created under the same name; ``ifindex`` itself is read by path every cycle), and on stop.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs
from hostmond.collectors._procfs import is_procfs

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


DEFAULT_DEVICE_EXCLUDE = "^lo$"

# netclass: sysfs attribute file -> (metric, type, help); values are integers (decimal or 0x hex).
NETCLASS_INT: tuple[tuple[str, str, str, str], ...] = (
    ("addr_assign_type", "node_network_address_assign_type", GAUGE, "Network device property: address_assign_type"),
    ("carrier", "node_network_carrier", GAUGE, "Network device property: carrier"),
    ("carrier_changes", "node_network_carrier_changes_total", COUNTER, "Network device property: carrier_changes_total"),
    ("carrier_up_count", "node_network_carrier_up_changes_total", COUNTER, "Network device property: carrier_up_changes_total"),
    ("carrier_down_count", "node_network_carrier_down_changes_total", COUNTER, "Network device property: carrier_down_changes_total"),
    ("dev_id", "node_network_device_id", GAUGE, "Network device property: device_id"),
    ("dormant", "node_network_dormant", GAUGE, "Network device property: dormant"),
    ("flags", "node_network_flags", GAUGE, "Network device property: flags"),
    ("ifindex", "node_network_iface_id", GAUGE, "Network device property: iface_id"),
    ("iflink", "node_network_iface_link", GAUGE, "Network device property: iface_link"),
    ("link_mode", "node_network_iface_link_mode", GAUGE, "Network device property: iface_link_mode"),
    ("mtu", "node_network_mtu_bytes", GAUGE, "Network device property: mtu_bytes"),
    ("name_assign_type", "node_network_name_assign_type", GAUGE, "Network device property: name_assign_type"),
    ("netdev_group", "node_network_net_dev_group", GAUGE, "Network device property: net_dev_group"),
    ("speed", "node_network_speed_bytes", GAUGE, "Network device property: speed_bytes"),
    ("tx_queue_len", "node_network_transmit_queue_length", GAUGE, "Network device property: transmit_queue_length"),
    ("type", "node_network_protocol_type", GAUGE, "Network device property: protocol_type"),
)
NETCLASS_STR = ("address", "broadcast", "duplex", "ifalias", "operstate")
# Attributes fixed for an interface's life (an interface re-created under the same name gets a new
# ifindex, which is read every cycle): read once per ifindex, saving a third of the reads.
NETCLASS_STATIC = frozenset({"addr_assign_type", "broadcast", "dev_id", "iflink", "link_mode", "name_assign_type", "type"})
MAX_KEPT_FDS = 256  # attribute files kept open, all interfaces together, at most


def kept_fds_limit() -> int:
    """How many attribute files to keep open: MAX_KEPT_FDS, or 1/16 of the soft descriptor limit when
    that is lower (the listeners size their connection cap to 3/4 of the limit; see _procfs.kept_fds_limit).
    With RLIMIT_NOFILE=256 all of it once went here, and accept() failed with EMFILE."""
    return _procfs.kept_fds_limit(MAX_KEPT_FDS, 16)


INFO_LABELS = ("device", "address", "broadcast", "duplex", "operstate", "ifalias")
_SKIP_ERRNOS = (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EINVAL, errno.EOPNOTSUPP, errno.ENODEV, errno.ENOTDIR, errno.EISDIR)


def parse_sysfs_int(text: str) -> int:
    """A sysfs integer: decimal, or hexadecimal with ``0x`` (``flags``, ``dev_id``), as Go's ParseInt(v, 0)."""
    v = text.strip()
    try:
        return int(v, 0)
    except ValueError:
        return int(v, 10)


def netclass_values(attrs: dict[str, str]) -> tuple[dict[str, str], dict[str, float]]:
    """node_exporter's netclass view of one interface's readable attribute files.

    Returns the ``node_network_info`` labels (without ``device``) and ``{metric: value}``;
    an attribute that could not be read is absent from ``attrs`` and from the result.
    """
    info = {k: attrs.get(k, "").strip() for k in ("address", "broadcast", "duplex", "operstate", "ifalias")}
    vals: dict[str, float] = {"node_network_up": 1.0 if info["operstate"] == "up" else 0.0}
    for fname, metric, _, _ in NETCLASS_INT:
        raw = attrs.get(fname)
        if raw is None:
            continue
        try:
            n = parse_sysfs_int(raw)
        except ValueError:
            continue
        vals[metric] = float(int(n * 1_000_000 / 8)) if fname == "speed" else float(n)  # Go: int64(speed*1e6/8)
    return info, vals


def _check_source(v: str) -> None:
    if v not in ("auto", "netlink", "proc"):
        raise ValueError("must be one of auto, netlink, proc")


@dataclass
class NetworkConfig(CollectorConfig):
    device_exclude: str = field(
        DEFAULT_DEVICE_EXCLUDE,
        "Regular expression of interfaces left out of the traffic counters (Debian node_exporter's default); empty keeps all.",
        check=check_regex,
    )
    netclass: bool = field(True, "Report the attributes of every interface in sysfs (node_network_info, up, mtu_bytes, speed_bytes, ...).")
    netclass_ignored_devices: str = field(
        "", "Regular expression of interfaces left out of the sysfs attributes; empty keeps all.", check=check_regex
    )
    tcp_states: bool = field(
        False,
        "Count TCP connections by state (node_tcp_connection_states, IPv4 and IPv6): node_exporter's tcpstat, opt-in "
        "there too, because its one sock_diag dump per collection grows with the number of sockets "
        "(--collector.tcpstat turns it on).",
    )
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
        MetricSpec("node_network_receive_nohandler_total", COUNTER, "Network device statistic receive_nohandler.", ("device",)),
        MetricSpec("node_network_up", GAUGE, "Value is 1 if operstate is 'up', 0 otherwise.", ("device",)),
        MetricSpec("node_network_info", GAUGE, "Non-numeric data from /sys/class/net/<iface>, value is always 1.", INFO_LABELS),
        *(MetricSpec(m, t, h, ("device",)) for _, m, t, h in NETCLASS_INT),
        MetricSpec("node_tcp_connection_states", GAUGE, "Number of connection states.", ("state",)),
    )

    config: NetworkConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._exclude = re.compile(self.config.device_exclude) if self.config.device_exclude else None
        ign = self.config.netclass_ignored_devices
        self._nc_ignore = re.compile(ign) if ign else None
        self._static: dict[str, tuple[str, dict[str, str]]] = {}  # device -> (ifindex, static attributes)
        self._kept: dict[str, tuple[str, dict[str, int]]] = {}  # device -> (ifindex, {attribute file: fd})
        self._nkept = 0
        self._max_kept = kept_fds_limit()  # read at start: the limit the listeners sized themselves to
        src = self.config.tcp_source
        self._netlink = src == "netlink" or (src == "auto" and is_procfs(ctx.proc_root))

    def collect(self) -> Iterator[Sample]:
        s = self.sample
        devs = _procfs.parse_net_dev(_procfs.read_text(os.path.join(self.ctx.proc_root, "net", "dev")))
        cls_net = os.path.join(self.ctx.sys_root, "class", "net")
        for dev, fields in devs.items():
            if self._exclude is not None and self._exclude.search(dev):
                continue
            labels = {"device": dev}
            for f, v in fields.items():
                yield s(f"node_network_{f}_total", float(v), labels)
            try:
                kept = self._kept.get(dev)
                fd = kept[1].get("statistics/rx_nohandler") if kept is not None else None
                try:
                    if fd is None:
                        raise OSError
                    nohandler = os.pread(fd, 4096, 0)
                except OSError:  # not kept, or the interface was re-created (checked by _netclass)
                    nohandler = _procfs.read_small(f"{cls_net}/{dev}/statistics/rx_nohandler")
                yield s("node_network_receive_nohandler_total", float(int(nohandler)), labels)
            except (OSError, ValueError):
                pass  # older kernel, or no sysfs: node_exporter's netlink stats would say 0; we say nothing
        if self.config.netclass:
            yield from self._netclass(cls_net)
        if self.config.tcp_states:
            yield from self._tcp()

    def _netclass(self, cls_net: str) -> Iterator[Sample]:
        try:
            entries = sorted(os.listdir(cls_net))
        except OSError:
            return  # no sysfs here
        s = self.sample
        for gone in set(self._static) - set(entries):
            del self._static[gone]
        for gone in set(self._kept) - set(entries):
            self._forget(gone)
        for dev in entries:
            if self._nc_ignore is not None and self._nc_ignore.search(dev):
                continue
            base = f"{cls_net}/{dev}"
            if not os.path.isdir(base):
                continue  # bonding_masters
            attrs = self._read_attrs(base)
            if attrs is None:
                continue
            info, vals = netclass_values(attrs)
            labels = {"device": dev}
            yield s("node_network_info", 1.0, {"device": dev, **info})
            for metric, v in vals.items():
                yield s(metric, v, dict(labels))

    def _read_attrs(self, base: str) -> dict[str, str] | None:
        """The readable attribute files of one interface; None when the interface vanished meanwhile."""
        attrs: dict[str, str] = {}
        dev = os.path.basename(base)
        ifindex = self._attr(base, "ifindex")
        if ifindex is not None:
            attrs["ifindex"] = ifindex
        kept = self._kept.get(dev)
        if kept is not None and kept[0] != ifindex:  # gone, or another interface under this name
            self._forget(dev)
            kept = None
        if kept is None and ifindex is not None and self._nkept < self._max_kept:
            kept = self._kept[dev] = (ifindex, {})
        fds = kept[1] if kept is not None else None
        cached = self._static.get(dev)
        static_known = cached is not None and ifindex is not None and cached[0] == ifindex
        if static_known:
            attrs.update(cached[1])  # type: ignore[index]
        static: dict[str, str] = {}
        for fname in (*NETCLASS_STR, *(a[0] for a in NETCLASS_INT)):
            if fname == "ifindex" or (static_known and fname in NETCLASS_STATIC):
                continue
            v = self._attr(base, fname) if fds is None or fname in NETCLASS_STATIC else self._kept_attr(base, fname, fds)
            if v is None:
                continue
            attrs[fname] = v
            if fname in NETCLASS_STATIC:
                static[fname] = v
        if not static_known and ifindex is not None:
            self._static[dev] = (ifindex, static)
        if fds is not None and "statistics/rx_nohandler" not in fds and self._nkept < self._max_kept:
            try:  # read by the traffic counters, opened here where the interface's ifindex is known
                fds["statistics/rx_nohandler"] = os.open(f"{base}/statistics/rx_nohandler", os.O_RDONLY | os.O_CLOEXEC)
                self._nkept += 1
            except OSError:
                pass
        if not attrs and not os.path.isdir(base):
            self._static.pop(dev, None)
            self._forget(dev)
            return None
        return attrs

    def _kept_attr(self, base: str, fname: str, fds: dict[str, int]) -> str | None:
        """An attribute file kept open, re-read from offset 0; opened at its first use."""
        try:
            fd = fds.get(fname)
            if fd is None:
                if self._nkept >= self._max_kept:
                    return self._attr(base, fname)
                fd = fds[fname] = os.open(f"{base}/{fname}", os.O_RDONLY | os.O_CLOEXEC)
                self._nkept += 1
            return os.pread(fd, 4096, 0).decode("utf-8", "replace")
        except OSError as e:
            if e.errno not in _SKIP_ERRNOS:
                self.partial_error("netclass_unreadable")
            return None

    def _forget(self, dev: str) -> None:
        kept = self._kept.pop(dev, None)
        if kept is not None:
            for fd in kept[1].values():
                os.close(fd)
            self._nkept -= len(kept[1])

    def stop(self) -> None:
        for dev in list(self._kept):
            self._forget(dev)

    def _attr(self, base: str, fname: str) -> str | None:
        try:
            return _procfs.read_small(f"{base}/{fname}").decode("utf-8", "replace")
        except OSError as e:
            if e.errno not in _SKIP_ERRNOS:
                self.partial_error("netclass_unreadable")
            return None

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
