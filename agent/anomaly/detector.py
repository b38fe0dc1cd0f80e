"""A streaming anomaly detector for one numeric series: constant memory, a few µs per sample.

The same class runs in the agent (one instance per watched series) and in
``bench/nab_run.py`` (one instance per Numenta Anomaly Benchmark file). It needs
no training step and no stored history: every sample updates a handful of
exponentially weighted statistics and returns a score in [0, 1].

Per sample ``x`` (``update(x)``):

1. **Baseline.** An exponentially weighted mean ``m`` and variance ``v`` of the
   values (weight ``alpha``, about ``1/alpha`` samples of memory; a plain
   running mean until that many samples have been seen). The value's deviation
   ``z = |x - m| / sd`` is clipped at ``zclip``. The baseline learns the sample
   *after* scoring it.
2. **Spike surprise.** ``-log10`` of the normal tail probability of ``z``: how
   many decimal orders of magnitude unlikely this single value is.
3. **Drift surprise.** A short average of ``z`` (weight ``short``, about
   ``1/short`` samples) against the long-run mean and spread of that average
   (weight ``long``), turned into a tail probability the same way. This is the
   idea of Numenta's "anomaly likelihood": it fires when the series becomes
   persistently harder to predict (more noise, a new level, a changed shape)
   even when no single value is extreme.
4. **Score.** The surprise ``s = max(spike, drift)`` relative to the largest
   surprise of the recent past (a maximum that decays by ``record_decay`` per
   sample, never below ``record_floor``): ``score = min(1, 0.5 * s / recent_max)``.
   So 0.5 means "as surprising as the most surprising moment of the recent
   past", 1.0 means at least twice as surprising, and a series that is always
   noisy stops alarming on its noise once it has seen it.
5. **Range novelty.** A value beyond every value seen so far by more than
   ``range_tol`` of the seen range scores 1.0 (the seen range then grows to
   it; it grows only by such steps, so a slow creep out of it still counts).

The first ``warmup`` samples only learn (score 0).

Memory per series: 11 numbers (the ``__slots__`` below), about 330 bytes as a
Python object with its floats (tracemalloc); the JSON state is about 310 bytes. CPU: see
``bench/anomaly_bench.py`` (about 1.5 µs per sample here).

``expected_range()`` gives the band the baseline held before the last sample
(``m ± band * sd``), for events that explain themselves.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

_SQRT2 = math.sqrt(2.0)
_LOG10_SQRT_2PI = math.log10(math.sqrt(2.0 * math.pi))
_LOG10_E = math.log10(math.e)

STATE_VERSION = 1


def surprise(z: float) -> float:
    """``-log10`` of the upper normal tail probability P(N(0,1) > z), for z > 0."""
    if z < 8.0:
        return -math.log10(0.5 * math.erfc(z / _SQRT2))
    # Mills ratio asymptote: P(N > z) ~ phi(z) / z; exact to 1.5 % of the tail here.
    return z * z / 2.0 * _LOG10_E + _LOG10_SQRT_2PI + math.log10(z)


@dataclasses.dataclass(frozen=True, slots=True)
class DetectorParams:
    """The detector's knobs. The defaults are the agent's defaults and what NAB was scored with."""

    alpha: float = 0.01  # baseline weight: memory of about 100 samples
    short: float = 0.05  # short average of deviations: about 20 samples
    long: float = 0.002  # long-run spread of that average: about 500 samples
    zclip: float = 10.0  # deviations beyond this many sd count as this many
    range_tol: float = 0.05  # range novelty: beyond the seen range by this fraction of it
    record_decay: float = 0.0005  # the recent maximum forgets about 1/2000 of itself per sample
    record_floor: float = 0.5  # log10-surprise below which nothing counts as a record
    warmup: int = 30  # samples that only learn
    band: float = 3.0  # expected range reported in events: mean ± band × sd

    def validate(self) -> list[str]:
        """Return the problems (empty when valid), as 'name: reason'."""
        errs = []
        for name in ("alpha", "short", "long", "record_decay"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                errs.append(f"{name}: must be between 0 and 1 (exclusive), got {v}")
        for name in ("zclip", "record_floor", "band"):
            if not getattr(self, name) > 0:
                errs.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.range_tol < 0:
            errs.append(f"range_tol: must be >= 0, got {self.range_tol}")
        if self.warmup < 1:
            errs.append(f"warmup: must be >= 1, got {self.warmup}")
        return errs


DEFAULT_PARAMS = DetectorParams()


class Detector:
    """One series' model. ``update(x)`` returns the anomaly score of ``x`` in [0, 1]."""

    __slots__ = ("hi", "last_mean", "last_sd", "lo", "long_mean", "long_var", "mean", "n", "p", "record", "short_avg", "var")

    def __init__(self, params: DetectorParams = DEFAULT_PARAMS) -> None:
        self.p = params
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.short_avg = 0.0
        self.long_mean = 0.0
        self.long_var = 0.0
        self.lo = 0.0
        self.hi = 0.0
        self.record = 0.0
        self.last_mean = 0.0
        self.last_sd = 0.0

    def update(self, x: float) -> float:
        """Score ``x`` against what was learned so far, then learn it. NaN/inf are ignored (score 0)."""
        if not math.isfinite(x):
            return 0.0
        p = self.p
        n = self.n = self.n + 1
        if n == 1:
            self.mean = self.lo = self.hi = self.last_mean = x
            return 0.0
        m = self.mean
        d = x - m
        sd = math.sqrt(self.var) + 1e-9 + 1e-6 * abs(m)
        self.last_mean = m
        self.last_sd = sd
        z = abs(d) / sd
        z = min(z, p.zclip)
        # learn the baseline (a running mean until 1/alpha samples)
        a = p.alpha if n * p.alpha > 1.0 else 1.0 / n
        self.mean = m + a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        # short average of deviations against its long-run distribution
        sa = self.short_avg = self.short_avg + p.short * (z - self.short_avg)
        al = p.long if n * p.long > 1.0 else 1.0 / n
        dl = sa - self.long_mean
        self.long_mean += al * dl
        lv = self.long_var = (1.0 - al) * (self.long_var + al * dl * dl)
        # range novelty
        # (the seen range only grows by novel steps, so a slow creep past it still counts)
        novel = False
        tol = p.range_tol * (self.hi - self.lo)
        if x > self.hi + tol:
            novel = True
            self.hi = x
        elif x < self.lo - tol:
            novel = True
            self.lo = x
        if n <= p.warmup:
            return 0.0
        s = surprise(z) if z > 0.0 else 0.0
        zl = (sa - self.long_mean) / (math.sqrt(lv) + 1e-12)
        if zl > 0.0:
            s2 = surprise(min(1000000.0, zl))
            s = max(s, s2)
        # relative to the recent maximum
        floor = p.record_floor
        rec = max(floor, self.record)
        score = 0.5 * s / rec
        rec *= 1.0 - p.record_decay
        self.record = max(rec, s)
        if novel:
            return 1.0
        return min(1.0, score)

    def expected_range(self) -> tuple[float, float]:
        """The band the model held before the last sample: mean ± band × sd."""
        w = self.p.band * self.last_sd
        return (self.last_mean - w, self.last_mean + w)

    @property
    def learning(self) -> bool:
        return self.n <= self.p.warmup

    # -- state for the agent's state store --------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (finite floats and ints only)."""
        return {"v": STATE_VERSION, **{k: getattr(self, k) for k in self.__slots__ if k != "p"}}

    @classmethod
    def from_state(cls, state: dict[str, Any], params: DetectorParams = DEFAULT_PARAMS) -> Detector:
        """Rebuild from ``to_state()``; raises ValueError for a snapshot it cannot trust."""
        if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
            raise ValueError("unknown detector state version")
        d = cls(params)
        for k in cls.__slots__:
            if k == "p":
                continue
            v = state.get(k)
            if k == "n":
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError(f"detector state: bad {k!r}")
            elif not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or (k in ("var", "long_var", "record", "last_sd") and v < 0):
                raise ValueError(f"detector state: bad {k!r}")
            setattr(d, k, v)
        return d
