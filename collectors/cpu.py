"""``cpu``: per-CPU seconds by mode, load averages, kernel counters and CPU pressure.

Reads ``{proc_root}/stat``, ``{proc_root}/loadavg`` and, where the kernel has PSI,
``{proc_root}/pressure/cpu`` (absent: no pressure series, not an error). Names are
node_exporter's (its ``cpu``, ``loadavg``, ``stat`` and ``pressure`` collectors).
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
    MetricSpec,
    Sample,
    field,
)


@dataclass
class CPUConfig(CollectorConfig):
    guest: bool = field(True, "Report node_cpu_guest_seconds_total (time spent running virtual machines).")
    pressure: bool = field(True, "Report CPU pressure (PSI) from the kernel's pressure file where it exists.")


class CPUCollector(Collector[CPUConfig]):
    name = "cpu"
    inline = True
    config_class = CPUConfig
    metrics = (
        MetricSpec("node_cpu_seconds_total", COUNTER, "Seconds the CPUs spent in each mode.", ("cpu", "mode"), "seconds"),
        MetricSpec(
            "node_cpu_guest_seconds_total",
            COUNTER,
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            ("cpu", "mode"),
            "seconds",
        ),
        MetricSpec("node_load1", GAUGE, "1m load average."),
        MetricSpec("node_load5", GAUGE, "5m load average."),
        MetricSpec("node_load15", GAUGE, "15m load average."),
        MetricSpec("node_context_switches_total", COUNTER, "Total number of context switches."),
        MetricSpec("node_intr_total", COUNTER, "Total number of interrupts serviced."),
        MetricSpec("node_forks_total", COUNTER, "Total number of forks."),
        MetricSpec("node_boot_time_seconds", GAUGE, "Node boot time, in unixtime.", (), "seconds"),
        MetricSpec("node_procs_running", GAUGE, "Number of processes in runnable state."),
        MetricSpec("node_procs_blocked", GAUGE, "Number of processes blocked waiting for I/O to complete."),
        MetricSpec(
            "node_pressure_cpu_waiting_seconds_total",
            COUNTER,
            "Total time in seconds that processes have waited for CPU time (PSI 'some').",
            (),
            "seconds",
        ),
        MetricSpec(
            "node_pressure_cpu_stalled_seconds_total",
            COUNTER,
            "Total time in seconds no process could make progress due to CPU congestion (PSI 'full').",
            (),
            "seconds",
        ),
    )

    config: CPUConfig

    def collect(self) -> Iterator[Sample]:
        proc = self.ctx.proc_root
        st = _procfs.parse_stat(_procfs.read_text(os.path.join(proc, "stat")))
        s = self.sample
        for cpu, t in st.cpus.items():
            for mode in _procfs.CPU_MODES:
                yield s("node_cpu_seconds_total", getattr(t, mode), {"cpu": cpu, "mode": mode})
            if self.config.guest:
                yield s("node_cpu_guest_seconds_total", t.guest, {"cpu": cpu, "mode": "user"})
                yield s("node_cpu_guest_seconds_total", t.guest_nice, {"cpu": cpu, "mode": "nice"})
        for name, value in (
            ("node_context_switches_total", st.ctxt),
            ("node_intr_total", st.intr),
            ("node_forks_total", st.processes),
            ("node_boot_time_seconds", st.btime),
            ("node_procs_running", st.procs_running),
            ("node_procs_blocked", st.procs_blocked),
        ):
            if value is not None:
                yield s(name, value)

        try:
            l1, l5, l15 = _procfs.parse_loadavg(_procfs.read_text(os.path.join(proc, "loadavg")))
        except (OSError, ValueError):
            self.partial_error("loadavg_unreadable")
        else:
            yield s("node_load1", l1)
            yield s("node_load5", l5)
            yield s("node_load15", l15)

        if self.config.pressure:
            yield from pressure_samples(self, os.path.join(proc, "pressure", "cpu"), "cpu")
