"""The daemon: schedules collectors, isolates them, tags their output, hands it on.

Collectors that share an interval are collected together: at each tick the due ones
run one after another in ONE worker thread (blocking reads stay off the event loop),
and their results come back to the loop in one hand-off. A thread round trip per
collector cost more than most collections (about 0.45 ms each, ten milliseconds a
cycle for twenty collectors); one per tick costs one. Isolation is kept: a collection
that runs past half its interval (or its timeout, if shorter) is detached from the
batch, and the collectors after it go on in another thread; past its timeout it is
counted as a timeout and its late result is dropped. A collector still running (or
still queued) when its next tick comes makes that tick an overrun (counted, skipped),
so runs never pile up. A collector that raises or hangs never stops the others.
Results are tagged (tenant and static tags), stored for /metrics, and handed to the
consumers (the shipper, the anomaly stage).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import platform
import random
import resource
import signal
import threading
import time
from collections.abc import Iterable
from typing import Any

from hostmond.agent import config as config_mod
from hostmond.agent.exposition import MetricsServer, MetricStore, Renderer, fmt_value
from hostmond.agent.handoff import Collection, Consumer
from hostmond.agent.registry import discover

from hostmond import __version__
from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorContext,
    CollectorUnavailable,
    Event,
    MetricSpec,
    Sample,
    StateStore,
)
from hostmond.core import selfmetrics
from hostmond.core.errors import ConfigError, PluginError
from hostmond.core.logs import LogOnce

log = logging.getLogger("hostmon.runtime")

STALL_GAP = 2.0  # a timer this much later than due means the whole process stood still

SELF_SPECS: tuple[MetricSpec, ...] = selfmetrics.declare(
    "agent.runtime",
    MetricSpec("hostmon_build_info", GAUGE, "hostmon build information; value is 1.", ("version", "python")),
    MetricSpec("hostmon_collector_success", GAUGE, "Whether the collector's last run succeeded (1) or not (0).", ("collector",)),
    MetricSpec("hostmon_collector_duration_seconds", GAUGE, "Wall time of the collector's last run.", ("collector",), "seconds"),
    MetricSpec("hostmon_collector_runs_total", COUNTER, "Collections started.", ("collector",)),
    MetricSpec("hostmon_collector_errors_total", COUNTER, "Collections that raised an error.", ("collector",)),
    MetricSpec("hostmon_collector_timeouts_total", COUNTER, "Collections abandoned after the timeout.", ("collector",)),
    MetricSpec("hostmon_collector_overruns_total", COUNTER, "Ticks skipped because the previous collection was still running.", ("collector",)),
    MetricSpec(
        "hostmon_collector_state_resets_total", COUNTER,
        "Times the collector's saved state (positions, cursors) was unusable and it restarted from a safe point.",
        ("collector",),
    ),
    MetricSpec(
        "hostmon_collector_missed_periods_total", COUNTER,
        "Times the schedule fell behind because the whole agent was stopped (SIGSTOP, a frozen cgroup, a blocked "
        "event loop); one per stop however long it lasted, and not counted as overruns.", ("collector",),
    ),
    MetricSpec("hostmon_collector_partial_errors_total", COUNTER, "Partial failures reported by collectors, by fixed reason.", ("collector", "reason")),
    MetricSpec("hostmon_collector_last_success_timestamp_seconds", GAUGE, "Unix time of the collector's last successful run.", ("collector",), "seconds"),
    MetricSpec("hostmon_collector_samples", GAUGE, "Samples emitted by the collector's last successful run.", ("collector",)),
    # node_exporter's names for the same two figures, so its dashboards' "scrape time" panels work.
    MetricSpec("node_scrape_collector_success", GAUGE, "node_exporter: Whether a collector succeeded.", ("collector",)),
    MetricSpec("node_scrape_collector_duration_seconds", GAUGE, "node_exporter: Duration of a collector scrape.", ("collector",), "seconds"),
    MetricSpec("hostmon_plugin_load_errors", GAUGE, "Collector plugins that could not be loaded or configured and were skipped."),
    MetricSpec("hostmon_config_reloads_total", COUNTER, "Config reloads (SIGHUP) by result.", ("result",)),
    MetricSpec("hostmon_start_time_seconds", GAUGE, "Unix time the agent started.", (), "seconds"),
    MetricSpec("hostmon_time_seconds", GAUGE, "The agent's wall clock at the last self-metrics update (for clock-skew alerts).", (), "seconds"),
    MetricSpec("hostmon_ready", GAUGE, "1 once every enabled collector has finished its first run."),
)


# Each collector's own figures, one series per collector: (family, type, CollectorRunner attribute),
# in exposition order. CollectorRunner.self_samples() gives them as samples (``hostmon collect``);
# a scrape renders them straight from the attributes (Agent._runner_text), with no sample to build.
RUNNER_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("hostmon_collector_success", GAUGE, "success"),
    ("hostmon_collector_duration_seconds", GAUGE, "duration"),
    ("hostmon_collector_runs_total", COUNTER, "runs"),
    ("hostmon_collector_errors_total", COUNTER, "errors"),
    ("hostmon_collector_timeouts_total", COUNTER, "timeouts"),
    ("hostmon_collector_overruns_total", COUNTER, "overruns"),
    ("hostmon_collector_missed_periods_total", COUNTER, "missed_periods"),
    ("hostmon_collector_state_resets_total", COUNTER, "state_resets"),
    ("hostmon_collector_last_success_timestamp_seconds", GAUGE, "last_success"),
    ("hostmon_collector_samples", GAUGE, "n_samples"),
    # node_exporter's pair for the same figures
    ("node_scrape_collector_success", GAUGE, "success"),
    ("node_scrape_collector_duration_seconds", GAUGE, "duration"),
)


class CollectorRunner:
    """One collector instance with its schedule settings and counters."""

    def __init__(self, cls: type[Collector], instance: Collector, interval: float, timeout: float) -> None:
        self.cls = cls
        self.c = instance
        self.name = cls.name
        self.interval = interval
        self.timeout = timeout
        self.runs = 0
        self.errors = 0
        self.timeouts = 0
        self.overruns = 0
        self.missed_periods = 0
        self.partial: dict[str, int] = {}
        self.success = 0
        self.duration = 0.0
        self.last_success = 0.0
        self.n_samples = 0
        self.done_first = False
        self.started = False
        self.unavailable = False
        self.unavailable_reason = ""
        self.pending: concurrent.futures.Future[Any] | None = None  # a start still running after its timeout
        self.in_flight = False  # in a batch (queued or running) whose result the loop has not taken yet
        self.timed_out = False  # its running collection passed the timeout: the late result is dropped

    @property
    def state_resets(self) -> int:
        return self.c.ctx.state.resets

    def self_samples(self) -> list[Sample]:
        """The RUNNER_FAMILIES of this collector, as samples (not emitted for a collector with no data here)."""
        return [Sample(name, typ, getattr(self, attr), {"collector": self.name}) for name, typ, attr in RUNNER_FAMILIES]

    def partial_samples(self) -> list[Sample]:
        return [
            Sample("hostmon_collector_partial_errors_total", COUNTER, n, {"collector": self.name, "reason": reason})
            for reason, n in self.partial.items()
        ]


def _collect_list(c: Collector) -> list[Sample | Event]:
    return list(c.collect())


class _Batch:
    """Collections run one after another in one worker thread (one thread hand-off per tick).

    The loop may ``detach`` the rest: the batch stops after the collection running now,
    and the ones it had not started are returned (to go on in another batch).
    """

    def __init__(self, runners: list[CollectorRunner], gen: int) -> None:
        self.runners = runners
        self.gen = gen
        self.lock = threading.Lock()
        self.index = -1  # the runner collecting now
        self.started = 0.0  # time.monotonic() when it started
        self.cut = len(runners)  # runs runners[:cut]
        self.finished = False
        self.taken = 0  # results the loop has already handed on
        self.timer: asyncio.TimerHandle | None = None  # the loop's next look at it (see Agent._watch_batch)
        # (runner, items, error, duration), appended by the worker as each collection ends
        self.results: list[tuple[CollectorRunner, list[Sample | Event] | None, BaseException | None, float]] = []

    def run(self) -> None:
        try:
            for i, r in enumerate(self.runners):
                with self.lock:
                    if i >= self.cut:
                        return
                    self.index = i
                    self.started = t0 = time.monotonic()
                items: list[Sample | Event] | None = None
                err: BaseException | None = None
                try:
                    items = list(r.c.collect())
                except Exception as e:  # noqa: BLE001 - isolation: reported per collector by the loop
                    err = e
                self.results.append((r, items, err, time.monotonic() - t0))
        finally:
            with self.lock:
                self.finished = True

    def current(self) -> tuple[int, float] | None:
        with self.lock:
            if self.finished or self.index < 0:
                return None
            return self.index, self.started

    def detach(self) -> list[CollectorRunner]:
        with self.lock:
            if self.finished:
                return []
            rest = self.runners[self.index + 1 : self.cut]
            self.cut = self.index + 1
            return rest


def apply_tags(items: Iterable[Sample | Event], tags: dict[str, str]) -> tuple[list[Sample], list[Event]]:
    """Split samples from events and add the static tags; a sample's own ``tenant_id`` wins."""
    samples: list[Sample] = []
    events: list[Event] = []
    for it in items:
        lab = it.labels
        if "tenant_id" in lab:
            for k, v in tags.items():
                if k not in lab:
                    lab[k] = v
        else:
            lab.update(tags)
        if isinstance(it, Sample):
            samples.append(it)
        elif isinstance(it, Event):
            events.append(it)
    return samples, events


