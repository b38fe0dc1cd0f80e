"""``interrupts``: interrupts serviced per CPU from ``{proc_root}/interrupts`` (node_exporter's ``interrupts``, off by default there and here).

``node_interrupts_total{cpu,type,info,devices}``: ``type`` is the line's name
(an IRQ number, or ``NMI``, ``LOC``, ...), ``info`` the controller and trigger
text, ``devices`` the devices sharing a numbered IRQ. One series per CPU and
line: about 50 lines times the CPU count, hence off by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs

from hostmond.api import COUNTER, Collector, MetricSpec, Sample


@dataclass
class Interrupt:
    info: str
    devices: str
    values: list[str]


def parse_interrupts(text: str) -> dict[str, Interrupt]:
    """node_exporter's parseInterrupts: the header counts the CPUs; the one-value totals (``ERR:``, ``MIS:``) are skipped as there."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("interrupts: empty")
    ncpu = len(lines[0].split())
    out: dict[str, Interrupt] = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < ncpu + 1:
            continue
        name = parts[0][:-1]
        values = parts[1 : ncpu + 1]
        rest = parts[ncpu + 1 :]
        if name.isdigit():
            out[name] = Interrupt(rest[0] if rest else "", " ".join(rest[1:]), values)
        else:
            out[name] = Interrupt(" ".join(rest), "", values)
    return out


class InterruptsCollector(Collector):
    name = "interrupts"
    inline = True
    default_enabled = False
    metrics = (MetricSpec("node_interrupts_total", COUNTER, "Interrupt details.", ("cpu", "type", "info", "devices")),)

    def collect(self) -> Iterator[Sample]:
        intr = parse_interrupts(_procfs.read_text(os.path.join(self.ctx.proc_root, "interrupts")))
        for name, it in intr.items():
            for cpu, v in enumerate(it.values):
                try:
                    value = float(int(v))
                except ValueError:
                    self.partial_error("malformed_value")
                    continue
                yield self.sample("node_interrupts_total", value, {"cpu": str(cpu), "type": name, "info": it.info, "devices": it.devices})
