from __future__ import annotations

from pathlib import Path

import pytest
from hostmond.agent import config as config_mod
from hostmond.agent.anomaly.config import DEFAULT_WATCH, AnomalyConfig, WatchRule

from hostmond.core.errors import ConfigError


def load(tmp_path: Path, text: str) -> config_mod.Config:
    p = tmp_path / "hostmon.toml"
    p.write_text(text)
    return config_mod.load(str(p), environ={})


def test_defaults_watch_the_host_series_and_watch_entries_add_to_them(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        '[[anomaly.watch]]\nmetric = "node_filesystem_avail_bytes"\nmatch = { mountpoint = "/" }\nby = ["mountpoint"]\n',
    )
    rules = cfg.anomaly.rules()
    assert rules[: len(DEFAULT_WATCH)] == list(DEFAULT_WATCH)
    extra = rules[-1]
    assert extra.metric == "node_filesystem_avail_bytes" and extra.by == ["mountpoint"]
    assert extra.selects({"mountpoint": "/", "device": "sda1"})
    assert not extra.selects({"mountpoint": "/boot"})
    names = {r.metric for r in DEFAULT_WATCH}
    for m in ("node_cpu_seconds_total", "node_load1", "node_memory_MemAvailable_bytes", "node_vmstat_pswpin",
              "node_disk_written_bytes_total", "node_network_receive_bytes_total", "hostmon_auth_failures_total",
              "node_procs_running", "hostmon_gpu_utilization_ratio"):
        assert m in names


def test_defaults_off_leaves_only_the_listed_rules(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[anomaly]\ndefaults = false\n[[anomaly.watch]]\nmetric = "node_load1"\n')
    assert [r.metric for r in cfg.anomaly.rules()] == ["node_load1"]


def test_virtual_network_and_disk_devices_are_excluded_by_default() -> None:
    rx = next(r for r in DEFAULT_WATCH if r.metric == "node_network_receive_bytes_total")
    assert rx.selects({"device": "eth0"}) and not rx.selects({"device": "veth12ab"}) and not rx.selects({"device": "lo"})
    wr = next(r for r in DEFAULT_WATCH if r.metric == "node_disk_written_bytes_total")
    assert wr.selects({"device": "nvme0n1"}) and not wr.selects({"device": "loop3"})


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[anomaly]\nthreshold = 1.5\n", "anomaly.threshold", "at most 1"),
        ("[anomaly]\nmax_series = 0\n", "anomaly.max_series", "between 1 and 10000"),
        ("[anomaly]\nalpha = 0.9\n", "anomaly.alpha", "between 0 and 0.5"),
        ("[anomaly]\nhold = -1\n", "anomaly.hold", ""),
        ("[anomaly]\ncontext_weight = -1.0\n", "anomaly.context_weight", "0 or more"),
        ("[anomaly]\nbogus = 1\n", "anomaly.bogus", "unknown key"),
        ('[[anomaly.watch]]\nmetric = "node_load1"\nmatch = { device = "(" }\n', "anomaly.watch[0].match", "regular expression"),
        ('[[anomaly.watch]]\nmetric = "node_load1"\nrate = "sometimes"\n', "anomaly.watch[0].rate", "auto, always, never"),
        ('[[anomaly.watch]]\nmetric = "not a name"\n', "anomaly.watch[0].metric", "not a metric name"),
        ('[[anomaly.watch]]\nby = ["device"]\n', "anomaly.watch[0]", "needs metric"),
        ('[[anomaly.watch]]\nmetric = "x"\nby = ["bad-label"]\n', "anomaly.watch[0].by", "not a label name"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, text)
    e = ei.value
    assert e.file.endswith("hostmon.toml")
    assert e.key == key
    assert reason in e.reason


def test_params_carry_the_config_into_the_detector() -> None:
    p = AnomalyConfig(threshold=0.8, hold=5, alpha=0.02, season_weight=0.0, context_weight=0.0).params()
    assert (p.threshold, p.hold, p.alpha, p.season_weight, p.context_weight) == (0.8, 5, 0.02, 0.0, 0.0)


def test_a_rule_with_no_matchers_selects_everything_of_its_metric() -> None:
    assert WatchRule(metric="m").selects({"anything": "x"})
