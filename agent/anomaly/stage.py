"""The agent's anomaly stage: a consumer of collections that scores the watched series.

It sits beside the shipper in ``Agent.consumers``. For every collection the
runtime hands over, it picks the samples the watch rules select (see
:mod:`hostmond.agent.anomaly.config`), sums them per series (the rule's ``by``
labels), turns counters into per-second rates, and feeds each series' value to
its own :class:`~hostmond.agent.anomaly.detector.Detector`. Then it

* publishes ``hostmon_anomaly_score{metric,series}`` and the host-level
  ``hostmon_anomaly_rate`` on /metrics and hands them, with any ``anomaly``
  events, to the other consumers (the shipper) as a collection named
  ``anomaly``;
* raises an ``anomaly`` event when a series' detector alarms (score at or above
  the threshold, at most once per ``hold`` samples), carrying the series, the
  observed value, the range the model expected, the score and when the
  excursion started; the event is also logged;
* saves the models to ``STATE_DIR/anomaly/models.json`` every
  ``save_interval`` seconds and at stop, and restores them at start, so the
  learning survives restarts.

``submit`` runs on the event loop and only does arithmetic (a few µs per
series); saving runs in a worker thread. Series beyond ``max_series`` are not
modelled: the samples are counted in ``hostmon_anomaly_series_dropped_total``.
Changes to ``[anomaly]`` take effect at the next start (a reload keeps the
running stage).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from hostmond.agent.anomaly.config import AnomalyConfig, WatchRule
from hostmond.agent.anomaly.detector import Detector, DetectorParams
from hostmond.agent.handoff import Collection, Consumer

from hostmond.api import StateStore
from hostmond.core import selfmetrics
from hostmond.core.model import COUNTER, GAUGE, Event, MetricSpec, Sample

log = logging.getLogger("hostmon.anomaly")

SOURCE = "anomaly"  # the collection name of the stage's own output
STATE_VERSION = 1

SELF_SPECS = selfmetrics.declare(
    "agent.anomaly.stage",
    MetricSpec(
        "hostmon_anomaly_score",
        GAUGE,
        "Anomaly score of a watched series in [0, 1]: 0.5 is as surprising as the most surprising moment of the recent past.",
        ("metric", "series"),
    ),
    MetricSpec("hostmon_anomaly_rate", GAUGE, "Fraction of the watched series (past anomaly.learn_samples) that raised an anomaly within their hold window."),
    MetricSpec("hostmon_anomaly_events_total", COUNTER, "Anomaly events raised."),
    MetricSpec("hostmon_anomaly_series_watched", GAUGE, "Series the anomaly detector models."),
    MetricSpec("hostmon_anomaly_series_limit", GAUGE, "Most series the anomaly detector models (anomaly.max_series)."),
    MetricSpec("hostmon_anomaly_series_dropped_total", COUNTER, "Samples of series not modelled because anomaly.max_series was reached."),
    MetricSpec("hostmon_anomaly_model_bytes", GAUGE, "Memory held by the anomaly models (estimate).", (), "bytes"),
    MetricSpec("hostmon_anomaly_detector_cpu_seconds_total", COUNTER, "CPU time spent scoring series for anomalies.", (), "seconds"),
    MetricSpec("hostmon_anomaly_state_saves_total", COUNTER, "Saves of the anomaly models to the state directory, by result.", ("result",)),
)


def _deep_size(o: Any, seen: set[int] | None = None) -> int:
    """sys.getsizeof over an object graph of slots objects, lists, tuples and numbers."""
    seen = set() if seen is None else seen
    if id(o) in seen:
        return 0
    seen.add(id(o))
    n = sys.getsizeof(o)
    if isinstance(o, (list, tuple)):
        n += sum(_deep_size(v, seen) for v in o)
    for k in getattr(type(o), "__slots__", ()):
        v = getattr(o, k, None)
        if not isinstance(v, DetectorParams):  # shared by every model
            n += _deep_size(v, seen)
    return n


def _model_size(params: DetectorParams) -> int:
    """Bytes of one model once its statistics and hour profile hold distinct numbers."""
    d = Detector(params)
    for i in range(48):
        d.update(float(i % 7), i * 3600.0)
    return _deep_size(d)


class _Series:
    __slots__ = (
        "counter", "det", "key", "labels", "metric", "min_change", "min_ratio", "prev", "prev_n", "prev_t", "score", "series",
        "since",
    )

    def __init__(self, metric: str, labels: dict[str, str], counter: bool, det: Detector, rule: WatchRule | None = None) -> None:
        self.metric = metric
        self.labels = labels  # the kept (by) labels
        self.series = ",".join(f"{k}={v}" for k, v in labels.items())
        self.key = f"{metric}|{self.series}"
        self.counter = counter
        self.det = det
        self.prev: float | None = None
        self.prev_t = 0.0
        self.prev_n = 0
        self.score = 0.0
        self.since: float | None = None  # when the current excursion (score >= threshold / 2) began
        self.min_change = rule.min_change if rule is not None else 0.0
        self.min_ratio = rule.min_change_ratio if rule is not None else 0.0


def _floored(ser: _Series, det: Detector, v: float, score: float, thr: float) -> float:
    """``score`` scaled down for a value within the series' floor of what the model expected.

    The floor (the larger of ``min_change`` and ``min_change_ratio`` times the expected level) says
    how small a move is not worth an event, however unusual it is for the series: a quiet host's
    MemAvailable moving by 1 MB is new to the model and nothing to an operator. The score falls in
    proportion to the distance (half the floor: half the score), and an alarm it undoes holds nothing.
    """
    lo, hi = det.expected
    mid = (lo + hi) / 2
    floor = max(ser.min_change, ser.min_ratio * abs(mid))
    d = abs(v - mid)
    if d >= floor:
        return score
    score *= d / floor
    if det.alarm and score < thr:  # not an alarm after all: no hold, or it could swallow the real one
        det.alarm = False
        det.quiet = 0
    return score


class AnomalyStage:
    """A :class:`~hostmond.agent.handoff.Consumer` that scores watched series and raises ``anomaly`` events."""

    def __init__(self, cfg: AnomalyConfig, tags: dict[str, str], state_path: str | None) -> None:
        self.cfg = cfg
        self.params = cfg.params()
        self.tags = dict(tags)
        self.store = StateStore(state_path)
        self.rules: dict[str, list[WatchRule]] = {}
        for r in cfg.rules():
            self.rules.setdefault(r.metric, []).append(r)
        self.series: dict[str, _Series] = {}
        self.saved: dict[str, Any] = {}
        self.dropped = 0
        self.events = 0
        self.cpu = 0.0
        self.saves = {"success": 0, "failure": 0}
        self.restore_errors = 0
        self.last_save = time.monotonic()
        self._saving: asyncio.Future[Any] | None = None
        self._model_bytes = _model_size(self.params)
        self.publish: Callable[[list[Sample]], None] | None = None  # /metrics: set by attach()
        self.downstream: Callable[[], Iterable[Consumer]] = list
        self._events: list[Event] = []  # raised since the last flush
        self._out_time = 0.0
        self._flush_due = False
        self._select_cache: dict[tuple[Any, ...], list[tuple[str, dict[str, str], WatchRule]]] = {}

    def attach(self, agent: Any) -> None:
        """Wire the stage into a running agent: its metric store and its other consumers."""
        agent.store.add_specs(SELF_SPECS)
        store = agent.store
        self.publish = lambda samples: store.update(SOURCE, samples)
        self.downstream = lambda: [c for c in agent.consumers if c is not self]

    # -- the consumer protocol ------------------------------------------------

    async def start(self) -> None:
        data = await asyncio.get_running_loop().run_in_executor(None, self.store.load)
        if data.get("v") == STATE_VERSION and isinstance(data.get("series"), dict):
            self.saved = data["series"]
            log.info("anomaly models restored", extra={"series": len(self.saved), "path": self.store.path})
        elif data:
            log.warning("anomaly state has an unknown version; learning afresh", extra={"path": self.store.path})

    async def stop(self) -> None:
        if self._saving is not None:
            await asyncio.wait([self._saving], timeout=2.0)
        await asyncio.get_running_loop().run_in_executor(None, self._save, self._snapshot())

    def submit(self, collection: Collection) -> None:
        if collection.collector == SOURCE:
            return
        c0 = time.thread_time()
        try:
            events = self._score(collection)
        finally:
            self.cpu += time.thread_time() - c0
        if events is None:
            return
        self._events.extend(events)
        self._out_time = collection.time
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the agent (tests, tools): publish now
            self.flush()
            return
        # The collections of one tick arrive together: publish the scores once, after all of them.
        self._flush_due = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Publish the scores (and hand on the events) of the collections scored since the last flush."""
        self._flush_due = False
        events, self._events = self._events, []
        samples = self.output_samples()
        if self.publish is not None:
            self.publish(samples)
        out = Collection(SOURCE, self._out_time, samples, events)
        for c in self.downstream():
            try:
                c.submit(out)
            except Exception:
                log.exception("consumer failed to take the anomaly collection")
        if time.monotonic() - self.last_save >= self.cfg.save_interval:
            self._save_soon()

    def self_metrics(self) -> list[Sample]:
        return [
            Sample("hostmon_anomaly_events_total", COUNTER, self.events),
            Sample("hostmon_anomaly_series_watched", GAUGE, len(self.series)),
            Sample("hostmon_anomaly_series_limit", GAUGE, self.cfg.max_series),
            Sample("hostmon_anomaly_series_dropped_total", COUNTER, self.dropped),
            Sample("hostmon_anomaly_model_bytes", GAUGE, len(self.series) * self._model_bytes),
            Sample("hostmon_anomaly_detector_cpu_seconds_total", COUNTER, self.cpu),
            *(Sample("hostmon_anomaly_state_saves_total", COUNTER, n, {"result": r}) for r, n in self.saves.items()),
        ]

    # -- scoring -----------------------------------------------------------

    def _score(self, col: Collection) -> list[Event] | None:
        """Update every watched series in ``col``; None when it held none."""
        groups: dict[str, list[Any]] = {}
        cache = self._select_cache
        for s in col.samples:
            rules = self.rules.get(s.name)
            if not rules:
                continue
            ck = (s.name, *s.labels.items())
            selected = cache.get(ck)
            if selected is None:  # which watched series this one feeds: the same answer every cycle
                selected = []
                added = None
                for rule in rules:
                    if not rule.selects(s.labels):
                        continue
                    kept = {k: s.labels.get(k, "") for k in rule.by}
                    key = s.name + "|" + ",".join(f"{k}={v}" for k, v in kept.items())
                    if added == key:  # two rules giving the same series count the sample once
                        continue
                    added = key
                    selected.append((key, kept, rule))
                if len(cache) >= 8 * self.cfg.max_series + 1024:  # label churn: start over rather than grow
                    cache.clear()
                cache[ck] = selected
            for key, kept, rule in selected:
                g = groups.get(key)
                if g is None:
                    counter = rule.rate == "always" or (rule.rate == "auto" and s.type == COUNTER)
                    groups[key] = [s.value, 1, s.name, kept, counter, rule]
                else:
                    g[0] += s.value
                    g[1] += 1
        if not groups:
            return None
        t = col.time
        events: list[Event] = []
        thr = self.params.threshold
        for key, (x, count, metric, kept, counter, rule) in groups.items():
            ser = self.series.get(key)
            if ser is None:
                if len(self.series) >= self.cfg.max_series:
                    self.dropped += 1
                    continue
                ser = self.series[key] = _Series(metric, kept, counter, self._restore(key), rule)
            if ser.counter:
                prev, prev_t = ser.prev, ser.prev_t
                ser.prev, ser.prev_t, n_prev = x, t, ser.prev_n
                ser.prev_n = count
                # a reset, a changed set of summed series or a clock step: start the rate afresh
                if prev is None or x < prev or count != n_prev or t <= prev_t:
                    continue
                v = (x - prev) / (t - prev_t)
            else:
                v = x
            det = ser.det
            score = det.update(v, t)
            if ser.min_change or ser.min_ratio:
                score = _floored(ser, det, v, score, thr)
            learning = det.n <= self.cfg.learn_samples
            ser.score = 0.0 if learning else score  # no alarm on /metrics or alerts before events may be raised
            if learning:
                # an alarm that raised no event holds nothing: else the first real event after learning
                # could fall in the hold of an early, unraised one (a young model alarms easily)
                det.quiet = 0
            if score >= thr / 2:
                if ser.since is None:
                    ser.since = t
            elif det.quiet == 0:
                ser.since = None
            if det.alarm and not learning:
                events.append(self._event(ser, v, t))
        return events

    def _event(self, ser: _Series, value: float, t: float) -> Event:
        lo, hi = ser.det.expected_range()
        self.events += 1
        fields = {
            "series": ser.key.replace("|", "{", 1) + "}" if ser.series else ser.metric,
            "metric": ser.metric,
            "labels": dict(ser.labels),
            "value": value,
            "unit": "per_second" if ser.counter else "value",
            "expected_low": lo,
            "expected_high": hi,
            "score": ser.score,
            "started": ser.since if ser.since is not None else t,
        }
        log.warning("anomaly", extra=fields)
        return Event("anomaly", t, fields, dict(self.tags))

    def output_samples(self) -> list[Sample]:
        out = []
        active = learned = 0
        for ser in self.series.values():
            labels = {"metric": ser.metric, "series": ser.series, **self.tags}
            out.append(Sample("hostmon_anomaly_score", GAUGE, ser.score, labels))
            if ser.det.n > self.cfg.learn_samples:
                learned += 1
                active += ser.det.alarm or ser.det.quiet > 0
        out.append(Sample("hostmon_anomaly_rate", GAUGE, active / learned if learned else 0.0, dict(self.tags)))
        return out

    # -- state ---------------------------------------------------------------

    def _restore(self, key: str) -> Detector:
        st = self.saved.pop(key, None)
        if st is not None:
            try:
                return Detector.from_state(st, self.params)
            except ValueError as e:
                self.restore_errors += 1
                log.warning("anomaly model not restored; learning afresh", extra={"series": key, "error": str(e)})
        return Detector(self.params)

    def _snapshot(self) -> dict[str, Any]:
        # models of series not seen since the start are kept, within max_series
        room = max(0, self.cfg.max_series - len(self.series))
        series = {k: v for k, v in list(self.saved.items())[:room]}
        for key, ser in self.series.items():
            series[key] = ser.det.to_state()
        return {"v": STATE_VERSION, "series": series}

    def _save(self, snapshot: dict[str, Any]) -> None:
        try:
            self.store.save(snapshot)
        except OSError as e:
            self.saves["failure"] += 1
            log.error("anomaly models not saved", extra={"path": self.store.path, "error": str(e)})
        else:
            self.saves["success"] += 1

    def _save_soon(self) -> None:
        self.last_save = time.monotonic()
        if self._saving is not None and not self._saving.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save(self._snapshot())
            return
        self._saving = loop.run_in_executor(None, self._save, self._snapshot())


def make_stage(cfg: Any, agent: Any) -> AnomalyStage | None:
    """The stage for ``hostmon run`` (None when ``anomaly.enabled`` is false), attached to ``agent``."""
    ac: AnomalyConfig = cfg.anomaly
    if not ac.enabled:
        return None
    stage = AnomalyStage(ac, agent.tags, os.path.join(cfg.resolved_state_dir(), "anomaly", "models.json"))
    stage.attach(agent)
    return stage