class ProcessStats:
    """The agent's own CPU and memory, like client_golang's process collector."""

    def __init__(self) -> None:
        self.start_time = time.time()
        try:
            with open("/proc/self/stat", "rb") as f:
                st = f.read().rsplit(b")", 1)[1].split()
            boot = 0.0
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime"):
                        boot = float(line.split()[1])
            self.start_time = boot + int(st[19]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
        self.page = os.sysconf("SC_PAGE_SIZE")
        try:
            self.max_fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except OSError:
            self.max_fds = 0
        self.samples: list[Sample] = []

    def refresh(self) -> list[Sample]:
        t = os.times()
        out = [
            Sample("process_cpu_seconds_total", COUNTER, t.user + t.system),
            Sample("process_start_time_seconds", GAUGE, self.start_time),
            Sample("process_max_fds", GAUGE, self.max_fds),
        ]
        try:
            with open("/proc/self/statm", "rb") as f:
                vm, rss = f.read().split()[:2]
            out.append(Sample("process_virtual_memory_bytes", GAUGE, int(vm) * self.page))
            out.append(Sample("process_resident_memory_bytes", GAUGE, int(rss) * self.page))
        except (OSError, ValueError):
            pass
        try:
            out.append(Sample("process_open_fds", GAUGE, len(os.listdir("/proc/self/fd"))))
        except OSError:
            pass
        for gen, st in enumerate(gc.get_stats()):
            g = {"generation": str(gen)}
            out.append(Sample("python_gc_objects_collected_total", COUNTER, st["collected"], g))
            out.append(Sample("python_gc_objects_uncollectable_total", COUNTER, st["uncollectable"], dict(g)))
            out.append(Sample("python_gc_collections_total", COUNTER, st["collections"], dict(g)))
        self.samples = out
        return out


_gc_settled = False
GC_GEN0_THRESHOLD = 10_000  # see _settle_gc


def _settle_gc() -> None:
    """Once the agent runs (modules, collectors, server set up), keep the garbage collector off those objects.

    What exists after start lives as long as the process; a full collection walked all of it
    (about 50,000 objects, ~25 ms here) every few dozen cycles for nothing. ``gc.freeze`` moves
    it to the permanent generation; objects made later are collected as usually.

    The youngest generation is collected after ``GC_GEN0_THRESHOLD`` net new container objects
    instead of Python's 700. A collection cycle makes a thousand or more samples and label dicts
    that live until the cycle is done, so at 700 the collector ran about twice a cycle over objects
    about to be freed anyway (0.49 ms per 1 s cycle here, ~4 % of the agent's CPU); at 10,000 it
    runs about once every 100 cycles (0.01 ms per cycle). Only cyclic garbage waits for it, and
    a cycle leaves about a hundred objects behind.
    """
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, older, oldest)


