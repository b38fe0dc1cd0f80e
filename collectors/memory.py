"""``memory``: every /proc/meminfo field, swap activity from /proc/vmstat, memory pressure.

Names are node_exporter's: ``node_memory_<Field>_bytes`` (``Active(anon)`` becomes
``Active_anon``; unitless counts such as ``HugePages_Total`` have no ``_bytes``),
``node_vmstat_<field>`` for the vmstat fields node_exporter reports by default
(paging, swapping, faults, OOM kills), ``node_pressure_memory_*`` from PSI.

A meminfo field this module does not know (a newer kernel) is skipped, with one
log line per field name the first time it is seen (the set of kernel fields is
small and fixed), so it shows up without producing an undocumented series.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs
from hostmond.collectors._pressure import pressure_samples

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
    field,
)

# Every field fs/proc/meminfo.c (and arch code) prints, as of Linux 6.x. Unitless ones are counts.
_MEMINFO_BYTES = (
    "MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapCached", "Active", "Inactive",
    "Active(anon)", "Inactive(anon)", "Active(file)", "Inactive(file)", "Unevictable", "Mlocked",
    "HighTotal", "HighFree", "LowTotal", "LowFree", "MmapCopy", "SwapTotal", "SwapFree", "Zswap", "Zswapped",
    "Dirty", "Writeback", "AnonPages", "Mapped", "Shmem", "KReclaimable", "Slab", "SReclaimable", "SUnreclaim",
    "KernelStack", "ShadowCallStack", "PageTables", "SecPageTables", "NFS_Unstable", "Bounce", "WritebackTmp",
    "CommitLimit", "Committed_AS", "VmallocTotal", "VmallocUsed", "VmallocChunk", "Percpu", "EarlyMemtestBad",
    "HardwareCorrupted", "AnonHugePages", "ShmemHugePages", "ShmemPmdMapped", "FileHugePages", "FilePmdMapped",
    "CmaTotal", "CmaFree", "Unaccepted", "Balloon", "Hugepagesize", "Hugetlb", "DirectMap4k", "DirectMap2M",
    "DirectMap4M", "DirectMap1G", "Quicklists", "GPUActive", "GPUReclaim",
)
_MEMINFO_COUNTS = ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")

# node_exporter's default --collector.vmstat.fields: ^(oom_kill|pgpg|pswp|pg.*fault).*
# node_exporter exposes them untyped; they are declared gauges here (the closest
# type that keeps node_exporter's names, which carry no _total suffix).
_VMSTAT = {
    "pgpgin": "Kibibytes paged in from disk since boot.",
    "pgpgout": "Kibibytes paged out to disk since boot.",
    "pswpin": "Pages swapped in since boot.",
    "pswpout": "Pages swapped out since boot.",
    "pgfault": "Page faults since boot.",
    "pgmajfault": "Major page faults (needing disk I/O) since boot.",
    "oom_kill": "Processes killed by the OOM killer since boot.",
}


def vmstat_selected(text: str) -> dict[str, int]:
    """_procfs.parse_vmstat for the fields reported only (about 7 of some 190 lines)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name = line.partition(" ")[0]  # the kernel writes "name value", one space
        if name in _VMSTAT:
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = int(parts[1])
                except ValueError:
                    continue
    return out


def _meminfo_specs() -> tuple[MetricSpec, ...]:
    specs = [
        MetricSpec(
            _procfs.meminfo_metric_name(k, True),
            GAUGE,
            f"Memory information field {_procfs.meminfo_metric_name(k, True)[len('node_memory_'):]}.",
            (),
            "bytes",
        )
        for k in _MEMINFO_BYTES
    ]
    specs += [
        MetricSpec(
            _procfs.meminfo_metric_name(k, False),
            GAUGE,
            f"Memory information field {k}.",
        )
        for k in _MEMINFO_COUNTS
    ]
    return tuple(specs)


@dataclass
class MemoryConfig(CollectorConfig):
    vmstat: bool = field(True, "Report paging, swapping, fault and OOM-kill counts from the kernel's vmstat file.")
    pressure: bool = field(True, "Report memory pressure (PSI) from the kernel's pressure file where it exists.")


class MemoryCollector(Collector[MemoryConfig]):
    name = "memory"
    inline = True
    config_class = MemoryConfig
    metrics = (
        *_meminfo_specs(),
        *(MetricSpec(f"node_vmstat_{k}", GAUGE, f"/proc/vmstat information field {k}: {h}") for k, h in _VMSTAT.items()),
        MetricSpec(
            "node_pressure_memory_waiting_seconds_total",
            COUNTER,
            "Total time in seconds that processes have waited for memory (PSI 'some').",
            (),
            "seconds",
        ),
        MetricSpec(
            "node_pressure_memory_stalled_seconds_total",
            COUNTER,
            "Total time in seconds no process could make progress due to memory congestion (PSI 'full').",
            (),
            "seconds",
        ),
    )

    config: MemoryConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._unknown_seen: set[str] = set()

    def collect(self) -> Iterator[Sample]:
        proc = self.ctx.proc_root
        values = _procfs.parse_meminfo(_procfs.read_text(os.path.join(proc, "meminfo")))
        specs = self._specs
        for name, value in values.items():
            if name in specs:
                yield self.sample(name, value)
            elif name not in self._unknown_seen and len(self._unknown_seen) < 256:
                self._unknown_seen.add(name)
                self.log.info("meminfo field not known to hostmon, skipped", extra={"field": name})

        if self.config.vmstat:
            try:
                vm = vmstat_selected(_procfs.read_text(os.path.join(proc, "vmstat")))
            except OSError:
                self.partial_error("vmstat_unreadable")
            else:
                for k in _VMSTAT:
                    if k in vm:
                        yield self.sample(f"node_vmstat_{k}", vm[k])

        if self.config.pressure:
            yield from pressure_samples(self, os.path.join(proc, "pressure", "memory"), "memory")
