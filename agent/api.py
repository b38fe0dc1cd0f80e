"""The collector plugin API: samples, events, metric specs and the ``Collector`` base.

This module is the whole contract between the agent and a collector, built-in or
third-party. A collector:

* names itself (``name``), says whether it is on by default (``default_enabled``);
* declares its config section as a dataclass (``config_class``, a subclass of
  :class:`CollectorConfig`); the agent validates ``[collectors.NAME]`` against it;
* declares every metric it may emit (``metrics``: a tuple of :class:`MetricSpec`);
* implements ``collect()``, which returns (or yields) :class:`Sample` and
  :class:`Event` objects. ``collect()`` runs in a worker thread with a timeout,
  so it may block on file reads; it must not keep global state outside ``self``.
  A collector that only reads a few small kernel files sets ``inline = True``
  and runs on the agent's event loop instead (cheaper, but no timeout).

Stateful collectors override ``start()``/``stop()`` and keep what must survive a
restart in ``self.ctx.state`` (a :class:`StateStore`, one JSON file per collector
in the agent's state directory, written atomically).

A collector that has nothing to report on this host (no GPU, no such file) raises
:class:`CollectorUnavailable` from ``start()`` or ``collect()``: that is "no data
here", reported at debug level and not counted as a failure. Any other exception
is a failure: counted, logged once per distinct message, and the other
collectors keep running.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

COUNTER = "counter"
GAUGE = "gauge"
METRIC_TYPES = (COUNTER, GAUGE)


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
        if self.type not in METRIC_TYPES:
            raise ValueError(f"metric {self.name}: type must be one of {METRIC_TYPES}, not {self.type!r}")


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


class CollectorUnavailable(Exception):
    """Raised by a collector that has nothing to collect on this host (not a failure)."""


def field(default: Any, help: str, **kw: Any) -> Any:
    """A config dataclass field with its one-sentence help (used by the sample config)."""
    if isinstance(default, (list, dict, set)):
        factory = (lambda d=default: type(d)(d))  # noqa: E731
        return dataclasses.field(default_factory=factory, metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass
class CollectorConfig:
    """Keys every ``[collectors.NAME]`` section accepts. Subclass it to add more.

    ``None`` means "use the agent default" (``[runtime]`` section).
    """

    enabled: bool | None = field(None, "Turn the collector on or off; unset uses the collector's own default.")
    interval: float | None = field(None, "Seconds between collections; unset uses runtime.interval.")
    timeout: float | None = field(None, "Seconds a collection may take before it is abandoned; unset uses runtime.timeout.")


class StateStore:
    """Small persisted state for one collector: a JSON object in one file, written atomically."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._mem: dict[str, Any] = {}

    def load(self) -> dict[str, Any]:
        """Return the saved state, or ``{}`` when none (or unreadable: logged, then moved aside)."""
        if self.path is None:
            return dict(self._mem)
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            logging.getLogger("hostmon.state").warning(
                "state file unreadable, starting fresh", extra={"path": self.path, "error": str(e)}
            )
            try:
                os.replace(self.path, f"{self.path}.corrupt-{int(time.time())}")
            except OSError:
                pass
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: Mapping[str, Any]) -> None:
        """Write the state: temp file, fsync, rename, so a crash leaves the old or the new file."""
        if self.path is None:
            self._mem = dict(data)
            return
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".state-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


@dataclasses.dataclass
class CollectorContext:
    """What the agent gives each collector.

    ``proc_root``/``sys_root``/``rootfs`` point at the host's trees (``/host/proc``
    in a container). ``tags`` holds ``tenant_id`` and the static tags that the
    agent adds to every sample; collectors need not add them. ``tenancy`` maps a
    process (uid, cgroup text) to a tenant id (see ``agent.tenancy``).
    """

    proc_root: str = "/proc"
    sys_root: str = "/sys"
    rootfs: str = "/"
    state: StateStore = dataclasses.field(default_factory=lambda: StateStore(None))
    state_dir: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    tenancy: Any = None
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("hostmon.collector"))

    @property
    def tenant_id(self) -> str:
        return self.tags.get("tenant_id", "default")


class Collector:
    """Base class of every collector. Override ``collect()``; see the module docstring."""

    name: ClassVar[str] = ""
    default_enabled: ClassVar[bool] = True
    #: ``collect()`` only reads a few small procfs/sysfs files and never blocks: the agent runs it on
    #: its event loop instead of a worker thread (no timeout then). A thread round trip costs about
    #: 0.5 ms of CPU per run, more than such a collection; leave False for anything that may block.
    inline: ClassVar[bool] = False
    config_class: ClassVar[type[CollectorConfig]] = CollectorConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        self.config = config
        self.ctx = ctx
        self.log = ctx.logger
        self._specs = {m.name: m for m in self.metrics}
        self._partial_errors: dict[str, int] = {}

    # -- life cycle (run in a worker thread) ---------------------------------
    def start(self) -> None:
        """Open files, load state. Raise CollectorUnavailable when there is nothing to collect."""

    def stop(self) -> None:
        """Save state, close files. Called once on shutdown or reload."""

    def collect(self) -> Iterable[Sample | Event]:
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------
    def sample(self, name: str, value: float, labels: dict[str, str] | None = None, timestamp: float | None = None) -> Sample:
        """Build a sample of a declared metric; the type comes from its spec."""
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"collector {self.name}: metric {name} is not declared in {type(self).__name__}.metrics")
        return Sample(name, spec.type, value, labels if labels is not None else {}, timestamp)

    def partial_error(self, reason: str, n: int = 1) -> None:
        """Count a partial failure (one file unreadable, one device failed) under a fixed ``reason``.

        ``reason`` must come from a small fixed vocabulary: it becomes a label of
        ``hostmon_collector_partial_errors_total``.
        """
        self._partial_errors[reason] = self._partial_errors.get(reason, 0) + n

    def take_partial_errors(self) -> dict[str, int]:
        out, self._partial_errors = self._partial_errors, {}
        return out