def _all_self_specs() -> list[MetricSpec]:
    return [s for _, s in selfmetrics.declared()]


def exposition_hidden_labels(cfg: config_mod.Config) -> tuple[str, ...]:
    """Labels the samples carry but /metrics leaves out: ``host`` unless ``http.host_label`` asks for it.

    On a scrape target ``host`` duplicates Prometheus' ``instance`` target label; shipped
    batches have no ``instance``, so they keep ``host``.
    """
    return () if cfg.http.host_label else ("host",)


def build_collectors(
    cfg: config_mod.Config,
    classes: dict[str, type[Collector]],
    *,
    persist_state: bool = True,
    only: Iterable[str] | None = None,
    declared: Iterable[str] | None = None,
) -> tuple[list[CollectorRunner], list[PluginError]]:
    """Instantiate the enabled collectors. A bad section is reported and that collector skipped.

    ``declared``: every sample name the exposition already declares (default: the
    collectors' ``metrics`` and the agent's self-metrics), for dynamic collectors.
    """
    errors: list[PluginError] = []
    if declared is None:
        declared = [n for spec in _all_self_specs() for n in spec.sample_names()] + [
            n for c in classes.values() for m in c.metrics for n in m.sample_names()
        ]
    declared_set = frozenset(declared)
    runners: list[CollectorRunner] = []
    state_dir = cfg.resolved_state_dir()
    tags = cfg.resolved_tags()
    tenancy = None
    if cfg.tenant_rules:
        from hostmond.agent.tenancy import Tenancy

        tenancy = Tenancy(cfg.tenant_rules, cfg.tenant_id)
    only_set = set(only) if only is not None else None
    for name in cfg.collectors:
        if name not in classes:
            errors.append(PluginError(f"collectors.{name}", f"{cfg.source}: no collector named {name!r} is installed; section ignored"))
    for name, cls in sorted(classes.items()):
        try:
            ccfg = config_mod.collector_config(cfg, name, cls.config_class)
        except ConfigError as e:
            errors.append(PluginError(f"collectors.{name}", str(e)))
            continue
        default = cls.default_enabled and not cfg.runtime.disable_default_collectors
        enabled = default if ccfg.enabled is None else ccfg.enabled
        if only_set is not None:
            enabled = name in only_set
        if not enabled:
            continue
        state_path = os.path.join(state_dir, "collectors", f"{name}.json") if persist_state else None
        ctx = CollectorContext(
            proc_root=cfg.paths.proc_root,
            sys_root=cfg.paths.sys_root,
            rootfs=cfg.paths.rootfs,
            state=StateStore(state_path),
            state_dir=state_dir if persist_state else None,
            tags=dict(tags),
            tenancy=tenancy,
            declared_metrics=declared_set,
            logger=logging.getLogger(f"hostmon.collector.{name}"),
        )
        try:
            inst = cls(ccfg, ctx)
        except Exception as e:  # noqa: BLE001 - a broken plugin is skipped
            errors.append(PluginError(f"collectors.{name}", f"constructor failed: {e!r}"))
            continue
        interval = ccfg.interval or cfg.runtime.interval
        timeout = ccfg.timeout or cfg.runtime.timeout
        runners.append(CollectorRunner(cls, inst, interval, timeout))
    return runners, errors


