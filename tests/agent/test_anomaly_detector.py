from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

T0 = 1_700_006_400.0  # a UTC midnight

from hostmond.agent.anomaly.detector import (
    DEFAULT_PARAMS,
    Detector,
    DetectorParams,
    surprise,
)


def noisy(n: int, seed: int = 1, level: float = 50.0, sd: float = 2.0) -> list[float]:
    r = random.Random(seed)
    return [level + r.gauss(0, sd) for _ in range(n)]


def feed(d: Detector, xs: list[float]) -> list[float]:
    return [d.update(x) for x in xs]


def test_surprise_is_minus_log10_of_the_normal_tail_and_continuous_at_the_switch() -> None:
    assert surprise(0.0 + 1e-12) == pytest.approx(math.log10(2), abs=1e-6)
    assert surprise(3.0) == pytest.approx(-math.log10(0.0013499), rel=1e-3)
    assert surprise(8.0 - 1e-9) == pytest.approx(surprise(8.0), rel=0.01)
    assert surprise(40.0) > surprise(20.0) > surprise(10.0)


def test_warmup_scores_zero_then_a_spike_scores_high_and_noise_low() -> None:
    d = Detector()
    scores = feed(d, noisy(600))
    assert scores[: DEFAULT_PARAMS.warmup] == [0.0] * DEFAULT_PARAMS.warmup
    assert max(scores[400:]) < 0.6  # the recent maximum has absorbed ordinary noise
    lo, hi = d.expected_range()
    assert lo < 50 < hi and hi - lo < 20
    assert d.update(90.0) == 1.0  # far outside anything seen: range novelty


def test_a_level_shift_inside_the_seen_range_is_scored_by_drift() -> None:
    r = random.Random(2)
    d = Detector()
    # a series that has visited 0..100 before, then sits at 50 with little noise
    feed(d, [r.uniform(0, 100) for _ in range(50)])
    feed(d, [50 + r.gauss(0, 1) for _ in range(1500)])
    scores = feed(d, [60 + r.gauss(0, 1) for _ in range(20)])
    assert max(scores) >= 0.9


def test_repeated_noise_does_not_keep_alarming() -> None:
    r = random.Random(3)
    d = Detector()
    xs = [r.expovariate(1.0) for _ in range(5000)]  # heavy right tail
    scores = feed(d, xs)
    assert sum(s >= 0.6 for s in scores[2000:]) <= 3


def test_non_finite_values_are_ignored() -> None:
    d = Detector()
    feed(d, noisy(100))
    st = d.to_state()
    assert d.update(math.nan) == 0.0 and d.update(math.inf) == 0.0
    assert d.to_state() == st


def test_values_near_the_float_limits_are_scored_without_error() -> None:
    d = Detector()
    feed(d, noisy(100))
    for x in (1e308, -1e308, 1.7e308, 5.0, -1.7e308):
        assert 0.0 <= d.update(x) <= 1.0
    assert 0 <= d.trans.prev < DEFAULT_PARAMS.context_bins


def test_state_round_trips_through_json_and_continues_identically() -> None:
    xs = noisy(3000, seed=5) + [80.0] + noisy(200, seed=6)
    ts = [T0 + 300.0 * i for i in range(len(xs))]
    a = Detector()
    for x, t in zip(xs[:2000], ts, strict=False):
        a.update(x, t)
    assert sum(a.counts) > 24  # the seasonal profile is part of the state
    b = Detector.from_state(json.loads(json.dumps(a.to_state())))
    assert [a.update(x, t) for x, t in zip(xs[2000:], ts[2000:], strict=True)] == [
        b.update(x, t) for x, t in zip(xs[2000:], ts[2000:], strict=True)
    ]
    assert sum(a.to_state()["trans"][5]) > 10  # so are the transition counts
    assert len(json.dumps(a.to_state())) < 2500


