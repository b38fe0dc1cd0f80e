"""Exposition: text 0.0.4 and OpenMetrics by negotiation, gzip, escaping, render-once caching."""

from __future__ import annotations

import gzip
import math

from hostmond.agent.exposition import (
    MetricStore,
    Renderer,
    fmt_value,
    wants_gzip,
    wants_openmetrics,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as om_parse,
)
from prometheus_client.parser import text_string_to_metric_families as text_parse

from hostmond.api import COUNTER, GAUGE, MetricSpec, Sample

SPECS = {
    "x_requests_total": MetricSpec("x_requests_total", COUNTER, "Requests.\nSecond line \\ backslash.", ("path",)),
    "x_temp": MetricSpec("x_temp", GAUGE, "Temperature.", ("sensor",)),
}


def samples() -> list[Sample]:
    return [
        Sample("x_requests_total", COUNTER, 3, {"path": '/a"b\\c\nd'}),
        Sample("x_temp", GAUGE, 21.5, {"sensor": "s1"}),
        Sample("x_requests_total", COUNTER, 4, {"path": "/b"}),  # interleaved: must be grouped
        Sample("x_temp", GAUGE, math.nan, {"sensor": "s2"}),
    ]


def test_text_format_round_trips_through_the_reference_parser() -> None:
    text = Renderer(SPECS).render(samples()).decode()
    fams = {f.name: f for f in text_parse(text)}
    req = fams["x_requests"]
    assert req.type == "counter"
    assert req.documentation == "Requests.\nSecond line \\ backslash."
    assert {s.labels["path"]: s.value for s in req.samples} == {'/a"b\\c\nd': 3.0, "/b": 4.0}
    assert text.count("# TYPE x_requests_total counter") == 1, "a family is one group"
    temps = {s.labels["sensor"]: s.value for s in fams["x_temp"].samples}
    assert temps["s1"] == 21.5 and math.isnan(temps["s2"])


def test_openmetrics_format_round_trips() -> None:
    text = Renderer(SPECS).render(samples(), openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE x_requests counter" in text
    fams = {f.name: f for f in om_parse(text)}
    assert {s.labels["path"]: s.value for s in fams["x_requests"].samples} == {'/a"b\\c\nd': 3.0, "/b": 4.0}


def test_negotiation() -> None:
    assert wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert wants_gzip("gzip, deflate")
    assert not wants_gzip("gzip;q=0, identity")
    assert not wants_gzip("identity")


def test_values() -> None:
    assert fmt_value(3) == "3"
    assert fmt_value(0.5) == "0.5"
    assert fmt_value(math.inf) == "+Inf" and fmt_value(-math.inf) == "-Inf"


def test_store_renders_once_per_change_not_per_request_nor_per_update() -> None:
    store = MetricStore(SPECS)
    store.update("c", samples())
    store.update("d", [Sample("x_temp", GAUGE, 2.0, {"sensor": "s2"})])
    assert store.renders == 0, "updates only mark the snapshot changed"
    a = store.body(False, False)
    assert store.renders == 1
    for _ in range(5):
        assert store.body(False, False) is a
        gz = store.body(False, True)
    assert gzip.decompress(gz) == a
    assert store.body(False, True) is gz, "gzip computed once per snapshot"
    assert store.renders == 1
    store.update("c", [Sample("x_temp", GAUGE, 1.0, {"sensor": "s9"})])
    assert store.renders == 1
    assert b"s9" in store.body(False, False) and b"s1" not in store.body(False, False)
    assert store.renders == 2


def test_rendered_lines_keep_special_values_labels_and_hidden_labels_across_cached_renders() -> None:
    """The per-series line prefix is cached; values, escaping and hidden labels must come out right every time."""
    r = Renderer({"t_v": MetricSpec("t_v", GAUGE, "values", ("k",))}, hidden_labels=("host",))
    for _ in range(2):  # the second render goes through the cache
        samples = [
            Sample("t_v", GAUGE, v, {"k": k, "host": "h"})
            for k, v in (("int", 3), ("float", 0.25), ("nan", math.nan), ("inf", math.inf), ("ninf", -math.inf), ("big", 1e308), ("bool", True))
        ]
        samples.append(Sample("t_v", GAUGE, 1, {"k": 'a"b\\c\nd'}))
        text = r.render(samples).decode()
        assert 't_v{k="int"} 3\n' in text and 't_v{k="float"} 0.25\n' in text
        assert 't_v{k="nan"} NaN\n' in text and 't_v{k="inf"} +Inf\n' in text and 't_v{k="ninf"} -Inf\n' in text
        assert 't_v{k="big"} 1e+308\n' in text and 't_v{k="bool"} 1.0\n' in text
        assert 't_v{k="a\\"b\\\\c\\nd"} 1\n' in text
        assert "host" not in text
    r.set_hidden_labels(())
    text = r.render([Sample("t_v", GAUGE, 2, {"k": "int", "host": "h"})]).decode()
    assert 't_v{k="int",host="h"} 2\n' in text, "a change of hidden labels is not served from the old cache"


def test_a_cached_body_is_rendered_again_after_max_age_so_self_metrics_stay_fresh() -> None:
    import time

    store = MetricStore(SPECS, max_age=0.2)
    count = [0]
    store.add_provider(lambda: [Sample("x_temp", GAUGE, float(count[0]), {"sensor": "self"})])
    store.update("c", samples())
    assert b'sensor="self"} 0.0' in store.body(False, False)
    count[0] = 7  # a self-metric changed, no collection since
    assert b'sensor="self"} 0.0' in store.body(False, False), "within max_age: the cached body"
    time.sleep(0.25)
    assert b'sensor="self"} 7.0' in store.body(False, False), "older than max_age: rendered again"
    assert store.renders == 2


def test_a_series_at_the_same_place_as_last_render_is_checked_not_assumed() -> None:
    """The renderer reuses the previous render's prefix for an equal series at the same place in its
    family; a different series there, a reordered family, or a labels dict the collector changed
    after the last render must still come out right."""
    r = Renderer({"t_v": MetricSpec("t_v", GAUGE, "values", ("k",))})
    shared = {"k": "a"}
    first = r.render([Sample("t_v", GAUGE, 1, shared), Sample("t_v", GAUGE, 2, {"k": "b"})]).decode()
    assert 't_v{k="a"} 1\n' in first and 't_v{k="b"} 2\n' in first
    shared["k"] = "z"  # the collector reuses its dict with a new value
    text = r.render([Sample("t_v", GAUGE, 3, shared), Sample("t_v", GAUGE, 4, {"k": "a"})]).decode()
    assert 't_v{k="z"} 3\n' in text and 't_v{k="a"} 4\n' in text and 'k="b"' not in text
    text = r.render([Sample("t_v", GAUGE, 5, {"k": "a"}), Sample("t_v", GAUGE, 6, {"k": "z"}), Sample("t_v", GAUGE, 7, {"k": "new"})]).decode()
    assert text.endswith('t_v{k="a"} 5\nt_v{k="z"} 6\nt_v{k="new"} 7\n')
    assert r.render([Sample("t_v", GAUGE, 8, {"k": "a", "extra": "x"})]).decode().endswith('t_v{k="a",extra="x"} 8\n')
