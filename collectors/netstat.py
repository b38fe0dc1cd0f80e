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
    return out


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

    def collect(self) -> Iterator[Sample]:
        net = os.path.join(self.ctx.proc_root, "net")
        stats: dict[str, float] = {}
        stats.update(parse_netstat(_procfs.read_text(os.path.join(net, "netstat"))))
        stats.update(parse_netstat(_procfs.read_text(os.path.join(net, "snmp"))))
        snmp6 = _procfs.read_optional(os.path.join(net, "snmp6"))
        if snmp6 is not None:
            stats.update(parse_snmp6(snmp6))
        match = self._match
        for k, v in stats.items():
            ok = match.get(k)
            if ok is None:
                ok = match[k] = self._fields.search(k) is not None
            if ok:
                yield Sample(f"node_netstat_{k}", GAUGE, v, {})
