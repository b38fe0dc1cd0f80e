"""``netstat``: kernel network protocol counters (node_exporter's ``netstat``).

Reads ``{proc_root}/net/netstat`` and ``{proc_root}/net/snmp`` (pairs of lines:
``Tcp: ActiveOpens ...`` then ``Tcp: 5 ...``) and ``{proc_root}/net/snmp6``
(``Udp6InDatagrams 12``). Each field becomes ``node_netstat_<Proto>_<Field>``
when it matches ``fields`` (node_exporter's default ``--collector.netstat.fields``).
node_exporter exposes these untyped; hostmon's model has counters and gauges
only, so they are gauges here (names unchanged: they carry no ``_total``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
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

DEFAULT_FIELDS = (
    r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)"
    r"|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)"
    r"|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)"
    r"|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$"
)

# What the default fields select on Linux 5.x/6.x, declared for the docs; other fields a
# wider ``fields`` selects are emitted as gauges all the same.
KNOWN = (
    "Icmp6_InErrors", "Icmp6_InMsgs", "Icmp6_OutMsgs", "Icmp_InErrors", "Icmp_InMsgs", "Icmp_OutMsgs",
    "Ip6_InOctets", "Ip6_OutOctets", "IpExt_InOctets", "IpExt_OutOctets", "Ip_Forwarding",
    "TcpExt_ListenDrops", "TcpExt_ListenOverflows", "TcpExt_SyncookiesFailed", "TcpExt_SyncookiesRecv",
    "TcpExt_SyncookiesSent", "TcpExt_TCPSynRetrans", "TcpExt_TCPTimeouts", "Tcp_ActiveOpens", "Tcp_CurrEstab",
    "Tcp_InErrs", "Tcp_InSegs", "Tcp_OutRsts", "Tcp_OutSegs", "Tcp_PassiveOpens", "Tcp_RetransSegs",
    "Udp6_InDatagrams", "Udp6_InErrors", "Udp6_NoPorts", "Udp6_OutDatagrams", "Udp6_RcvbufErrors",
    "Udp6_SndbufErrors", "UdpLite6_InErrors", "UdpLite_InErrors", "Udp_InDatagrams", "Udp_InErrors",
    "Udp_NoPorts", "Udp_OutDatagrams", "Udp_RcvbufErrors", "Udp_SndbufErrors",
)


def parse_netstat(text: str) -> dict[str, float]:
    """/proc/net/netstat or /proc/net/snmp: ``{"Tcp_ActiveOpens": 5.0, ...}`` from header/value line pairs."""
    out: dict[str, float] = {}
    lines = text.splitlines()
    for i in range(0, len(lines) - 1, 2):
        hp, _, names = lines[i].partition(":")
        vp, _, vals = lines[i + 1].partition(":")
        if hp != vp:
            raise ValueError(f"netstat: header {hp!r} followed by values of {vp!r}")
        n, v = names.split(), vals.split()
        if len(n) != len(v):
            raise ValueError(f"netstat: {hp}: {len(n)} names, {len(v)} values")
        for k, x in zip(n, v):
            out[f"{hp}_{k}"] = float(x)
    return out  # the collector uses header_selection and reads only the wanted fields


def parse_snmp6(text: str) -> dict[str, float]:
    """/proc/net/snmp6: ``Udp6InDatagrams 12`` -> ``{"Udp6_InDatagrams": 12.0}`` (split after the first '6')."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        i = parts[0].find("6")
        if i < 0:
            continue
        out[f"{parts[0][: i + 1]}_{parts[0][i + 1 :]}"] = float(parts[1])
    return out


def header_selection(header: str, wanted: Callable[[str], bool]) -> tuple[str, int, list[tuple[int, str]]]:
    """For a header line of /proc/net/netstat or snmp (``Tcp: RtoAlgorithm ActiveOpens``): its
    prefix, its number of names, and ``(position, "Proto_Field")`` of the names ``wanted`` accepts."""
    hp, _, names = header.partition(":")
    n = names.split()
    return hp, len(n), [(i, f"{hp}_{k}") for i, k in enumerate(n) if wanted(f"{hp}_{k}")]


def snmp6_key(name: str) -> str | None:
    """``Udp6InDatagrams`` -> ``Udp6_InDatagrams`` (split after the first '6'); None without a '6'."""
    i = name.find("6")
    return None if i < 0 else f"{name[: i + 1]}_{name[i + 1 :]}"


@dataclass
class NetstatConfig(CollectorConfig):
    fields: str = field(DEFAULT_FIELDS, "Regular expression of the Proto_Field names reported (node_exporter's default).", check=check_regex)


class NetstatCollector(Collector[NetstatConfig]):
    name = "netstat"
    inline = True
    config_class = NetstatConfig
    metrics = tuple(MetricSpec(f"node_netstat_{k}", GAUGE, f"Statistic {k.replace('_', '')}.") for k in KNOWN)

    config: NetstatConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._fields = re.compile(self.config.fields)
        self._match: dict[str, bool] = {}
        # The header lines and snmp6 names are the kernel's, the same every cycle: which of their
        # fields are wanted is worked out once, and only those values are converted.
        self._headers: dict[str, tuple[str, int, list[tuple[int, str]]]] = {}
        self._snmp6: dict[str, str | None] = {}

    def _wanted(self, k: str) -> bool:
        ok = self._match.get(k)
        if ok is None:
            if len(self._match) >= 4096:
                self._match.clear()
            ok = self._match[k] = self._fields.search(k) is not None
        return ok

    def _pairs(self, text: str, stats: dict[str, float]) -> None:
        """parse_netstat, for the wanted fields only (same checks of the line pairs)."""
        lines = text.splitlines()
        headers = self._headers
        for i in range(0, len(lines) - 1, 2):
            header = lines[i]
            sel = headers.get(header)
            if sel is None:
                if len(headers) >= 256:
                    headers.clear()
                sel = headers[header] = header_selection(header, self._wanted)
            hp, n, picks = sel
            vp, _, vals = lines[i + 1].partition(":")
            if hp != vp:
                raise ValueError(f"netstat: header {hp!r} followed by values of {vp!r}")
            v = vals.split()
            if len(v) != n:
                raise ValueError(f"netstat: {hp}: {n} names, {len(v)} values")
            for j, key in picks:
                stats[key] = float(v[j])

    def _snmp6_pairs(self, text: str, stats: dict[str, float]) -> None:
        """parse_snmp6, for the wanted fields only."""
        keys = self._snmp6
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            name = parts[0]
            if name in keys:
                key = keys[name]
            else:
                if len(keys) >= 4096:
                    keys.clear()
                key = snmp6_key(name)
                key = keys[name] = key if key is not None and self._wanted(key) else None
            if key is not None:
                stats[key] = float(parts[1])

    def collect(self) -> Iterator[Sample]:
        net = os.path.join(self.ctx.proc_root, "net")
        stats: dict[str, float] = {}
        self._pairs(_procfs.read_text(os.path.join(net, "netstat")), stats)
        self._pairs(_procfs.read_text(os.path.join(net, "snmp")), stats)
        snmp6 = _procfs.read_optional(os.path.join(net, "snmp6"))
        if snmp6 is not None:
            self._snmp6_pairs(snmp6, stats)
        for k, v in stats.items():
            yield Sample(f"node_netstat_{k}", GAUGE, v, {})
