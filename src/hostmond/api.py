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
from typing import Any, ClassVar, Generic, TypeVar

from hostmond.core.config import field
from hostmond.core.errors import ConfigError, HostmonError, KeyFileError, PluginError
from hostmond.core.model import (
    COUNTER,
    FAMILY_TYPES,
    GAUGE,
    HISTOGRAM,
    METRIC_TYPES,
    SUMMARY,
    UNTYPED,
    Event,
    MetricSpec,
    Sample,
)
from hostmond.core.validate import check_not_negative, check_positive, check_regex

__all__ = [
    "COUNTER",
    "FAMILY_TYPES",
    "GAUGE",
    "HISTOGRAM",
    "METRIC_TYPES",
    "SUMMARY",
    "UNTYPED",
    "Collector",
    "CollectorConfig",
    "CollectorContext",
    "CollectorUnavailable",
    "ConfigError",
    "Event",
    "HostmonError",
    "KeyFileError",
    "MetricSpec",
    "PluginError",
    "Sample",
    "StateStore",
    "check_not_negative",
    "check_positive",
    "check_regex",
    "field",
]


class CollectorUnavailable(Exception):
    """Raised by a collector that has nothing to collect on this host (not a failure)."""


@dataclasses.dataclass
class CollectorConfig:
    """Keys every ``[collectors.NAME]`` section accepts. Subclass it to add more.

    ``None`` means "use the agent default" (``[runtime]`` section).
    """

    enabled: bool | None = field(None, "Turn the collector on or off; unset uses the collector's own default.")
    interval: float | None = field(None, "Seconds between collections; unset uses runtime.interval.")
    timeout: float | None = field(None, "Seconds a collection may take before it is abandoned; unset uses runtime.timeout.")


class StateStore:
    """Small persisted state for one collector: a JSON object in one file, written atomically.

    Each save keeps the previous one as ``FILE.prev``. When the file is unreadable
    (garbled, empty, not an object) it is moved aside, :attr:`resets` counts it
    (the runtime exposes ``hostmon_collector_state_resets_total{collector}``) and
    :meth:`load` returns the previous save: a safe point a little behind, so what
    happened since is read again rather than skipped. With no usable previous
    save it returns ``{}`` and :attr:`reset_floor` holds the broken file's time
    (when it was last written), for a collector that can re-read from there.
    A collector that finds a value inside its state unusable calls :meth:`note_reset`.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._mem: dict[str, Any] = {}
        self.resets = 0
        self.reset_floor: float | None = None

    def load(self) -> dict[str, Any]:
        """The saved state; after a crash or damage, the previous save; ``{}`` when there is none."""
        if self.path is None:
            return dict(self._mem)
        data, err = _read_state(self.path)
        if data is not None:
            return data
        prev, _ = _read_state(self.path + ".prev")
        if err == "missing":
            return prev or {}  # first start; or a crash between the two renames of save(): prev is the state
        try:
            floor: float | None = os.stat(self.path).st_mtime
        except OSError:
            floor = None
        try:
            os.replace(self.path, f"{self.path}.corrupt-{int(time.time())}")
        except OSError:
            pass
        if prev is not None:
            self.note_reset(f"{err}; resumed from the previous save (what followed it is read again)")
            return prev
        self.note_reset(f"{err}; no previous save, starting fresh")
        self.reset_floor = floor
        return {}

    def note_reset(self, why: str) -> None:
        """Count and log one loss of state (the collector restarts from a safe point)."""
        self.resets += 1
        logging.getLogger("hostmon.state").warning("collector state reset", extra={"path": self.path, "reason": why})

    def save(self, data: Mapping[str, Any]) -> None:
        """Write the state: temp file, fsync, keep the old file as FILE.prev, rename into place."""
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
            try:
                os.replace(self.path, self.path + ".prev")
            except FileNotFoundError:
                pass
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _read_state(path: str) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object in ``path``, "") or (None, why not): "missing" or a short reason."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64 << 20)
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return None, "empty" if not raw.strip() else f"not JSON: {e}"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, ""


@dataclasses.dataclass
class CollectorContext:
    """What the agent gives each collector.

    ``proc_root``/``sys_root``/``rootfs`` point at the host's trees (``/host/proc``
    in a container). ``tags`` holds ``tenant_id`` and the static tags that the
    agent adds to every sample; collectors need not add them. ``tenancy`` maps a
    process (uid, cgroup text) to a tenant id (see ``hostmond.agent.tenancy``).
    ``declared_metrics`` holds every sample name the agent's collectors and
    self-metrics declare: a collector with run-time families must not emit those.
    """

    proc_root: str = "/proc"
    sys_root: str = "/sys"
    rootfs: str = "/"
    state: StateStore = dataclasses.field(default_factory=lambda: StateStore(None))
    state_dir: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    tenancy: Any = None
    declared_metrics: frozenset[str] = frozenset()
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("hostmon.collector"))

    @property
    def tenant_id(self) -> str:
        return self.tags.get("tenant_id", "default")


ConfigT = TypeVar("ConfigT", bound=CollectorConfig)


class Collector(Generic[ConfigT]):
    """Base class of every collector. Override ``collect()``; see the module docstring.

    Generic over its config class: ``class QueueCollector(Collector[QueueConfig])`` with
    ``config_class = QueueConfig`` gives ``self.config`` the type ``QueueConfig``.

    Families learned at run time: a collector that cannot declare every family in
    ``metrics`` (the textfile collector: its families come from files) sets
    ``dynamic_families = True`` and, in each ``collect()``, describes every family
    it emits with :meth:`family` before emitting its samples. The agent renders
    them with that HELP and TYPE, for that run only. The agent refuses (drops,
    counts as partial error ``family_clash``) a run-time family whose name is
    declared elsewhere or emitted by another collector, and samples of no described
    family (``family_undescribed``), so the collector should check
    ``ctx.declared_metrics`` itself and report a clash in its own words. A dynamic
    collector bounds what it emits (files, bytes, series) itself. Each
    ``Sample.type`` stays counter or gauge (what shipped batches carry): a
    histogram's buckets, sums and counts are counters, a summary's quantiles and
    untyped values gauges.
    """

    name: ClassVar[str] = ""
    default_enabled: ClassVar[bool] = True
    #: ``collect()`` only reads a few small procfs/sysfs files and never blocks: the agent runs it on
    #: its event loop instead of a worker thread (no timeout then). A thread round trip costs about
    #: 0.5 ms of CPU per run, more than such a collection; leave False for anything that may block.
    inline: ClassVar[bool] = False
    config_class: ClassVar[type[CollectorConfig]] = CollectorConfig
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    dynamic_families: ClassVar[bool] = False

    def __init__(self, config: ConfigT, ctx: CollectorContext) -> None:
        self.config = config
        self.ctx = ctx
        self.log = ctx.logger
        self._specs = {m.name: m for m in self.metrics}
        self._partial_errors: dict[str, int] = {}
        self._families: dict[str, MetricSpec] = {}

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

    def family(self, name: str, type: str, help: str) -> MetricSpec:
        """Describe a family learned at run time (``dynamic_families`` collectors only), for this run."""
        if not self.dynamic_families:
            raise TypeError(f"collector {self.name}: set dynamic_families = True to describe families at run time")
        spec = MetricSpec(name, type, help)
        self._families[name] = spec
        return spec

    def take_families(self) -> dict[str, MetricSpec]:
        """The run-time families described since the last call (the runtime calls it after each run)."""
        out, self._families = self._families, {}
        return out

    def take_partial_errors(self) -> dict[str, int]:
        out, self._partial_errors = self._partial_errors, {}
        return out
