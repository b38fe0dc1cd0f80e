"""``conntrack``: the netfilter connection table (node_exporter's ``conntrack``).

``{proc_root}/sys/net/netfilter/nf_conntrack_{count,max}`` give the entries and
the limit; ``{proc_root}/net/stat/nf_conntrack`` (hexadecimal, one line per CPU)
the statistics, summed over CPUs. No conntrack module loaded: nothing to report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, CollectorUnavailable, MetricSpec, Sample

STAT_FIELDS = ("found", "invalid", "ignore", "insert", "insert_failed", "drop", "early_drop", "search_restart")
_STAT_HELP = {
    "found": "Number of searched entries which were successful.",
    "invalid": "Number of packets seen which can not be tracked.",
    "ignore": "Number of packets seen which are already connected to a conntrack entry.",
    "insert": "Number of entries inserted into the list.",
    "insert_failed": "Number of entries for which list insertion was attempted but failed.",
    "drop": "Number of packets dropped due to conntrack failure.",
    "early_drop": "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    "search_restart": "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
}


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """Sum the per-CPU lines of /proc/net/stat/nf_conntrack by the names of its header line."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("nf_conntrack stat: empty")
    header = lines[0]
    out = {name: 0 for name in header}
    for row in lines[1:]:
        if len(row) != len(header):
            raise ValueError(f"nf_conntrack stat: {len(row)} columns, header has {len(header)}")
        for name, v in zip(header, row):
            out[name] += int(v, 16)
    return out


class ConntrackCollector(Collector):
    name = "conntrack"
    inline = True
    metrics = (
        MetricSpec("node_nf_conntrack_entries", GAUGE, "Number of currently allocated flow entries for connection tracking."),
        MetricSpec("node_nf_conntrack_entries_limit", GAUGE, "Maximum size of connection tracking table."),
        *(MetricSpec(f"node_nf_conntrack_stat_{f}", GAUGE, _STAT_HELP[f]) for f in STAT_FIELDS),
    )

    def collect(self) -> Iterator[Sample]:
        proc = self.ctx.proc_root
        base = os.path.join(proc, "sys", "net", "netfilter")
        count = _procfs.read_optional(os.path.join(base, "nf_conntrack_count"))
        if count is None:
            raise CollectorUnavailable("no nf_conntrack module loaded")
        yield self.sample("node_nf_conntrack_entries", float(int(count.strip())))
        mx = _procfs.read_optional(os.path.join(base, "nf_conntrack_max"))
        if mx is not None:
            yield self.sample("node_nf_conntrack_entries_limit", float(int(mx.strip())))
        text = _procfs.read_optional(os.path.join(proc, "net", "stat", "nf_conntrack"))
        if text is None:
            return
        try:
            st = parse_conntrack_stat(text)
        except ValueError:
            self.partial_error("stat_malformed")
            return
        for f in STAT_FIELDS:
            if f in st:
                yield self.sample(f"node_nf_conntrack_stat_{f}", float(st[f]))