def test_a_value_unusual_for_its_hour_is_scored_by_the_seasonal_profile() -> None:
    # a daily wave sampled every 5 minutes: 20 at night, 80 by day, little noise; then
    # one afternoon the value stays at the night level: inside the seen range, and
    # the fast baseline follows the wave, so only the profile can call it unusual
    r = random.Random(7)

    def wave(i: int) -> float:
        return 50 - 30 * math.cos(2 * math.pi * (i % 288) / 288) + r.gauss(0, 1)

    d = Detector()
    for i in range(288 * 6):
        d.update(wave(i), T0 + 300.0 * i)
    day7 = 288 * 6
    quiet = [d.update(wave(i), T0 + 300.0 * i) for i in range(day7, day7 + 120)]
    assert max(quiet) < DEFAULT_PARAMS.threshold
    for i in range(day7 + 120, day7 + 170):
        if d.update(20 + r.gauss(0, 1), T0 + 300.0 * i) >= DEFAULT_PARAMS.threshold:
            break
    else:
        pytest.fail("no alarm while the value sat at its night level in the afternoon")
    lo, hi = d.expected_range()  # what the profile expected for this hour: well above 20
    assert lo > 25, (lo, hi)


def test_an_alarm_holds_further_alarms_for_hold_samples() -> None:
    d = Detector()
    feed(d, noisy(600))
    assert d.update(200.0) == 1.0
    assert all(s < 0.6 for s in feed(d, [300.0, 400.0, 500.0]))  # halved while held
    feed(d, noisy(DEFAULT_PARAMS.hold))
    assert d.update(5000.0) == 1.0


def test_a_version_1_state_from_before_level_novelty_is_still_restored() -> None:
    a = Detector()
    feed(a, noisy(800, seed=8))
    old = {k: v for k, v in a.to_state().items() if k not in ("level", "step", "burst")}
    b = Detector.from_state(json.loads(json.dumps({**old, "v": 1})))
    assert b.n == a.n and b.base.mean == a.base.mean and b.record == a.record
    assert b.level == b.llo == b.lhi == a.base.mean  # the new statistics start from the baseline
    assert max(feed(b, noisy(200, seed=9))) < 1.0  # and learn on without a burst of novelty
    assert b.update(500.0) == 1.0


def alternating(n: int, seed: int) -> list[float]:
    """A series that swings between ~10 and ~90 every sample: every value is common, every move regular."""
    r = random.Random(seed)
    return [(10.0 if i % 2 == 0 else 90.0) + r.gauss(0, 1) for i in range(n)]


def test_an_unseen_move_between_common_values_is_scored_by_the_transition_model() -> None:
    with_ctx, without = Detector(), Detector(dataclasses.replace(DEFAULT_PARAMS, context_weight=0.0))
    xs = alternating(1500, seed=11)
    regular = [(a.update(x), b.update(x)) for a, b, x in ((with_ctx, without, x) for x in xs)]
    assert max(s for s, _ in regular[1000:]) < 0.6  # the regular swing is learned: every move has been made
    # the swing stops for one sample: 10 follows 10, a value seen a thousand times, a move never made
    x = 10.0 if xs[-1] < 50 else 90.0
    hit, miss = with_ctx.update(x), without.update(x)
    assert hit >= DEFAULT_PARAMS.threshold and with_ctx.alarm
    assert miss < 0.6  # the value models see nothing unusual in it
    lo, hi = with_ctx.expected_range()
    assert lo <= x <= hi  # the value itself was within what was expected
    # the swing goes on: its moves are still ordinary (and held after the alarm anyway)
    after = [with_ctx.update(v) for v in alternating(200, seed=12)[1 if x < 50 else 0 :]]
    assert max(after[DEFAULT_PARAMS.hold + 5 :]) < 0.5


def test_a_move_made_often_stops_being_surprising() -> None:
    d = Detector(dataclasses.replace(DEFAULT_PARAMS, hold=0))
    feed(d, alternating(1000, seed=13))
    stutter = []  # every 20 samples the swing stutters (the same value twice)
    for k in range(40):
        seq = alternating(20, seed=100 + k)
        seq.insert(1, seq[0] + 0.5)
        stutter.append(max(feed(d, seq)))
    assert stutter[0] >= DEFAULT_PARAMS.threshold
    assert max(stutter[-10:]) < 0.5  # the stutter is now a move this series makes


