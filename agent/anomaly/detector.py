"""A streaming anomaly detector for one numeric series: constant memory, a few µs per sample.

The same class runs in the agent (one instance per watched series) and in
``bench/nab_run.py`` (one instance per Numenta Anomaly Benchmark file). It needs
no training step and no stored history: every sample updates a few
exponentially weighted statistics and returns a score in [0, 1]. Every score is
computed from the samples up to and including that one (causal, streaming).

Per sample ``x`` seen at time ``t`` (``update(x, t)``):

1. **Baseline.** An exponentially weighted mean and variance of the values
   (weight ``alpha``: about ``1/alpha`` samples of memory; a plain running mean
   until then). The deviation ``z = |x - mean| / sd`` is clipped at ``zclip``.
   ``sd`` is never below ``quantum_floor`` times the series' quantum (the
   smallest non-zero step seen between two samples), so a count that sat at 0
   and 1 does not call a 2 a five-sigma event. The baseline learns the sample
   *after* scoring it.
2. **Spike surprise.** ``-log10`` of the normal tail probability of ``z``: how
   many orders of magnitude unlikely this single value is.
3. **Drift surprise.** A short average of ``z`` (weight ``short``) against the
   long-run mean and spread of that average (weight ``long``), turned into a
   tail probability the same way: Numenta's "anomaly likelihood" idea. It fires
   when the series becomes persistently harder to predict (more noise, a new
   level, a changed shape) although no single value is extreme.
4. **Seasonal residual.** A daily profile of hour-long slots (``period_s``,
   ``slot_s``, UTC): each slot holds an EW mean (``season_visit``) of the mean
   of its past visits. Once a slot has been visited ``season_min`` times, the
   residual ``x - profile[slot]`` goes through steps 1-3 with its own
   statistics, weighted by ``season_weight``: "unusual for this hour of day".
5. **Transition surprise.** The seen range is cut into ``context_bins`` (6)
   equal bins, and a table counts the moves from each bin to the next sample's
   (each bin forgetting over about ``1 / context_decay`` of its visits). A move
   scores ``-log10 P(move)`` less the chance level ``log10(context_bins)``,
   weighted by ``context_weight``: a value common in itself that comes after a
   value it never follows (a swing that stops, a pattern that changes shape).
   This is the idea of NAB's contextOSE detector, in a 6 x 6 table. It counts
   only once the seen range spans ``context_quanta`` quanta (in a series of a
   few distinct values, sampling jitter alone makes moves never seen).
6. **Burst surprise.** The largest of the surprises above, ``s``, averaged over
   a few samples (weight ``burst_short``) against its own long-run mean and
   spread (weight ``burst_long``), as a tail probability weighted by
   ``burst_weight``: a run of moderately surprising samples (spikes coming
   closer together) counts as one surprise.
7. **Score.** The largest surprise ``s`` relative to the largest surprise of the
   recent past (a maximum that forgets over half the samples seen so far, at
   least ``record_memory_min`` and at most ``record_memory_max`` samples, and
   is never below ``record_floor`` nor above the surprise of a ``zclip``-sd
   spike): ``score = min(1, 0.5 * s / recent_max)``.
   So 0.5 means "as surprising as the most surprising moment of the recent
   past", 1.0 twice as surprising or more; a series that is always noisy stops
   alarming on its noise once it has seen it.
8. **Novelty.** A value beyond every value seen so far by more than
   ``range_tol`` of the seen range scores 1.0, and so does a *level* beyond
   every level seen (an EW mean of weight ``level_alpha``, about four samples,
   against its own seen range): a shift to somewhere the series has never
   been. Either counts only when the sample is also ``novel_z`` sd or more from
   the baseline's mean (nothing is new in a tiny range). The seen ranges grow
   only by such steps, so a slow creep out of them still counts.
9. **Hold.** A score at or above ``threshold`` is an alarm; the next ``hold``
   scores are halved, so one incident gives one alarm. The first ``warmup``
   samples only learn (score 0).

Memory per series: two sets of 7 statistics, the profile (24 floats and 24
counts with the defaults), the transition table (36 counts, 6 row sums, 6
units) and about 25 more numbers: 3,216 bytes as Python objects, 1,730 bytes
of JSON state (``bench/anomaly_bench.py`` measures both). CPU: a median 7.8 µs
per sample on the 2-core development machine (same bench; about 1.4 µs of it
the transition model; the budget is 20 µs). NAB (51 files, the
defaults, ``bench/nab_run.py``): standard 75.63, reward low FP 67.77, reward
low FN 79.97.

``expected_range()`` gives the band the model held for the last sample
(``expected ± band * sd`` of the baseline, or of the seasonal profile when that
was the more surprised, cut to the bounds beyond which a value counts as
novel), so an alarm can say what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

_SQRT2 = math.sqrt(2.0)
_LOG10_SQRT_2PI = math.log10(math.sqrt(2.0 * math.pi))
_LOG10_E = math.log10(math.e)

STATE_VERSION = 3  # 1: before the level range, quantum and burst statistics; 2: before the transition model (both still read)


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
    zclip: float = 10.0  # deviations beyond this many sd count as this many; the recent maximum is capped at this z's surprise
    range_tol: float = 0.05  # range novelty: beyond the seen range by this fraction of it ...
    novel_z: float = 3.0  # ... and at least this many sd from the baseline's mean
    record_memory_min: int = 2000  # the recent maximum forgets over half the samples seen, at least this many ...
    record_memory_max: int = 4000  # ... and at most this many
    record_floor: float = 0.5  # log10-surprise below which nothing counts as a record
    level_alpha: float = 0.25  # level novelty: EW mean of about 4 samples against its own seen range
    quantum_floor: float = 0.5  # sd never below this many quanta (smallest non-zero step seen)
    burst_weight: float = 0.7  # burst surprise (a run of surprising samples) counts this much; 0 turns it off
    burst_short: float = 0.1  # short average of the surprise: about 10 samples ...
    burst_long: float = 0.001  # ... against its long-run mean and spread: about 1000 samples
    burst_min: int = 100  # scored samples before the burst surprise counts
    warmup: int = 30  # samples that only learn
    band: float = 3.0  # expected range reported in events: mean ± band × sd
    period_s: float = 86400.0  # seasonal profile: a day ...
    slot_s: float = 3600.0  # ... of hour-long slots (UTC)
    season_weight: float = 0.8  # the seasonal residual's surprise counts this much
    season_visit: float = 0.5  # weight of the latest visit's mean in a slot's profile value
    season_min: int = 3  # visits a slot needs before its residual is scored
    context_weight: float = 4.0  # transition surprise (an unusual move between value bins) counts this much; 0 turns it off
    context_bins: int = 6  # ... over this many equal bins of the seen range ...
    context_prior: float = 0.25  # ... with this pseudo-count per transition ...
    context_decay: float = 0.01  # ... each bin's transitions forgetting over about 1/this of its visits ...
    context_grow: float = 0.1  # ... the bins re-cut when the seen range outgrows them by this fraction
    context_quanta: float = 16.0  # the transition surprise counts once the seen range spans this many quanta
    threshold: float = 0.8  # an alarm: score at or above this (the agent's event threshold)
    hold: int = 30  # after an alarm, scores are halved for this many samples (one incident, one alarm)

    def validate(self) -> list[str]:
        """Return the problems (empty when valid), as 'name: reason'."""
        errs = []
        for name in ("alpha", "short", "long", "level_alpha", "burst_short", "burst_long"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                errs.append(f"{name}: must be between 0 and 1 (exclusive), got {v}")
        for name in ("zclip", "record_floor", "band", "novel_z"):
            if not getattr(self, name) > 0:
                errs.append(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 1 <= self.record_memory_min <= self.record_memory_max:
            errs.append(f"record_memory_min: must be >= 1 and <= record_memory_max, got {self.record_memory_min} and {self.record_memory_max}")
        for name in ("quantum_floor", "burst_weight"):
            if getattr(self, name) < 0:
                errs.append(f"{name}: must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if self.burst_min < 1:
            errs.append(f"burst_min: must be >= 1, got {self.burst_min}")
        if self.range_tol < 0:
            errs.append(f"range_tol: must be >= 0, got {self.range_tol}")
        if self.warmup < 1:
            errs.append(f"warmup: must be >= 1, got {self.warmup}")
        if not 0.0 < self.season_visit <= 1.0:
            errs.append(f"season_visit: must be in (0, 1], got {self.season_visit}")
        if self.season_weight < 0:
            errs.append(f"season_weight: must be >= 0 (0 turns the seasonal profile off), got {self.season_weight}")
        if not 0 < self.slot_s <= self.period_s or self.period_s / self.slot_s > 1440:
            errs.append(f"slot_s: must be > 0, <= period_s and leave at most 1440 slots, got {self.slot_s} for period_s {self.period_s}")
        if self.season_min < 1:
            errs.append(f"season_min: must be >= 1, got {self.season_min}")
        if not 0.0 < self.threshold <= 1.0:
            errs.append(f"threshold: must be in (0, 1], got {self.threshold}")
        if self.hold < 0:
            errs.append(f"hold: must be >= 0, got {self.hold}")
        if self.context_weight < 0:
            errs.append(f"context_weight: must be >= 0 (0 turns the transition model off), got {self.context_weight}")
        if not 2 <= self.context_bins <= 32:
            errs.append(f"context_bins: must be between 2 and 32, got {self.context_bins}")
        if not self.context_prior > 0:
            errs.append(f"context_prior: must be > 0, got {self.context_prior}")
        if not 0.0 <= self.context_decay < 1.0:
            errs.append(f"context_decay: must be >= 0 and < 1, got {self.context_decay}")
        if self.context_quanta < 0:
            errs.append(f"context_quanta: must be >= 0, got {self.context_quanta}")
        if not self.context_grow > 0:
            errs.append(f"context_grow: must be > 0, got {self.context_grow}")
        return errs


DEFAULT_PARAMS = DetectorParams()


class _Deviation:
    """How surprising a value is against an EW baseline: spike and drift surprise (steps 1-3)."""

    __slots__ = ("long_mean", "long_var", "mean", "n", "sd", "short_avg", "var")

    def __init__(self) -> None:
        self.n = 0
        self.mean = self.var = self.short_avg = self.long_mean = self.long_var = self.sd = 0.0

    def update(self, x: float, p: DetectorParams, floor: float = 0.0) -> float:
        """Return max(spike, drift) surprise of ``x`` (0 while warming up), then learn ``x``; ``sd`` is at least ``floor``."""
        n = self.n = self.n + 1
        if n == 1:
            self.mean = x
            return 0.0
        m = self.mean
        d = x - m
        sd = self.sd = max(math.sqrt(self.var) + 1e-9 + 1e-6 * abs(m), floor)
        z = min(abs(d) / sd, p.zclip)
        a = p.alpha if n * p.alpha > 1.0 else 1.0 / n  # a running mean until 1/alpha samples
        self.mean = m + a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        sa = self.short_avg = self.short_avg + p.short * (z - self.short_avg)
        al = p.long if n * p.long > 1.0 else 1.0 / n
        dl = sa - self.long_mean
        self.long_mean += al * dl
        lv = self.long_var = (1.0 - al) * (self.long_var + al * dl * dl)
        if n <= p.warmup:
            return 0.0
        s = surprise(z) if z > 0.0 else 0.0
        zl = (sa - self.long_mean) / (math.sqrt(lv) + 1e-12)
        if zl > 0.0:
            s = max(s, surprise(min(1e6, zl)))
        return s

    def state(self) -> list[float]:
        return [self.n, self.mean, self.var, self.short_avg, self.long_mean, self.long_var, self.sd]

    @classmethod
    def from_state(cls, v: Any) -> _Deviation:
        if not isinstance(v, list) or len(v) != 7 or not all(_finite(x) for x in v) or not isinstance(v[0], int) or v[0] < 0 or v[2] < 0 or v[5] < 0 or v[6] < 0:
            raise ValueError("detector state: bad deviation")
        d = cls()
        d.n, d.mean, d.var, d.short_avg, d.long_mean, d.long_var, d.sd = v
        return d


class _Transitions:
    """How unusual the move from the previous value's bin to this one's is (step 5).

    The seen range is cut into ``context_bins`` equal bins; ``counts[i * bins + j]`` counts
    the moves from bin ``i`` to bin ``j``, each bin forgetting its moves over about
    ``1 / context_decay`` of its visits. The surprise of a move is ``-log10 P(j | i)`` (a
    pseudo-count ``context_prior`` per move) less ``log10(bins)``, the surprise of a move by
    chance: 0 for ordinary moves, high for a move its bin has rarely or never made. When the seen
    range outgrows the bins by ``context_grow`` of their width, they are re-cut over the new range
    and the counts moved to the new bins that hold the old bins' middles.

    Forgetting is lazy: a bin's counts are kept in units that grow by ``1 / (1 - context_decay)``
    per visit (``unit[i]``), so a visit costs O(1); a bin's counts are rescaled when its unit gets large.
    """

    __slots__ = ("counts", "edges", "ghi", "glo", "hi", "lo", "prev", "rows", "unit")

    def __init__(self, bins: int, lo: float = math.nan, hi: float = math.nan) -> None:
        self.lo, self.hi = lo, hi  # the exact seen range (NaN: nothing seen)
        self.glo = self.ghi = math.nan  # the bins' range (NaN: not cut yet) ...
        self.edges = (math.nan, math.nan)  # ... and the values beyond which they are re-cut
        self.prev = -1  # the previous value's bin (-1: none)
        self.counts = [0.0] * (bins * bins)  # in units of unit[i] for the moves from bin i
        self.rows = [0.0] * bins  # per bin: the sum of its counts
        self.unit = [1.0] * bins

    def update(self, x: float, p: DetectorParams, learn_only: bool) -> float:
        """Return the surprise of the move to ``x`` (0 when ``learn_only`` or no move yet), then learn it."""
        if not x >= self.lo:  # also when lo is NaN
            self.lo = x
        if not x <= self.hi:
            self.hi = x
        if learn_only:
            return 0.0
        bins = p.context_bins
        e = self.edges
        if not e[0] <= x <= e[1]:  # also when not cut yet
            self._recut(bins, p.context_grow)
        glo = self.glo
        f = (x - glo) * bins / (self.ghi - glo)  # NaN or infinite for values near the float limits
        j = int(f) if 0.0 <= f < bins else bins - 1 if f >= bins else 0
        i = self.prev
        self.prev = j
        if i < 0:
            return 0.0
        c, rows, u = self.counts, self.rows, self.unit[i]
        k = i * bins + j
        au = p.context_prior * u
        s = -math.log10((c[k] + au) * bins / (rows[i] + bins * au))  # less the chance level, log10(bins)
        if p.context_decay > 0.0:
            u /= 1.0 - p.context_decay
            if u > 1e12:
                for m in range(i * bins, i * bins + bins):
                    c[m] /= u
                rows[i] /= u
                u = 1.0
            self.unit[i] = u
        c[k] += u
        rows[i] += u
        return max(0.0, s)

    def _recut(self, bins: int, grow: float) -> None:
        lo, hi = self.lo, self.hi
        if not hi > lo:
            hi = lo + max(1e-9, 1e-6 * abs(lo))
        if not math.isnan(self.glo):  # cut before: move the counts to the new bins of the old bins' middles
            ow, nw = (self.ghi - self.glo) / bins, (hi - lo) / bins
            mid = [(self.glo + (q + 0.5) * ow - lo) / nw for q in range(bins)]  # old middles, in new bins
            to = [int(f) if 0.0 <= f < bins else bins - 1 if f >= bins else 0 for f in mid]
            c = [0.0] * (bins * bins)
            rows = [0.0] * bins
            unit = self.unit
            for k, v in enumerate(self.counts):
                if v:
                    i = to[k // bins]
                    v /= unit[k // bins]
                    c[i * bins + to[k % bins]] += v
                    rows[i] += v
            self.counts, self.rows, self.unit = c, rows, [1.0] * bins
            if self.prev >= 0:
                self.prev = to[self.prev]
        self.glo, self.ghi = lo, hi
        tol = grow * (hi - lo)
        self.edges = (lo - tol, hi + tol)

    def state(self) -> list[Any]:
        """JSON-safe: NaN (nothing seen, not cut yet) as null."""
        return [
            *(None if math.isnan(v) else v for v in (self.lo, self.hi, self.glo, self.ghi)),
            self.prev,
            list(self.counts),
            list(self.rows),
            list(self.unit),
        ]

    @classmethod
    def from_state(cls, v: Any, p: DetectorParams) -> _Transitions:
        bins = p.context_bins
        if not (
            isinstance(v, list)
            and len(v) == 8
            and all(isinstance(v[i], list) and len(v[i]) == n for i, n in ((5, bins * bins), (6, bins), (7, bins)))
        ):
            raise ValueError("detector state: transitions do not match the parameters")
        lo, hi, glo, ghi, prev, counts, rows, unit = v
        if not (all(_finite(x) or x is None for x in (lo, hi, glo, ghi)) and isinstance(prev, int) and not isinstance(prev, bool) and -1 <= prev < bins):
            raise ValueError("detector state: bad transitions")
        if not (all(_finite(x) and x >= 0 for x in (*counts, *rows)) and all(_finite(x) and x >= 1.0 for x in unit)):
            raise ValueError("detector state: bad transition counts")
        nan = math.nan
        t = cls(bins, nan if lo is None else float(lo), nan if hi is None else float(hi))
        if glo is not None and ghi is not None:
            if not ghi > glo:
                raise ValueError("detector state: bad transition bins")
            t.glo, t.ghi = float(glo), float(ghi)
            tol = p.context_grow * (t.ghi - t.glo)
            t.edges = (t.glo - tol, t.ghi + tol)
            t.prev = prev
        t.counts = [float(x) for x in counts]
        t.rows = [float(x) for x in rows]
        t.unit = [float(x) for x in unit]
        return t


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Detector:
    """One series' model. ``update(x, t)`` returns the anomaly score of ``x`` (seen at unix time ``t``) in [0, 1]."""

    __slots__ = (
        "acc",
        "acc_n",
        "alarm",
        "base",
        "burst",
        "counts",
        "expected",
        "hi",
        "level",
        "lhi",
        "llo",
        "lo",
        "n",
        "p",
        "prev",
        "profile",
        "quantum",
        "quiet",
        "record",
        "season",
        "slot",
        "trans",
    )

    def __init__(self, params: DetectorParams = DEFAULT_PARAMS) -> None:
        self.p = params
        self.n = 0
        self.base = _Deviation()  # the value against its recent level
        self.season = _Deviation()  # the value minus its slot's profile value
        nslots = int(params.period_s // params.slot_s) if params.season_weight > 0 else 0
        self.profile = [0.0] * nslots  # per slot: EW mean of the visits' means
        self.counts = [0] * nslots  # per slot: visits seen (capped)
        self.slot = -1  # the slot being visited and its running sum
        self.acc = 0.0
        self.acc_n = 0
        self.lo = self.hi = 0.0
        self.level = self.llo = self.lhi = 0.0  # level novelty: the EW level and its seen range
        self.prev = 0.0  # the previous value ...
        self.quantum = 0.0  # ... and the smallest non-zero step seen (0: none yet)
        self.burst = [0.0, 0.0, 0.0, 0]  # burst surprise: short average, long mean, long variance, count
        self.record = 0.0
        self.quiet = 0  # samples left in the hold after an alarm
        self.alarm = False  # the last update raised an alarm
        self.expected = (0.0, 0.0)
        self.trans = _Transitions(params.context_bins) if params.context_weight > 0 else None  # step 5

    def update(self, x: float, t: float | None = None) -> float:
        """Score ``x`` against what was learned so far, then learn it.

        ``t`` (unix seconds) feeds the seasonal profile; without it the profile is skipped.
        NaN and infinities are ignored (score 0, nothing learned).
        """
        self.alarm = False
        if not math.isfinite(x):
            return 0.0
        p = self.p
        n = self.n = self.n + 1
        if n == 1:
            self.lo = self.hi = self.level = self.llo = self.lhi = self.prev = x
        step = abs(x - self.prev)
        if step > 0.0 and (step < self.quantum or self.quantum == 0.0):
            self.quantum = step
        self.prev = x
        floor = p.quantum_floor * self.quantum
        b = self.base
        m0 = b.mean
        s = b.update(x, p, floor)
        w = p.band * b.sd
        self.expected = (m0 - w, m0 + w) if n > 1 else (x, x)
        if self.profile and t is not None and math.isfinite(t):
            i = int((t % p.period_s) // p.slot_s)
            if i != self.slot:
                j = self.slot
                if j >= 0 and self.acc_n:
                    c = self.counts[j]
                    a = 1.0 / (c + 1) if c * p.season_visit < 1.0 else p.season_visit
                    self.profile[j] += a * (self.acc / self.acc_n - self.profile[j])
                    self.counts[j] = min(c + 1, 1_000_000)
                self.slot, self.acc, self.acc_n = i, 0.0, 0
            self.acc += x
            self.acc_n += 1
            if self.counts[i] >= p.season_min:
                sv = self.season
                r0 = self.profile[i] + sv.mean
                s2 = p.season_weight * sv.update(x - self.profile[i], p, floor)
                if s2 > s:
                    s = s2
                    w = p.band * sv.sd
                    self.expected = (r0 - w, r0 + w)
        # range novelty; the seen range only grows by novel steps, so a slow creep out of it still counts
        novel = False
        # a new extreme counts only when the baseline also finds it far off (nothing new in a tiny range)
        far = abs(x - m0) >= p.novel_z * b.sd
        tol = p.range_tol * (self.hi - self.lo)
        # what the model held normal: the band, within the bounds beyond which a value is novel
        elo, ehi = max(self.expected[0], self.lo - tol), min(self.expected[1], self.hi + tol)
        self.expected = (elo, ehi) if elo <= ehi else (self.lo - tol, self.hi + tol)
        if x > self.hi + tol:
            novel = far
            self.hi = x
        elif x < self.lo - tol:
            novel = far
            self.lo = x
        # level novelty: the same for a short EW level against its own seen range
        lv = self.level = self.level + p.level_alpha * (x - self.level)
        ltol = p.range_tol * (self.lhi - self.llo)
        wide = self.lhi > self.llo and far
        if lv > self.lhi + ltol:
            novel = novel or wide
            self.lhi = lv
        elif lv < self.llo - ltol:
            novel = novel or wide
            self.llo = lv
        # transition surprise: an unusual move between bins of the seen range (sequence context)
        tr = self.trans
        if tr is not None:
            ts = p.context_weight * tr.update(x, p, n < p.warmup)
            # only where the bins are wider than a few quanta: a series of a few distinct values
            # (a count of 0-2, a gauge stepping 100/101/102) makes unseen moves by sampling jitter alone
            if tr.hi - tr.lo >= p.context_quanta * self.quantum:
                s = max(s, ts)
        if n <= p.warmup:
            return 0.0
        # burst: a run of surprising samples, as one surprise
        bs = self.burst
        if p.burst_weight > 0.0:
            c = bs[3] = bs[3] + 1
            bs[0] += p.burst_short * (s - bs[0])
            al = p.burst_long if c * p.burst_long > 1.0 else 1.0 / c
            dl = bs[0] - bs[1]
            bs[1] += al * dl
            bs[2] = (1.0 - al) * (bs[2] + al * dl * dl)
            if c > p.burst_min and bs[2] > 0.0 and bs[0] > bs[1]:
                s = max(s, p.burst_weight * surprise(min(1e6, (bs[0] - bs[1]) / math.sqrt(bs[2]))))
        # relative to the recent maximum, whose memory is half the samples seen (within bounds)
        rec = max(p.record_floor, self.record)
        score = 1.0 if novel else min(1.0, 0.5 * s / rec)
        rec *= 1.0 - 1.0 / min(p.record_memory_max, max(p.record_memory_min, 0.5 * n))
        # the recent maximum never exceeds a zclip-sd spike's surprise: one huge drift (z up to 1e6)
        # would otherwise deafen the model for days, and a later, bigger one could not exceed it
        self.record = max(rec, min(s, surprise(p.zclip)))
        # one incident, one alarm
        if self.quiet > 0:
            self.quiet -= 1
            return score * 0.5
        if score >= p.threshold:
            self.quiet = p.hold
            self.alarm = True
        return score

    def expected_range(self) -> tuple[float, float]:
        """The band the model held for the last sample (of the baseline or the seasonal profile, whichever was more surprised)."""
        return self.expected

    @property
    def learning(self) -> bool:
        return self.n <= self.p.warmup

    # -- state for the agent's state store --------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (finite floats and ints only)."""
        return {
            "v": STATE_VERSION,
            "n": self.n,
            "base": self.base.state(),
            "season": self.season.state(),
            "profile": self.profile,
            "counts": self.counts,
            "slot": [self.slot, self.acc, self.acc_n],
            "range": [self.lo, self.hi],
            "level": [self.level, self.llo, self.lhi],
            "step": [self.prev, self.quantum],
            "burst": list(self.burst),
            "record": self.record,
            "quiet": self.quiet,
            "expected": list(self.expected),
            "trans": None if self.trans is None else self.trans.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], params: DetectorParams = DEFAULT_PARAMS) -> Detector:
        """Rebuild from ``to_state()``; raises ValueError for a snapshot it cannot trust (or made with another profile shape)."""
        if not isinstance(state, dict) or state.get("v") not in (1, 2, STATE_VERSION):
            raise ValueError("unknown detector state version")
        d = cls(params)
        try:
            n, rec, quiet = state["n"], state["record"], state["quiet"]
            if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0 and _finite(rec) and rec >= 0 and isinstance(quiet, int) and quiet >= 0):
                raise ValueError("detector state: bad n/record/quiet")
            prof, counts = state["profile"], state["counts"]
            if not (isinstance(prof, list) and isinstance(counts, list) and len(prof) == len(d.profile) == len(counts)):
                raise ValueError("detector state: seasonal profile does not match the parameters")
            if not all(_finite(v) for v in prof) or not all(isinstance(c, int) and c >= 0 for c in counts):
                raise ValueError("detector state: bad seasonal profile")
            slot, acc, acc_n = state["slot"]
            lo, hi = state["range"]
            elo, ehi = state["expected"]
            if not (isinstance(slot, int) and -1 <= slot < max(1, len(prof)) and _finite(acc) and isinstance(acc_n, int) and acc_n >= 0):
                raise ValueError("detector state: bad slot")
            if not all(_finite(v) for v in (lo, hi, elo, ehi)):
                raise ValueError("detector state: bad range")
            d.base = _Deviation.from_state(state["base"])
            d.season = _Deviation.from_state(state["season"])
            if state["v"] == 1:  # before level novelty, quantum and burst: start those from the baseline
                level = [d.base.mean, d.base.mean, d.base.mean]
                step = [d.base.mean, 0.0]
                burst: list[Any] = [0.0, 0.0, 0.0, 0]
            else:
                level, step, burst = state["level"], state["step"], state["burst"]
            if not (isinstance(level, list) and len(level) == 3 and all(_finite(v) for v in level) and level[1] <= level[2]):
                raise ValueError("detector state: bad level")
            if not (isinstance(step, list) and len(step) == 2 and all(_finite(v) for v in step) and step[1] >= 0):
                raise ValueError("detector state: bad step")
            if not (
                isinstance(burst, list)
                and len(burst) == 4
                and all(_finite(v) for v in burst)
                and burst[2] >= 0
                and isinstance(burst[3], int)
                and not isinstance(burst[3], bool)
                and burst[3] >= 0
            ):
                raise ValueError("detector state: bad burst")
        except (KeyError, TypeError) as e:
            raise ValueError(f"detector state: malformed ({e})") from None
        d.n, d.record, d.quiet = n, float(rec), quiet
        d.profile, d.counts = [float(v) for v in prof], counts
        d.slot, d.acc, d.acc_n = slot, float(acc), acc_n
        d.lo, d.hi = float(lo), float(hi)
        d.level, d.llo, d.lhi = (float(v) for v in level)
        d.prev, d.quantum = float(step[0]), float(step[1])
        d.burst = [float(burst[0]), float(burst[1]), float(burst[2]), burst[3]]
        d.expected = (float(elo), float(ehi))
        if d.trans is not None:
            tr = state.get("trans") if state["v"] == STATE_VERSION else None
            if tr is None:  # before the transition model, or saved with it off: learn it afresh over the seen range
                d.trans = _Transitions(params.context_bins, d.lo, d.hi) if d.n else _Transitions(params.context_bins)
            else:
                d.trans = _Transitions.from_state(tr, params)
        return d
