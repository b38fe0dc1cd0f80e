from __future__ import annotations

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
    assert len(json.dumps(a.to_state())) < 1500


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
    ],
)
def test_untrustworthy_state_is_refused(state: object) -> None:
    with pytest.raises(ValueError):
        Detector.from_state(state)  # type: ignore[arg-type]


def test_params_validation_names_each_bad_field() -> None:
    errs = DetectorParams(alpha=0.0, short=1.5, zclip=-1, range_tol=-0.1, warmup=0).validate()
    joined = "\n".join(errs)
    for name in ("alpha", "short", "zclip", "range_tol", "warmup"):
        assert name + ":" in joined
    assert DEFAULT_PARAMS.validate() == []
