"""``selinux``: whether SELinux is on and in which mode (node_exporter's ``selinux``).

SELinux is enabled when its file system is mounted (``{sys_root}/fs/selinux/enforce``
exists). Then ``node_selinux_current_mode`` is that file (1 enforcing, 0
permissive) and ``node_selinux_config_mode`` the ``SELINUX=`` of
``{rootfs}/etc/selinux/config`` (1 enforcing, 0 permissive, -1 disabled).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import GAUGE, Collector, MetricSpec, Sample

_MODES = {"enforcing": 1.0, "permissive": 0.0, "disabled": -1.0}


def parse_selinux_config(text: str) -> float | None:
    """The mode of ``SELINUX=...`` in /etc/selinux/config; None when absent or unknown."""
    for line in text.splitlines():
        key, sep, val = line.strip().partition("=")
        if sep and key.strip() == "SELINUX":
            return _MODES.get(val.strip().strip("\"'").lower())
    return None


class SELinuxCollector(Collector):
    name = "selinux"
    inline = True
    metrics = (
        MetricSpec("node_selinux_enabled", GAUGE, "SELinux is enabled, 1 is true, 0 is false"),
        MetricSpec("node_selinux_config_mode", GAUGE, "Configured SELinux enforcement mode"),
        MetricSpec("node_selinux_current_mode", GAUGE, "Current SELinux enforcement mode"),
    )

    def collect(self) -> Iterator[Sample]:
        try:
            enforce = _procfs.read_optional(os.path.join(self.ctx.sys_root, "fs", "selinux", "enforce"))
        except OSError:
            enforce = None
        if enforce is None:
            yield self.sample("node_selinux_enabled", 0.0)
            return
        yield self.sample("node_selinux_enabled", 1.0)
        try:
            yield self.sample("node_selinux_current_mode", float(int(enforce.strip())))
        except ValueError:
            self.partial_error("enforce_malformed")
        try:
            cfg = _procfs.read_optional(os.path.join(self.ctx.rootfs, "etc", "selinux", "config"))
        except OSError:
            cfg = None
        mode = parse_selinux_config(cfg) if cfg is not None else None
        if mode is not None:
            yield self.sample("node_selinux_config_mode", mode)
