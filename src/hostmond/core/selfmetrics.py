"""The one registry of hostmon's self-metrics (agent, shipper, spool, web layer, ingest).

Each module declares its families once, at import, with :func:`declare`::

    SELF_SPECS = selfmetrics.declare("agent.runtime", MetricSpec(...), ...)

A name declared twice is an error at start (:class:`DuplicateMetricError`), as
prometheus_client's registry refuses a duplicate. The agent's /metrics takes
every declared spec's type and HELP from here, the ingest builds its
prometheus_client metrics from the same specs, and ``hostmon docs metrics``
lists them all (``docs/metrics.md``). Collector metrics are not here: each
collector class declares its own in ``metrics``.
"""

from __future__ import annotations

from hostmond.core.errors import HostmonError
from hostmond.core.model import COUNTER, GAUGE, MetricSpec


class DuplicateMetricError(HostmonError):
    """Two declarations of one self-metric name."""


_SPECS: dict[str, tuple[str, MetricSpec]] = {}


def declare(source: str, *specs: MetricSpec) -> tuple[MetricSpec, ...]:
    """Register ``specs`` under ``source`` (a module path without ``hostmond.``); returns them."""
    for s in specs:
        prev = _SPECS.get(s.name)
        if prev is not None:
            raise DuplicateMetricError(f"self-metric {s.name} is declared by {prev[0]} and again by {source}")
    for s in specs:
        _SPECS[s.name] = (source, s)
    return specs


def declared() -> list[tuple[str, MetricSpec]]:
    """(source, spec) of every self-metric declared so far, in declaration order."""
    return list(_SPECS.values())


def spec(name: str) -> MetricSpec:
    return _SPECS[name][1]


def find(name: str) -> MetricSpec | None:
    """The declared spec of ``name``, or None (not a self-metric, or its module is not loaded)."""
    hit = _SPECS.get(name)
    return hit[1] if hit is not None else None


# The standard process families (client_python's names and HELP texts), shared by the
# agent (its own /proc reader) and the ingest (prometheus_client's ProcessCollector).
PROCESS_SPECS = declare(
    "process",
    MetricSpec("process_cpu_seconds_total", COUNTER, "Total user and system CPU time spent in seconds.", (), "seconds"),
    MetricSpec("process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.", (), "bytes"),
    MetricSpec("process_virtual_memory_bytes", GAUGE, "Virtual memory size in bytes.", (), "bytes"),
    MetricSpec("process_open_fds", GAUGE, "Number of open file descriptors."),
    MetricSpec("process_max_fds", GAUGE, "Maximum number of open file descriptors."),
    MetricSpec("process_start_time_seconds", GAUGE, "Start time of the process since unix epoch in seconds.", (), "seconds"),
)

# The garbage collector's counts (client_python's GCCollector names and HELP texts): how often
# each generation ran is part of what the agent costs.
PYTHON_GC_SPECS = declare(
    "python_gc",
    MetricSpec("python_gc_objects_collected_total", COUNTER, "Objects collected during gc", ("generation",)),
    MetricSpec("python_gc_objects_uncollectable_total", COUNTER, "Uncollectable objects found during GC", ("generation",)),
    MetricSpec("python_gc_collections_total", COUNTER, "Number of times this generation was collected", ("generation",)),
)