def test_a_few_distinct_values_sampled_out_of_step_raise_no_transition_alarm() -> None:
    # a gauge stepping 100, 101, 102 and round, read out of step once: 100 follows 100. With three
    # distinct values the bins are those values, and such a move is jitter, not news (context_quanta)
    cycle = [100.0 + i % 3 for i in range(1500)]
    gated, ungated = Detector(), Detector(dataclasses.replace(DEFAULT_PARAMS, context_quanta=0.0))
    feed(gated, cycle)
    feed(ungated, cycle)
    assert gated.update(102.0) < DEFAULT_PARAMS.threshold  # 102 after 102
    assert ungated.update(102.0) >= DEFAULT_PARAMS.threshold  # what the gate keeps out


def test_a_version_2_state_from_before_the_transition_model_is_restored_and_learns_it() -> None:
    a = Detector()
    feed(a, noisy(800, seed=14))
    old = {k: v for k, v in a.to_state().items() if k != "trans"}
    b = Detector.from_state(json.loads(json.dumps({**old, "v": 2})))
    assert b.n == a.n and b.base.mean == a.base.mean and b.record == a.record
    assert b.trans is not None and sum(b.trans.counts) == 0.0 and (b.trans.lo, b.trans.hi) == (a.lo, a.hi)
    xs = noisy(300, seed=15)
    went_on, restored = feed(a, xs), feed(b, xs)
    # no burst of surprise while it learns: it alarms where the model that kept its transitions does
    assert [i for i, s in enumerate(restored) if s >= 0.6] == [i for i, s in enumerate(went_on) if s >= 0.6]
    assert sum(b.trans.counts) > 100


@pytest.mark.parametrize(
    "state",
    [
        {"v": 99},
        [],
        {"v": 1, "n": 1},
        {**Detector().to_state(), "base": [1, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]},
        {**Detector().to_state(), "record": "x"},
        {**Detector().to_state(), "n": True},
        {**Detector().to_state(), "profile": [1.0]},
        {**Detector().to_state(), "range": [0.0, float("nan")]},
        {**Detector().to_state(), "slot": [99, 0.0, 0]},
        {**Detector().to_state(), "level": [0.0, 2.0, 1.0]},
        {**Detector().to_state(), "step": [0.0, -1.0]},
        {**Detector().to_state(), "burst": [0.0, 0.0, 0.0, 1.5]},
        {k: v for k, v in Detector().to_state().items() if k != "burst"},
        {**Detector().to_state(), "trans": [None, None, None, None, -1, [0.0] * 4, [0.0] * 2, [1.0] * 2]},  # other bins
        {**Detector().to_state(), "trans": [0.0, 1.0, 0.0, 1.0, 9, [0.0] * 36, [0.0] * 6, [1.0] * 6]},
        {**Detector().to_state(), "trans": [0.0, 1.0, 0.0, 1.0, 0, [-1.0] * 36, [0.0] * 6, [1.0] * 6]},
        {**Detector().to_state(), "trans": [0.0, 1.0, 0.0, 1.0, 0, [0.0] * 36, [0.0] * 6, [0.5] * 6]},
        {**Detector().to_state(), "trans": [0.0, 1.0, 1.0, 1.0, 0, [0.0] * 36, [0.0] * 6, [1.0] * 6]},
        {**Detector().to_state(), "trans": "x"},
    ],
)
def test_untrustworthy_state_is_refused(state: object) -> None:
    with pytest.raises(ValueError):
        Detector.from_state(state)  # type: ignore[arg-type]


def test_params_validation_names_each_bad_field() -> None:
    errs = DetectorParams(
        alpha=0.0, short=1.5, zclip=-1, range_tol=-0.1, warmup=0, context_weight=-1, context_bins=1, context_prior=0, context_decay=1.0, context_grow=0, context_quanta=-1
    ).validate()
    joined = "\n".join(errs)
    for name in ("alpha", "short", "zclip", "range_tol", "warmup", "context_weight", "context_bins", "context_prior", "context_decay", "context_grow", "context_quanta"):
        assert name + ":" in joined
    assert DEFAULT_PARAMS.validate() == []
