from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hostmond.agent.anomaly.config import AnomalyConfig, WatchRule
from hostmond.agent.anomaly.stage import AnomalyStage
from hostmond.agent.handoff import Collection

from hostmond.core.model import COUNTER, GAUGE, Sample

TAGS = {"host": "h1", "tenant_id": "t1"}
T0 = 1_700_006_400.0


class Keep:
    """A downstream consumer that keeps what it is given."""

    def __init__(self) -> None:
        self.cols: list[Collection] = []

    def submit(self, collection: Collection) -> None:
        self.cols.append(collection)

    def self_metrics(self) -> list[Sample]:
        return []


def make(tmp_path: Path, **kw: object) -> tuple[AnomalyStage, Keep]:
    rules = kw.pop("watch", [WatchRule(metric="load"), WatchRule(metric="cpu_seconds_total", match={"mode": "user|system"}, by=["mode"])])
    cfg = AnomalyConfig(defaults=False, watch=rules, learn_samples=kw.pop("learn_samples", 50), **kw)  # type: ignore[arg-type]
    st = AnomalyStage(cfg, TAGS, str(tmp_path / "anomaly" / "models.json"))
    keep = Keep()
    st.downstream = lambda: [keep, st]  # the stage never feeds itself
    return st, keep


def col(t: float, load: float, cpu: dict[tuple[str, str], float] | None = None, extra: list[Sample] | None = None) -> Collection:
    samples = [Sample("load", GAUGE, load, {**TAGS})]
    for (c, mode), v in (cpu or {}).items():
        samples.append(Sample("cpu_seconds_total", COUNTER, v, {"cpu": c, "mode": mode, **TAGS}))
    return Collection("test", t, samples + (extra or []), [])


def quiet_load(st: AnomalyStage, n: int, t0: float = T0, seed: int = 1) -> float:
    r = random.Random(seed)
    t = t0
    for _ in range(n):
        t += 15
        st.submit(col(t, 1.0 + r.gauss(0, 0.05)))
    return t


def test_counters_become_rates_summed_over_the_labels_not_kept(tmp_path: Path) -> None:
    st, keep = make(tmp_path)
    st.submit(col(T0, 1.0, {("0", "user"): 100.0, ("1", "user"): 50.0, ("0", "idle"): 9.0, ("0", "system"): 10.0}))
    st.submit(col(T0 + 10, 1.0, {("0", "user"): 105.0, ("1", "user"): 60.0, ("0", "idle"): 99.0, ("0", "system"): 12.0}))
    keys = set(st.series)
    assert keys == {"load|", "cpu_seconds_total|mode=user", "cpu_seconds_total|mode=system"}
    assert st.series["cpu_seconds_total|mode=user"].det.n == 1  # the first sample only set the previous value
    assert st.series["cpu_seconds_total|mode=user"].det.base.mean == pytest.approx(1.5)  # (5 + 10) / 10 s
    assert st.series["load|"].det.n == 2
    scores = [s for s in keep.cols[-1].samples if s.name == "hostmon_anomaly_score"]
    assert {(s.labels["metric"], s.labels["series"]) for s in scores} == {
        ("load", ""), ("cpu_seconds_total", "mode=user"), ("cpu_seconds_total", "mode=system")
    }
    assert all(s.labels["host"] == "h1" and s.labels["tenant_id"] == "t1" for s in scores)
    assert keep.cols[-1].collector == "anomaly"


def test_a_counter_reset_restarts_the_rate_instead_of_scoring_a_negative_rate(tmp_path: Path) -> None:
    st, _ = make(tmp_path)
    for i, v in enumerate([100.0, 110.0, 5.0, 15.0]):
        st.submit(col(T0 + 10 * i, 1.0, {("0", "user"): v}))
    det = st.series["cpu_seconds_total|mode=user"].det
    assert det.n == 2  # 110-100 and 15-5; the reset was skipped
    assert det.base.mean == pytest.approx(1.0)


def test_a_spike_after_learning_raises_one_event_naming_the_series_with_its_expected_range(tmp_path: Path) -> None:
    st, keep = make(tmp_path)
    published: list[list[Sample]] = []
    st.publish = published.append
    t = quiet_load(st, 300)
    before = st.events  # noise alone raises a few (record-breaking noise), see docs/anomaly.md
    keep.cols.clear()
    for k in range(5):  # a sustained jump: one event, the hold keeps the rest quiet
        st.submit(col(t + 15 * (k + 1), 8.0))
    events = [e for c in keep.cols for e in c.events]
    assert len(events) == 1 and st.events == before + 1
    e = events[0]
    assert e.kind == "anomaly" and e.labels == TAGS and e.time == t + 15
    f = e.fields
    assert f["series"] == "load" and f["metric"] == "load" and f["value"] == 8.0 and f["unit"] == "value"
    assert f["expected_low"] < 1.0 < f["expected_high"] < 2.0
    assert f["score"] >= 0.8 and f["started"] <= e.time
    json.dumps(e.to_dict())  # shippable
    rate = next(s for s in published[-1] if s.name == "hostmon_anomaly_rate")
    assert rate.value == 1.0  # the only learned series is in its hold window
    m = {s.name: s.value for s in st.self_metrics()}
    assert m["hostmon_anomaly_events_total"] == before + 1 and m["hostmon_anomaly_series_watched"] == 1
    assert m["hostmon_anomaly_model_bytes"] > 500 and m["hostmon_anomaly_detector_cpu_seconds_total"] > 0


