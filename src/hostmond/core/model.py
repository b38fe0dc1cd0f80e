"""The data model shared by collectors, the agent, the wire protocol and the ingest.

:class:`MetricSpec` documents one metric family; :class:`Sample` is one value of
one series; :class:`Event` is one structured record. Plugin authors get these
from :mod:`hostmond.api`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

COUNTER = "counter"
GAUGE = "gauge"
METRIC_TYPES = (COUNTER, GAUGE)
# The ingest's own prometheus_client metrics use HISTOGRAM (its store latency); declared collector
# families are counters and gauges. Families learned at run time (Collector.family: the textfile
# collector) may also be untyped, summaries or histograms; their samples keep counter or gauge as
# type (what the wire carries).
HISTOGRAM = "histogram"
UNTYPED = "untyped"
SUMMARY = "summary"
FAMILY_TYPES = (COUNTER, GAUGE, UNTYPED, SUMMARY, HISTOGRAM)


@dataclasses.dataclass(frozen=True, slots=True)
class MetricSpec:
    """Documentation of one metric family a collector may emit.

    ``labels`` lists the collector's own labels; the agent adds ``tenant_id`` and
    the static tags to every sample, so they are not listed here.
    """

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""

    def __post_init__(self) -> None:
        if self.type not in FAMILY_TYPES:
            raise ValueError(f"metric {self.name}: type must be one of {METRIC_TYPES}, not {self.type!r}")

    def sample_names(self) -> tuple[str, ...]:
        """The sample names of this family: ``NAME_bucket``/``_sum``/``_count`` for a histogram, and so on."""
        if self.type == HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        if self.type == SUMMARY:
            return (self.name, f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


class Sample:
    """One value of one series. ``labels`` maps label name to value (both str)."""

    __slots__ = ("name", "type", "value", "labels", "timestamp")

    def __init__(
        self,
        name: str,
        type: str,
        value: float,
        labels: dict[str, str] | None = None,
        timestamp: float | None = None,
    ) -> None:
        self.name = name
        self.type = type
        self.value = value
        self.labels = labels if labels is not None else {}
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"Sample({self.name!r}, {self.type!r}, {self.value!r}, {self.labels!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        return (self.name, self.type, self.value, self.labels, self.timestamp) == (
            other.name,
            other.type,
            other.value,
            other.labels,
            other.timestamp,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "value": self.value, "labels": self.labels}
        if self.timestamp is not None:
            d["timestamp"] = self.timestamp
        return d


class Event:
    """A structured record (one failed login, one brute-force alarm).

    ``kind`` is a short fixed identifier (``auth_failure``); ``fields`` holds
    JSON/msgpack-serialisable values; ``labels`` receives ``tenant_id`` and the
    static tags from the agent (a collector may set ``tenant_id`` itself).
    """

    __slots__ = ("kind", "time", "fields", "labels")

    def __init__(
        self,
        kind: str,
        time: float,
        fields: dict[str, Any],
        labels: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.time = time
        self.fields = fields
        self.labels = labels if labels is not None else {}

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.time!r}, {self.fields!r}, {self.labels!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "time": self.time, "fields": self.fields, "labels": self.labels}
