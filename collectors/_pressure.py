"""Pressure stall information (/proc/pressure/*), shared by the cpu, memory and disk collectors."""

from __future__ import annotations

from collections.abc import Iterator

from hostmond.collectors import _procfs

from hostmond.api import Collector, Sample

_PSI_NAMES = {"some": "waiting", "full": "stalled"}


def pressure_samples(c: Collector, path: str, resource: str) -> Iterator[Sample]:
    """node_pressure_<resource>_{waiting,stalled}_seconds_total from one PSI file; absent file -> nothing.

    Shared by the cpu, memory and disk (io) collectors. A kernel with PSI compiled
    in but disabled (``psi=0``) answers EOPNOTSUPP on read: also "no data here".
    """
    try:
        text = _procfs.read_optional(path)
    except OSError as e:
        if e.errno in (95, 22):  # EOPNOTSUPP, EINVAL: PSI disabled
            return
        c.partial_error(f"pressure_{resource}_unreadable")
        return
    if text is None:
        return
    try:
        lines = _procfs.parse_pressure(text)
    except ValueError:
        c.partial_error(f"pressure_{resource}_malformed")
        return
    for kind, line in lines.items():
        yield c.sample(f"node_pressure_{resource}_{_PSI_NAMES[kind]}_seconds_total", line.total_seconds)