def test_no_event_while_a_series_is_still_learning(tmp_path: Path) -> None:
    st, keep = make(tmp_path, learn_samples=200)
    t = quiet_load(st, 100)
    st.submit(col(t + 15, 50.0))
    assert st.series["load|"].det.alarm  # the model is surprised...
    assert st.series["load|"].score == 0.0  # ...but publishes 0 and raises no event yet
    assert not [e for c in keep.cols for e in c.events]


def test_an_alarm_while_learning_does_not_hold_the_first_event_after_learning(tmp_path: Path) -> None:
    # a young model alarms easily (its recent maximum is still small); such an alarm raises no event and
    # must not hold the next one: a jump right after learning is reported at once
    st, keep = make(tmp_path, learn_samples=40)
    r = random.Random(1)
    t = T0
    alarms = 0
    for _ in range(40):  # a steady integer gauge (like the textfile probe of test_anomaly_host.py)
        t += 15
        st.submit(col(t, 100.0 + r.randrange(3)))
        alarms += st.series["load|"].det.alarm
    assert alarms >= 1  # the young model did alarm (no event: still learning)...
    assert st.series["load|"].det.quiet == 0  # ...and holds nothing
    st.submit(col(t + 15, 200.0))
    events = [e for c in keep.cols for e in c.events]
    assert len(events) == 1 and events[0].fields["value"] == 200.0


def _steady_then(st: AnomalyStage, level: float, noise: float, after: list[float]) -> tuple[int, list[float]]:
    """A gauge near ``level`` for 300 samples, then the values ``after``: events raised, and the scores of ``after``."""
    r = random.Random(3)
    t = T0
    for _ in range(300):
        t += 15
        st.submit(col(t, level + r.gauss(0, noise)))
    before = st.events
    scores = []
    for v in after:
        t += 15
        st.submit(col(t, v))
        scores.append(st.series["load|"].score)
    return st.events - before, scores


def test_a_move_below_the_floor_raises_no_event_however_new_it_is_to_the_model(tmp_path: Path) -> None:
    # MemAvailable of a quiet 24 GB host: a 2 MB move is far outside the 100 kB noise, and nothing to an operator
    level, mb = 24e9, 1e6
    plain, _ = make(tmp_path / "plain", watch=[WatchRule(metric="load")])
    n_plain, s_plain = _steady_then(plain, level, 0.1 * mb, [level + 2 * mb])
    assert n_plain == 1 and s_plain[0] >= 0.8  # without a floor: an event
    floored, _ = make(tmp_path / "floored", watch=[WatchRule(metric="load", min_change=16 * mb, min_change_ratio=0.02)])
    n_floor, s_floor = _steady_then(floored, level, 0.1 * mb, [level + 2 * mb])
    assert n_floor == 0 and s_floor[0] < 0.01  # 2 MB of a 480 MB floor (2% of 24 GB)
    assert floored.series["load|"].det.quiet == 0  # the undone alarm holds nothing...
    # ...so a real drop right after it is reported at once: 3 GB taken
    n_big, s_big = _steady_then(make(tmp_path / "again", watch=[WatchRule(metric="load", min_change_ratio=0.02)])[0],
                                level, 0.1 * mb, [level + 2 * mb, level - 3e9])
    assert n_big == 1 and s_big[1] >= 0.8


def test_the_floor_scales_the_score_with_the_distance_and_takes_the_larger_of_its_two_forms(tmp_path: Path) -> None:
    # 8 above a level of 1 that never moved: a 16 floor (absolute) halves the score; a 2% ratio floor (0.02) does nothing
    absolute, _ = make(tmp_path / "a", watch=[WatchRule(metric="load", min_change=16.0)])
    _, s_abs = _steady_then(absolute, 1.0, 0.05, [9.0])
    ratio, _ = make(tmp_path / "r", watch=[WatchRule(metric="load", min_change_ratio=0.02)])
    n_ratio, s_ratio = _steady_then(ratio, 1.0, 0.05, [9.0])
    assert s_ratio[0] == 1.0 and n_ratio == 1
    assert 0.4 <= s_abs[0] <= 0.55  # about 8 / 16 of 1.0 (measured from the middle of the expected band)
    both, _ = make(tmp_path / "b", watch=[WatchRule(metric="load", min_change=16.0, min_change_ratio=0.02)])
    _, s_both = _steady_then(both, 1.0, 0.05, [9.0])
    assert s_both == s_abs