class _EventSink:
    """A consumer that keeps the events of each collection (``collect_once``)."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events

    def submit(self, col: Collection) -> None:
        self.events.extend(col.events)


class Agent:
    """The running daemon."""

    def __init__(
        self,
        cfg: config_mod.Config,
        config_path: str | None = None,
        consumers: list[Consumer] | None = None,
        classes: dict[str, type[Collector]] | None = None,
        plugin_errors: list[PluginError] | None = None,
        environ: dict[str, str] | None = None,
        overrides: config_mod.Overrides | None = None,
    ) -> None:
        self.cfg = cfg
        self.environ = environ  # environment used for reloads
        self.overrides = overrides  # command-line flags, applied again on reload
        self.config_path = config_path
        self.consumers: list[Consumer] = list(consumers or [])
        if classes is None:
            classes, plugin_errors = discover()
        self.classes = classes
        self.discover_errors = list(plugin_errors or [])
        self.plugin_errors: list[PluginError] = []
        self.store = MetricStore({s.name: s for _, s in selfmetrics.declared()})
        self.store.renderer.set_hidden_labels(exposition_hidden_labels(cfg))
        self.collected_text = b""  # hostmon collect --once: see collect_once
        for cls in classes.values():
            self.store.add_specs(cls.metrics)
        self.runners: list[CollectorRunner] = []
        self.tasks: list[asyncio.Task[None]] = []  # one loop per interval (group of collectors)
        self.groups: list[list[CollectorRunner]] = []
        self._gen = 0  # bumped at each stop: a batch of an older generation is ignored
        self._batches: set[concurrent.futures.Future[Any]] = set()
        self._static_names: tuple[tuple[int, int], frozenset[str]] = ((-1, -1), frozenset())  # see _accept_families
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.server: MetricsServer | None = None
        self.tags = cfg.resolved_tags()
        self.reloads = {"success": 0, "failure": 0}
        self.proc = ProcessStats()
        self.ready = False
        self.ready_event = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.log_once = LogOnce(log)
        self.notifier: Any = None
        self.started_at = time.time()
        self._self_task: asyncio.Task[None] | None = None
        # Set while the collector loops are being stopped: each loop also checks it, because Python
        # 3.11's wait_for loses a cancellation that lands as the awaited collection completes
        # (gh-86296, fixed in 3.12); without the check that loop ran on and stop waited forever.
        self._halting = False
        self._stall_end = float("-inf")  # loop time the last stall noticed ended
        self.stalls = 0
        self._extra_tasks: list[asyncio.Task[Any]] = []
        self.store.add_provider(self._self_samples)
        self.store.add_provider(self._runner_samples, self._runner_text)
        self.store.add_provider(self._server_samples)
        # Agent._runner_text: "family collector" -> the series' "name{labels} ", for the labels below
        self._runner_prefixes: dict[str, str] = {}
        self._runner_prefix_key: tuple[Any, ...] = ()

    # -- self-metrics --------------------------------------------------------
    def _server_samples(self) -> list[Sample]:
        if self.server is None:
            return []
        out = self.server.http.self_metrics("agent")
        if self.server.security is not None:
            out.extend(self.server.security.self_metrics())
        for s in out:
            s.labels.update(self.tags)
        return out

    def _self_samples(self) -> list[Sample]:
        out = [
            Sample("hostmon_build_info", GAUGE, 1, {"version": __version__, "python": platform.python_version()}),
            Sample("hostmon_plugin_load_errors", GAUGE, len(self.plugin_errors)),
            Sample("hostmon_start_time_seconds", GAUGE, self.started_at),
            Sample("hostmon_time_seconds", GAUGE, time.time()),
            Sample("hostmon_ready", GAUGE, 1 if self.ready else 0),
        ]
        for result, n in self.reloads.items():
            out.append(Sample("hostmon_config_reloads_total", COUNTER, n, {"result": result}))
        for r in self.runners:
            if r.partial and not r.unavailable:
                out.extend(r.partial_samples())
        out.extend(self.proc.samples)
        for c in self.consumers:
            sm = getattr(c, "self_metrics", None)
            if sm is not None:
                out.extend(sm())
        for s in out:
            if "tenant_id" not in s.labels:
                s.labels.update(self.tags)
        return out

    def _runner_samples(self) -> list[Sample]:
        """RUNNER_FAMILIES of every collector with data here, as samples (``hostmon collect``, tests)."""
        out: list[Sample] = []
        for r in self.runners:
            if not r.unavailable:
                out.extend(r.self_samples())
        for s in out:
            if "tenant_id" not in s.labels:
                s.labels.update(self.tags)
        return out

    def _runner_text(self, renderer: Renderer, openmetrics: bool) -> str:
        """The exposition text of ``_runner_samples()``, made straight from the runners' counters.

        About 230 series on a default host, rendered on every scrape: building them as samples
        first, then grouping and formatting them, was a quarter of a scrape's rendering. The
        result is the same text, byte for byte (tests/agent/test_runtime.py); each series'
        ``name{labels} `` is made once and kept until the tags or the hidden labels change.
        """
        runners = [r for r in self.runners if not r.unavailable]
        if not runners:
            return ""
        tags = self.tags
        key = (tuple(tags.items()), renderer.hidden_labels)
        if key != self._runner_prefix_key:
            self._runner_prefixes = {}
            self._runner_prefix_key = key
        prefixes = self._runner_prefixes
        out: list[str] = []
        ap = out.append
        for name, typ, attr in RUNNER_FAMILIES:
            ap(renderer.family_header(name, typ, openmetrics))
            for r in runners:
                pkey = name + " " + r.name
                p = prefixes.get(pkey)
                if p is None:
                    labels = {"collector": r.name}
                    labels.update(tags)
                    p = prefixes[pkey] = name + renderer.label_text(labels) + " "
                ap(p + fmt_value(getattr(r, attr)) + "\n")
        return "".join(out)

    # -- collectors ----------------------------------------------------------
    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        assert self.executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    async def _start_runner(self, r: CollectorRunner) -> None:
        assert self.executor is not None
        fut = self.executor.submit(r.c.start)
        try:
            async with asyncio.timeout(r.timeout):  # not wait_for: see hostmond.core.aio
                await asyncio.wrap_future(fut)
        except CollectorUnavailable as e:
            r.unavailable = True
            r.unavailable_reason = str(e)
            log.info("collector has nothing to collect here", extra={"collector": r.name, "reason": str(e)})
            return
        except asyncio.TimeoutError:
            r.errors += 1
            r.pending = fut
            self.log_once.fail(r.name, "collector start timed out; will retry", collector=r.name)
            return  # the loop retries once the start finishes
        except Exception as e:  # noqa: BLE001
            r.errors += 1
            self.log_once.fail(r.name, f"collector start failed: {e!r}", collector=r.name)
            return
        r.started = True

    async def _ensure_started(self, r: CollectorRunner) -> bool:
        """Start ``r`` if it is not yet; False (and accounted) while it cannot collect."""
        if r.started:
            return True
        if r.pending is not None and not r.pending.done():  # a start still running past its timeout
            r.overruns += 1
            return False
        r.pending = None
        await self._start_runner(r)
        if not r.started:  # unavailable here, or failed: retried next tick
            r.success = 0
            r.done_first = True
            self._check_ready()
        return r.started

    async def run_once(self, r: CollectorRunner) -> None:
        """One collection of one collector on its own (``collect --once``): thread, timeout, accounting, hand-off."""
        assert self.executor is not None
        if r.in_flight:
            r.overruns += 1
            return
        if not await self._ensure_started(r):
            return
        r.runs += 1
        t0 = time.perf_counter()
        if r.cls.inline:  # a few small procfs reads: a thread round trip would cost more than the work
            try:
                items: list[Sample | Event] | None = _collect_list(r.c)
            except Exception as e:  # noqa: BLE001 - isolation: one collector's bug stays its own
                self._finish(r, None, e, time.perf_counter() - t0)
            else:
                self._finish(r, items, None, time.perf_counter() - t0)
            return
        r.in_flight = True
        fut = self.executor.submit(_collect_list, r.c)
        try:
            async with asyncio.timeout(r.timeout) as deadline:
                items = await asyncio.shield(asyncio.wrap_future(fut))
        except TimeoutError as e:
            if not deadline.expired():  # the collector itself raised TimeoutError: its error, not a timeout
                r.in_flight = False
                self._finish(r, None, e, time.perf_counter() - t0)
                return
            self._timed_out(r, time.perf_counter() - t0)
            fut.add_done_callback(lambda _f: setattr(r, "in_flight", False))
            return
        except Exception as e:  # noqa: BLE001
            r.in_flight = False
            self._finish(r, None, e, time.perf_counter() - t0)
            return
        r.in_flight = False
        self._finish(r, items, None, time.perf_counter() - t0)

    def _timed_out(self, r: CollectorRunner, duration: float) -> None:
        r.timeouts += 1
        r.success = 0
        r.timed_out = True
        r.duration = duration
        self.log_once.fail(r.name, "collection timed out; skipping ticks until it returns", collector=r.name, timeout=r.timeout)
        r.done_first = True
        self._check_ready()

    def _finish(self, r: CollectorRunner, items: list[Sample | Event] | None, err: BaseException | None, duration: float) -> None:
        """Account one finished collection and hand its output on (on the loop)."""
        r.duration = duration
        if isinstance(err, CollectorUnavailable):
            r.unavailable = True
            r.unavailable_reason = str(err)
            log.info("collector has nothing to collect here", extra={"collector": r.name, "reason": str(err)})
            self.store.remove(r.name)
        elif err is not None:
            r.errors += 1
            r.success = 0
            self.log_once.fail(r.name, f"collection failed: {err!r}", collector=r.name)
        else:
            r.success = 1
            r.last_success = time.time()
            self.log_once.ok(r.name, "collector recovered", collector=r.name)
            samples, events = apply_tags(items or (), self.tags)
            families = self._accept_families(r, samples) if r.cls.dynamic_families else None
            r.n_samples = len(samples)
            self.store.update(r.name, samples, families)
            if self.consumers and (samples or events):
                col = Collection(r.name, time.time(), samples, events)
                for c in self.consumers:
                    try:
                        c.submit(col)
                    except Exception:  # noqa: BLE001
                        log.exception("consumer failed to take a collection", extra={"collector": r.name})
        for reason, n in r.c.take_partial_errors().items():
            r.partial[reason] = r.partial.get(reason, 0) + n
        r.done_first = True
        self._check_ready()

    # -- batches: the due collectors of one tick, in one worker thread --------------------
    async def _tick(self, group: list[CollectorRunner]) -> None:
        unstarted = [r for r in group if not (r.started or r.unavailable or r.in_flight)]
        if unstarted:  # at the first tick (or after a failed start): in parallel, each under its timeout
            started = await asyncio.gather(*(self._ensure_started(r) for r in unstarted))
            if self._halting:
                return
            failed = {id(r) for r, ok in zip(unstarted, started) if not ok}
        else:
            failed = set()
        due: list[CollectorRunner] = []
        for r in group:
            if r.unavailable or id(r) in failed:
                continue
            if r.in_flight:
                r.overruns += 1
                continue
            due.append(r)
        batch: list[CollectorRunner] = []
        for r in due:
            r.runs += 1
            if r.cls.inline:  # on the loop: a few small procfs reads, no thread needed
                t0 = time.perf_counter()
                try:
                    items = _collect_list(r.c)
                except Exception as e:  # noqa: BLE001 - isolation: one collector's bug stays its own
                    self._finish(r, None, e, time.perf_counter() - t0)
                else:
                    self._finish(r, items, None, time.perf_counter() - t0)
            else:
                batch.append(r)
        if batch:
            self._submit_batch(batch)

    def _submit_batch(self, runners: list[CollectorRunner]) -> None:
        assert self.executor is not None
        batch = _Batch(runners, self._gen)
        for r in runners:
            r.in_flight = True
        fut = self.executor.submit(batch.run)
        self._batches.add(fut)
        loop = asyncio.get_running_loop()
        afut = asyncio.wrap_future(fut)
        afut.add_done_callback(lambda _f: self._batch_done(batch, fut))
        batch.timer = loop.call_later(self._detach_after(runners[0]), self._watch_batch, batch)

    @staticmethod
    def _detach_after(r: CollectorRunner) -> float:
        return min(r.timeout, r.interval / 2)

    def _watch_batch(self, batch: _Batch) -> None:
        """Detach a collection that runs long, so the ones after it go on in another thread."""
        if batch.gen != self._gen or self._halting:
            return
        cur = batch.current()
        loop = asyncio.get_running_loop()
        if cur is None:
            if not batch.finished:  # not started yet (all worker threads busy): look again soon
                batch.timer = loop.call_later(0.05, self._watch_batch, batch)
            return
        i, started = cur
        r = batch.runners[i]
        elapsed = time.monotonic() - started
        limit = self._detach_after(r)
        if elapsed < limit:
            batch.timer = loop.call_later(limit - elapsed, self._watch_batch, batch)
            return
        rest = batch.detach()
        self._take_results(batch)  # those that ended before the slow one are not held back by it
        if rest:
            log.debug("slow collection detached from its batch", extra={"collector": r.name, "seconds": round(elapsed, 3)})
            self._submit_batch(rest)
        loop.call_later(max(0.0, started + r.timeout - time.monotonic()), self._check_timeout, batch, i, started)

    def _check_timeout(self, batch: _Batch, i: int, started: float) -> None:
        if batch.gen != self._gen or self._halting:
            return
        if batch.current() == (i, started):  # still in that same collection
            self._timed_out(batch.runners[i], time.monotonic() - started)

    def _take_results(self, batch: _Batch) -> None:
        """Hand on the collections of ``batch`` that have ended and were not handed on yet."""
        current = batch.gen == self._gen and not self._halting
        results = batch.results[batch.taken :]
        batch.taken += len(results)
        for r, items, err, duration in results:
            r.in_flight = False
            if r.timed_out:  # already counted as a timeout: its late result is dropped
                r.timed_out = False
                continue
            if current:
                self._finish(r, items, err, duration)

    def _batch_done(self, batch: _Batch, fut: concurrent.futures.Future[Any]) -> None:
        self._batches.discard(fut)
        if batch.timer is not None:  # no wake-up at half the interval for a batch long done
            batch.timer.cancel()
            batch.timer = None
        self._take_results(batch)
        if fut.exception() is not None:  # the worker itself failed (not a collector): never seen in practice
            log.error("collection batch failed", extra={"error": repr(fut.exception())})
        for r in batch.runners[len(batch.results) : batch.cut]:  # never reached by the worker
            r.in_flight = False
            r.timed_out = False

    def _accept_families(self, r: CollectorRunner, samples: list[Sample]) -> dict[str, MetricSpec]:
        """A dynamic collector's run-time families, less those that clash (their samples removed in place)."""
        families = r.c.take_families()
        static = self.store.renderer.specs
        self_specs = _all_self_specs()
        key = (len(static), len(self_specs))  # families are only ever added: their counts say when to redo it
        if self._static_names[0] != key:
            names = {n for spec in static.values() for n in spec.sample_names()}
            names.update(n for spec in self_specs for n in spec.sample_names())
            self._static_names = (key, frozenset(names))
        static_names = self._static_names[1]
        refused: set[str] = set()
        for name, spec in families.items():
            owner = self.store.family_owner(name)
            if any(sn in static_names for sn in spec.sample_names()) or (owner is not None and owner != r.name):
                refused.update(spec.sample_names())
        if refused:
            for name in sorted(refused & set(families)):
                del families[name]
            kept = [s for s in samples if s.name not in refused]
            r.c.partial_error("family_clash", len(samples) - len(kept))
            samples[:] = kept
        known = {sn for spec in families.values() for sn in spec.sample_names()}
        undescribed = [s for s in samples if s.name not in known and s.name not in static_names]
        if undescribed:
            r.c.partial_error("family_undescribed", len(undescribed))
            samples[:] = [s for s in samples if s.name in known or s.name in static_names]
        return families

    def _check_ready(self) -> None:
        if not self.ready and all(r.done_first for r in self.runners):
            self.ready = True
            _settle_gc()
            self.ready_event.set()
            self.proc.refresh()
            self.store.update("_self", [])
            log.info("first collection done", extra={"collectors": [r.name for r in self.runners if not r.unavailable]})
            if self.notifier is not None:
                self.notifier.ready()
                self.notifier.status(self.status_line())

    def status_line(self) -> str:
        active = [r for r in self.runners if not r.unavailable]
        failing = [r.name for r in active if not r.success]
        s = f"{len(active)} collectors, {len(failing)} failing"
        if failing:
            s += " (" + ", ".join(failing[:5]) + ")"
        return s

    async def _group_loop(self, group: list[CollectorRunner], interval: float) -> None:
        """Tick the group every ``interval``. A tick only starts a batch, so the loop is late only when
        a collector's start was slow (its periods are overruns) or when the whole process stood still
        (SIGSTOP, a frozen cgroup, a blocked event loop: one missed period, however long it lasted).
        No heartbeat task is needed to tell the two apart: the sleep itself wakes late in a stall."""
        loop = asyncio.get_running_loop()
        jitter = self.cfg.runtime.jitter
        next_t = loop.time()
        stalled = False
        while not self._halting:
            await self._tick(group)
            if self._halting or all(r.unavailable for r in group):
                return
            next_t += interval * (1 + random.uniform(-jitter, jitter))
            now = loop.time()
            if now > next_t:
                missed = int((now - next_t) // interval) + 1
                for r in group:
                    if stalled:
                        r.missed_periods += 1
                    else:
                        r.overruns += missed
                next_t += missed * interval
            await asyncio.sleep(next_t - now)
            woke = loop.time()
            stalled = woke - next_t > STALL_GAP
            if stalled:
                self._note_stall(next_t, woke)

    def _note_stall(self, due: float, woke: float) -> None:
        if due > self._stall_end:  # once per stall, whichever loop notices it first
            self.stalls += 1
            log.warning("the agent stood still (stopped, frozen or starved) and skipped collection periods; "
                        "counted once in hostmon_collector_missed_periods_total, not as overruns",
                        extra={"seconds": round(woke - due, 1)})
        self._stall_end = max(self._stall_end, woke)

    async def _self_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.runtime.interval)
            self.proc.refresh()
            self.store.update("_self", [])
            if self.notifier is not None:
                self.notifier.status(self.status_line())

    def healthy(self) -> bool:
        """Collector loops alive (used by the systemd watchdog)."""
        # a loop ends by itself only when none of its collectors has anything to collect here
        return all(not t.done() or all(r.unavailable for r in g) for g, t in zip(self.groups, self.tasks))

    async def start_collectors(self) -> None:
        declared = {n for spec in self.store.renderer.specs.values() for n in spec.sample_names()}
        declared.update(n for spec in _all_self_specs() for n in spec.sample_names())
        self.runners, errs = build_collectors(self.cfg, self.classes, declared=declared)
        self.plugin_errors = self.discover_errors + errs
        for e in self.plugin_errors:
            log.error("plugin skipped", extra={"where": e.where, "reason": e.reason})
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.runners) + 2, thread_name_prefix="collector")
        self._halting = False
        self.ready = False
        self.ready_event.clear()
        if not self.runners:
            self._check_ready()
        by_interval: dict[float, list[CollectorRunner]] = {}
        for r in self.runners:
            by_interval.setdefault(r.interval, []).append(r)
        self.groups = list(by_interval.values())
        self.tasks = [
            asyncio.create_task(self._group_loop(g, iv), name=f"collectors:{iv:g}s") for iv, g in by_interval.items()
        ]

    async def collect_once(self, only: list[str] | None = None) -> tuple[list[Sample], list[Event]]:
        """One collection by every enabled collector (or only those named), for ``hostmon collect --once``.

        Returns every sample the store holds afterwards (collectors and self-metrics) and the
        events the collectors emitted; state is not persisted. The text exposition of those
        samples is kept in ``collected_text``, rendered before the collectors stop so that
        run-time families (``Collector.family``) keep their HELP and TYPE.
        """
        self.runners, errs = build_collectors(self.cfg, self.classes, persist_state=False, only=only)
        self.plugin_errors = self.discover_errors + errs
        events: list[Event] = []
        sink = _EventSink(events)
        self.consumers.append(sink)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.runners) + 1, thread_name_prefix="collector")
        try:
            await asyncio.gather(*(self.run_once(r) for r in self.runners))
            self.proc.refresh()
            samples = self.store.all_samples()
            self.collected_text = self.store.renderer.render(samples)
        finally:
            self.consumers.remove(sink)
            await self.stop_collectors()
        return samples, events

    async def stop_collectors(self, budget: float = 2.0) -> None:
        self._halting = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            # bounded: a loop that missed its cancellation still ends at its next check of _halting
            _, late = await asyncio.wait(self.tasks, timeout=budget)
            if late:
                log.warning("collector loops did not end in time", extra={"loops": sorted(t.get_name() for t in late)})
        self.tasks = []
        self.groups = []
        if self._batches:  # collections running now: let them end (bounded) before stopping their collectors
            await asyncio.wait([asyncio.wrap_future(f) for f in list(self._batches)], timeout=max(0.0, deadline - loop.time()))
        self._gen += 1
        if self.executor is None:
            return
        futs = []
        for r in self.runners:
            if r.started and not r.in_flight and (r.pending is None or r.pending.done()):
                futs.append(loop.run_in_executor(self.executor, r.c.stop))
        if futs:
            done, pending = await asyncio.wait(futs, timeout=budget)
            for f in done:
                if f.exception() is not None:
                    log.error("collector stop failed", extra={"error": repr(f.exception())})
            if pending:
                log.warning("collectors did not stop in time", extra={"pending": len(pending)})
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = None
        for r in self.runners:
            self.store.remove(r.name)

    # -- life cycle ----------------------------------------------------------
    async def reload(self) -> bool:
        """SIGHUP: load the config again; a bad one is rejected and the old one keeps running."""
        try:
            new = config_mod.load(self.config_path, self.environ, self.overrides)
            _, errs = build_collectors(new, self.classes, persist_state=False)
            bad = [e for e in errs if "no collector named" not in e.reason]
            if bad:
                raise ConfigError(new.source, bad[0].where, bad[0].reason)
        except ConfigError as e:
            self.reloads["failure"] += 1
            log.error("config reload rejected; the running config stays in force", extra={"error": str(e)})
            self.emit_config_change({"result": "rejected", "file": self.config_path or "", "key": e.key, "changed": [], "changed_count": 0})
            return False
        changed = config_mod.changed_keys(self.cfg, new)
        old_listen = (self.cfg.http.listen, self.cfg.http.telemetry_path)
        if self.notifier is not None:
            self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        await self.stop_collectors()
        self.cfg = new
        self.tags = new.resolved_tags()
        self.store.renderer.set_hidden_labels(exposition_hidden_labels(new))
        logging.getLogger().setLevel(new.log_level.upper())
        await self.start_collectors()
        if (new.http.listen, new.http.telemetry_path) != old_listen and self.server is not None:
            await self.server.stop()
            await self._start_server()
        self.reloads["success"] += 1
        log.info("config reloaded", extra={"file": self.config_path, "changed": changed[: config_mod.MAX_CHANGED_KEYS]})  # READY=1 follows the first collection
        self.emit_config_change({
            "result": "applied",
            "file": self.config_path or "",
            "changed": changed[: config_mod.MAX_CHANGED_KEYS],
            "changed_count": len(changed),
        })
        return True

    def emit_config_change(self, fields: dict[str, Any]) -> None:
        """A ``config_change`` event (names of the changed keys, never values) handed to the consumers (shipped)."""
        now = time.time()
        _, events = apply_tags([Event("config_change", now, fields)], self.tags)
        col = Collection("_config", now, [], events)
        for c in self.consumers:
            try:
                c.submit(col)
            except Exception:  # noqa: BLE001
                log.exception("consumer failed to take the config_change event")

    async def _start_server(self) -> None:
        host, port = config_mod.parse_listen(self.cfg.http.listen)
        self.server = MetricsServer(self.store, host, port, lambda: self.ready, self.cfg.web, self.cfg.http.telemetry_path)
        await self.server.start()

    def add_task(self, coro: Any, name: str) -> None:
        self._extra_tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        self.proc.refresh()
        await self._start_server()
        for c in self.consumers:
            start = getattr(c, "start", None)
            if start is not None:
                await start()
        await self.start_collectors()
        self._self_task = asyncio.create_task(self._self_loop(), name="self-metrics")

    async def stop(self) -> None:
        """Stop within the 5 s budget: collectors (2 s), consumers flush (2 s), server."""
        if self.notifier is not None:
            self.notifier.stopping()
        for t in [self._self_task, *self._extra_tasks]:
            if t is not None:
                t.cancel()
        await self.stop_collectors(budget=2.0)
        for c in self.consumers:
            stop = getattr(c, "stop", None)
            if stop is not None:
                try:
                    async with asyncio.timeout(2.0):
                        await stop()
                except Exception:  # noqa: BLE001
                    log.exception("consumer did not stop cleanly")
        if self.server is not None:
            await self.server.stop()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.add_task(self.reload(), "reload"))
        await self.start()
        await self.stop_event.wait()
        log.info("stopping")
        await self.stop()
        log.info("stopped")


def hung_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
