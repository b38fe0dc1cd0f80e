"""``sockstat``: sockets in use by protocol from ``{proc_root}/net/sockstat`` and ``sockstat6`` (node_exporter's ``sockstat``).

``TCP: inuse 8 orphan 0 tw 298 alloc 8 mem 130`` becomes ``node_sockstat_TCP_inuse``
... and, for ``mem`` (in pages), also ``node_sockstat_TCP_mem_bytes``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample

# The fields node_exporter (prometheus/procfs) knows; others are ignored as it does.
FIELDS = ("inuse", "orphan", "tw", "alloc", "mem", "memory")
V4 = ("TCP", "UDP", "UDPLITE", "RAW", "FRAG")
V6 = ("TCP6", "UDP6", "UDPLITE6", "RAW6", "FRAG6")
_FIELDS_OF = {"TCP": FIELDS[:5], "UDP": ("inuse", "mem"), "UDPLITE": ("inuse",), "RAW": ("inuse",), "FRAG": ("inuse", "memory")}


def parse_sockstat(text: str, page_size: int = _procfs.PAGE_SIZE) -> dict[str, float]:
    """``{metric name: value}`` of one sockstat file."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        proto, sep, rest = line.partition(":")
        if not sep:
            continue
        kv = rest.split()
        if len(kv) % 2:
            raise ValueError(f"sockstat: odd number of fields in {line!r}")
        proto = proto.strip()
        for k, v in zip(kv[::2], kv[1::2]):
            if proto == "sockets":
                if k == "used":
                    out["node_sockstat_sockets_used"] = float(int(v))
                continue
            if k not in FIELDS:
                continue
            out[f"node_sockstat_{proto}_{k}"] = float(int(v))
            if k == "mem":
                out[f"node_sockstat_{proto}_mem_bytes"] = float(int(v) * page_size)
    return out


def _specs() -> tuple[MetricSpec, ...]:
    out = [MetricSpec("node_sockstat_sockets_used", GAUGE, "Number of IPv4 sockets in use.")]
    for v6 in (False, True):
        for proto in V6 if v6 else V4:
            base = proto[:-1] if v6 else proto
            fields = ("inuse",) if v6 and base != "FRAG" else _FIELDS_OF[base]
            for f in fields:
                out.append(MetricSpec(f"node_sockstat_{proto}_{f}", GAUGE, f"Number of {proto} sockets in state {f}."))
                if f == "mem":
                    out.append(MetricSpec(f"node_sockstat_{proto}_mem_bytes", GAUGE, f"Number of {proto} sockets in state mem_bytes."))
    return tuple(out)


class SockstatCollector(Collector):
    name = "sockstat"
    inline = True
    metrics = _specs()

    def collect(self) -> Iterator[Sample]:
        for fname in ("sockstat", "sockstat6"):
            try:
                text = _procfs.read_text(os.path.join(self.ctx.proc_root, "net", fname))
            except FileNotFoundError:
                continue  # no IPv6 here
            for name, v in parse_sockstat(text).items():
                if name in self._specs:
                    yield self.sample(name, v)
                else:
                    self.partial_error("unknown_field")