def test_the_default_watch_list_has_a_floor_for_every_series_but_errors_and_failed_logins() -> None:
    from hostmond.agent.anomaly.config import DEFAULT_WATCH

    no_floor = {r.metric for r in DEFAULT_WATCH if r.min_change == 0 and r.min_change_ratio == 0}
    assert no_floor == {"node_network_receive_errs_total", "node_network_transmit_errs_total", "hostmon_auth_failures_total"}
    assert {r.metric for r in DEFAULT_WATCH} >= {"node_netstat_Tcp_RetransSegs", "node_memory_MemAvailable_bytes"}


def test_series_beyond_max_series_are_counted_not_modelled(tmp_path: Path) -> None:
    st, _ = make(tmp_path, max_series=2, watch=[WatchRule(metric="disk", by=["device"])])
    for i in range(3):
        st.submit(Collection("d", T0 + i, [Sample("disk", GAUGE, 1.0, {"device": d}) for d in ("a", "b", "c", "d")], []))
    assert len(st.series) == 2
    assert {s.name: s.value for s in st.self_metrics()}["hostmon_anomaly_series_dropped_total"] == 6


def test_unwatched_collections_are_passed_over(tmp_path: Path) -> None:
    st, keep = make(tmp_path)
    st.submit(Collection("x", T0, [Sample("other", GAUGE, 1.0, {})], []))
    st.submit(Collection("anomaly", T0, [Sample("load", GAUGE, 1.0, {})], []))  # its own output
    assert not st.series and not keep.cols


async def test_models_survive_a_restart(tmp_path: Path) -> None:
    a, _ = make(tmp_path)
    await a.start()
    t = quiet_load(a, 200)
    await a.stop()
    saved = json.loads((tmp_path / "anomaly" / "models.json").read_text())
    assert set(saved["series"]) == {"load|"}
    b, _ = make(tmp_path)
    await b.start()
    r = random.Random(9)
    for _ in range(50):
        t += 15
        x = 1.0 + r.gauss(0, 0.05)
        a.submit(col(t, x))
        b.submit(col(t, x))
        assert a.series["load|"].score == b.series["load|"].score
    assert b.series["load|"].det.n == 250
    assert {s.name: s.value for s in a.self_metrics() if s.labels.get("result") == "success"}


async def test_an_unreadable_state_file_is_moved_aside_and_learning_starts_afresh(tmp_path: Path) -> None:
    p = tmp_path / "anomaly" / "models.json"
    p.parent.mkdir()
    p.write_text("{not json")
    st, _ = make(tmp_path)
    await st.start()
    assert st.saved == {}
    assert list(p.parent.glob("models.json.corrupt-*"))


async def test_a_bad_model_in_the_state_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    p = tmp_path / "anomaly" / "models.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"v": 1, "series": {"load|": {"v": 1, "n": "x"}}}))
    st, _ = make(tmp_path)
    await st.start()
    st.submit(col(T0, 1.0))
    assert st.series["load|"].det.n == 1 and st.restore_errors == 1


async def test_in_the_agent_the_collections_of_one_tick_are_published_once(tmp_path: Path) -> None:
    """On the event loop the scores go out once after the tick's collections, with every event they raised."""
    import asyncio

    st, keep = make(tmp_path)
    published: list[list[Sample]] = []
    st.publish = published.append
    r = random.Random(3)
    t, user = T0, 0.0
    for i in range(300):  # learn on the loop: one flush per tick of two collections
        t += 15
        user += 15 * (1.0 + r.gauss(0, 0.05))
        st.submit(col(t, 1.0 + r.gauss(0, 0.05)))
        st.submit(Collection("cpu", t, [Sample("cpu_seconds_total", COUNTER, user, {"cpu": "0", "mode": "user", **TAGS})], []))
        assert len(published) == i, "nothing published before the loop turns"
        await asyncio.sleep(0)
    assert len(published) == 300, "one publish per tick, not per collection"
    names = {s.labels.get("series") for s in published[-1] if s.name == "hostmon_anomaly_score"}
    assert names == {"", "mode=user"}, names
    keep.cols.clear()
    t += 15
    st.submit(col(t, 8.0))
    st.submit(Collection("cpu", t, [Sample("cpu_seconds_total", COUNTER, user + 15 * 8.0, {"cpu": "0", "mode": "user", **TAGS})], []))
    await asyncio.sleep(0)
    (last,) = keep.cols
    assert sorted(e.fields["metric"] for e in last.events) == ["cpu_seconds_total", "load"], "both events in the one flush"
