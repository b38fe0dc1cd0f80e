"""``uname``: ``node_uname_info``, the kernel's uname(2) fields as labels (node_exporter's ``uname``).

Dashboards build their host pickers from this family. The fields come from
uname(2) (the agent's UTS namespace, as node_exporter's); ``domainname``, which
Python's ``os.uname()`` leaves out, from ``{proc_root}/sys/kernel/domainname``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample

LABELS = ("sysname", "release", "version", "machine", "nodename", "domainname")


def uname_labels(u: os.uname_result, domainname: str | None) -> dict[str, str]:
    """The labels of node_uname_info; an unreadable domain name is ``(none)``, as the kernel writes it."""
    return {
        "sysname": u.sysname,
        "release": u.release,
        "version": u.version,
        "machine": u.machine,
        "nodename": u.nodename,
        "domainname": (domainname or "").strip() or "(none)",
    }


class UnameCollector(Collector):
    name = "uname"
    inline = True
    metrics = (MetricSpec("node_uname_info", GAUGE, "Labeled system information as provided by the uname system call.", LABELS),)

    def collect(self) -> Iterator[Sample]:
        try:
            dom = _procfs.read_optional(os.path.join(self.ctx.proc_root, "sys", "kernel", "domainname"))
        except OSError:
            dom = None
        yield self.sample("node_uname_info", 1.0, uname_labels(os.uname(), dom))
