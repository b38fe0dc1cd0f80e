"""Test kit for collector authors, installed as a pytest plugin (entry point ``pytest11``).

Use the ``hostmon_collector`` fixture::

    def test_queue_depth(hostmon_collector, tmp_path):
        (tmp_path / "q").mkdir()
        out = hostmon_collector.run(QueueDepthCollector, {"spool_dir": str(tmp_path / "q")})
        out.assert_sample("example_queue_files", value=0, labels={"queue": "q"})
        out.assert_all_documented()
        out.assert_all_covered()

``run()`` validates the config section exactly as the agent does (a bad value
raises ``ConfigError`` naming the key), calls ``start()``, ``collect()`` (once
per cycle) and ``stop()``, and returns an :class:`Emitted` with what came out.
Failed assertions list the emitted metrics that look like the one asked for.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

import pytest

from hostmond.api import Collector, CollectorContext, Event, MetricSpec, Sample, StateStore
from hostmond.core.config import load_dataclass

AGENT_LABELS = frozenset({"tenant_id", "host"})


class Emitted:
    """What one or more collections emitted, with assertions."""

    def __init__(
        self,
        cls: type[Collector],
        samples: list[Sample],
        events: list[Event],
        partial_errors: dict[str, int],
        families: Mapping[str, MetricSpec] | None = None,
    ) -> None:
        self.cls = cls
        self.families = dict(families or {})  # run-time families of the last cycle (Collector.family)
        self.samples = samples
        self.events = events
        self.partial_errors = partial_errors
        self._asserted: set[str] = set()

    def find(self, name: str, labels: Mapping[str, str] | None = None) -> list[Sample]:
        out = [s for s in self.samples if s.name == name]
        if labels:
            out = [s for s in out if all(s.labels.get(k) == v for k, v in labels.items())]
        return out

    def _similar(self, name: str) -> str:
        names = sorted({s.name for s in self.samples})
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        if close:
            return "similar emitted metrics: " + ", ".join(close)
        return "emitted metrics: " + (", ".join(names[:20]) or "none")

    def assert_sample(
        self,
        name: str,
        value: float | None = None,
        labels: Mapping[str, str] | None = None,
        count: int | None = None,
        tolerance: float = 1e-9,
    ) -> list[Sample]:
        """Assert samples named ``name`` (with these labels, value and count) were emitted."""
        matches = self.find(name, labels)
        if value is not None:
            matches = [s for s in matches if math.isclose(float(s.value), float(value), rel_tol=tolerance, abs_tol=tolerance)]
        self._asserted.add(name)
        if count is None:
            if not matches:
                got = [(s.labels, s.value) for s in self.find(name)][:10]
                raise AssertionError(
                    f"no sample {name} with labels={dict(labels or {})} value={value}; "
                    f"samples of that name: {got or 'none'}; {self._similar(name)}"
                )
        elif len(matches) != count:
            raise AssertionError(f"expected {count} samples {name} labels={dict(labels or {})} value={value}, found {len(matches)}; {self._similar(name)}")
        return matches

    def assert_no_sample(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        found = self.find(name, labels)
        if found:
            raise AssertionError(f"expected no sample {name} {dict(labels or {})}, found {found[:5]}")

    def assert_event(self, kind: str, count: int | None = None, **fields: Any) -> list[Event]:
        matches = [e for e in self.events if e.kind == kind and all(e.fields.get(k) == v for k, v in fields.items())]
        if count is None and not matches or count is not None and len(matches) != count:
            kinds = sorted({e.kind for e in self.events})
            raise AssertionError(f"expected {count if count is not None else 'some'} events {kind} {fields}, found {len(matches)}; event kinds: {kinds}")
        return matches

    def assert_all_documented(self) -> None:
        """Every emitted metric is declared in the collector's ``metrics`` with a help text,
        its declared type, and only its declared labels."""
        specs = {m.name: m for m in self.cls.metrics}
        described = {sn for f in self.families.values() for sn in f.sample_names()}
        problems = []
        for s in self.samples:
            spec = specs.get(s.name)
            if spec is None and s.name in described:
                continue  # a run-time family, described by the collector in this run
            if spec is None:
                problems.append(f"{s.name}: not declared in {self.cls.__name__}.metrics")
                continue
            if not spec.help.strip():
                problems.append(f"{s.name}: declared without help")
            if s.type != spec.type:
                problems.append(f"{s.name}: emitted as {s.type}, declared {spec.type}")
            extra = set(s.labels) - set(spec.labels) - AGENT_LABELS
            if extra:
                problems.append(f"{s.name}: labels {sorted(extra)} not declared (declared: {list(spec.labels)})")
            if s.type == "counter" and not s.name.endswith("_total"):
                problems.append(f"{s.name}: counter names end in _total")
        if problems:
            raise AssertionError("undocumented metrics:\n  " + "\n  ".join(sorted(set(problems))))

    def assert_all_covered(self) -> None:
        """Every emitted metric name was asserted at least once."""
        missed = sorted({s.name for s in self.samples} - self._asserted)
        if missed:
            raise AssertionError(f"metrics emitted but never asserted: {missed}")


class CollectorHarness:
    """Runs a collector the way the agent does, without the agent."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path

    def context(
        self,
        *,
        proc_root: str = "/proc",
        sys_root: str = "/sys",
        rootfs: str = "/",
        state_dir: str | None = None,
        tags: Mapping[str, str] | None = None,
        tenancy: Any = None,
        name: str = "collector",
        declared_metrics: frozenset[str] = frozenset(),
    ) -> CollectorContext:
        state_dir = state_dir or os.fspath(self.tmp_path / "state")
        return CollectorContext(
            proc_root=proc_root,
            sys_root=sys_root,
            rootfs=rootfs,
            state=StateStore(os.path.join(state_dir, "collectors", f"{name}.json")),
            state_dir=state_dir,
            tags=dict(tags or {"tenant_id": "test", "host": "testhost"}),
            tenancy=tenancy,
            declared_metrics=declared_metrics,
        )

    def make(self, cls: type[Collector], config: Mapping[str, Any] | None = None, **ctx: Any) -> Collector:
        cfg = load_dataclass(dict(config or {}), cls.config_class, "<test>", f"collectors.{cls.name}")
        return cls(cfg, self.context(name=cls.name, **ctx))

    def run(self, cls: type[Collector], config: Mapping[str, Any] | None = None, cycles: int = 1, **ctx: Any) -> Emitted:
        c = self.make(cls, config, **ctx)
        return self.run_instance(c, cycles)

    def run_instance(self, c: Collector, cycles: int = 1) -> Emitted:
        samples: list[Sample] = []
        events: list[Event] = []
        families: dict[str, MetricSpec] = {}
        c.start()
        try:
            for i in range(cycles):
                items = list(c.collect())
                families = c.take_families()
                if i == cycles - 1:
                    samples = [x for x in items if isinstance(x, Sample)]
                events.extend(x for x in items if isinstance(x, Event))
        finally:
            c.stop()
        return Emitted(type(c), samples, events, c.take_partial_errors(), families)


@pytest.fixture
def hostmon_collector(tmp_path: Any) -> CollectorHarness:
    """Run a collector and assert on what it emitted (see ``hostmond.testing``)."""
    return CollectorHarness(tmp_path)
