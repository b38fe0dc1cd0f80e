from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from helpers import free_port, require_tool
from hostmond.collectors import _procfs
from hostmond.collectors.memory import MemoryCollector

from hostmond.api import Collector, CollectorContext, Sample

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]


def run(proc: str, **cfg: object) -> tuple[list[Sample], Collector]:
    c = MemoryCollector(MemoryCollector.config_class(**cfg), CollectorContext(proc_root=proc, sys_root="/sys", rootfs="/"))
    return list(c.collect()), c


def assert_declared(samples: list[Sample]) -> None:
    specs = {m.name: m for m in MemoryCollector.metrics}
    for s in samples:
        assert s.name in specs, f"{s.name} not declared"
        assert tuple(s.labels) == specs[s.name].labels
        assert s.type == specs[s.name].type


def test_meminfo_names_follow_node_exporter() -> None:
    assert _procfs.meminfo_metric_name("Active(anon)", True) == "node_memory_Active_anon_bytes"
    assert _procfs.meminfo_metric_name("HugePages_Total", False) == "node_memory_HugePages_Total"
    assert _procfs.meminfo_metric_name("MemAvailable", True) == "node_memory_MemAvailable_bytes"


def test_parse_meminfo_kb_to_bytes_and_unitless_counts() -> None:
    v = _procfs.parse_meminfo("MemTotal:       24683656 kB\nActive(file):     112168 kB\nHugePages_Free:        3\n")
    assert v == {
        "node_memory_MemTotal_bytes": 24683656 * 1024,
        "node_memory_Active_file_bytes": 112168 * 1024,
        "node_memory_HugePages_Free": 3,
    }
    with pytest.raises(ValueError):
        _procfs.parse_meminfo("MemTotal: 5 MB\n")


def test_parse_vmstat() -> None:
    assert _procfs.parse_vmstat("pgpgin 1989981\npswpout 34\nbroken\n") == {"pgpgin": 1989981, "pswpout": 34}


def test_fixture_tree_exact_values() -> None:
    out, c = run(str(FIX / "proc"))
    assert_declared(out)
    v = {s.name: s.value for s in out}
    assert v["node_memory_MemTotal_bytes"] == 24683656 * 1024
    assert v["node_memory_MemAvailable_bytes"] == 24328816 * 1024
    assert v["node_memory_Active_anon_bytes"] == 28668 * 1024
    assert v["node_memory_SwapTotal_bytes"] == 2097148 * 1024
    assert v["node_memory_SwapFree_bytes"] == 2097148 * 1024
    assert v["node_memory_VmallocTotal_bytes"] == 34359738367 * 1024
    assert v["node_memory_HugePages_Total"] == 4 and v["node_memory_HugePages_Free"] == 3
    assert v["node_memory_Hugetlb_bytes"] == 8192 * 1024
    # every meminfo line becomes a series
    assert len([n for n in v if n.startswith("node_memory_")]) == len((FIX / "proc" / "meminfo").read_text().splitlines())
    assert v["node_vmstat_pswpin"] == 12 and v["node_vmstat_pswpout"] == 34 and v["node_vmstat_oom_kill"] == 2
    assert v["node_vmstat_pgmajfault"] == 1683
    assert "node_vmstat_nr_free_pages" not in v
    assert v["node_pressure_memory_waiting_seconds_total"] == pytest.approx(1.25)
    assert v["node_pressure_memory_stalled_seconds_total"] == pytest.approx(0.75)
    assert c.take_partial_errors() == {}


def test_unknown_meminfo_field_is_skipped_not_fatal(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 10 kB\nFutureThing: 5 kB\n")
    out, c = run(str(proc))
    assert [(s.name, s.value) for s in out] == [("node_memory_MemTotal_bytes", 10240)]
    assert c.take_partial_errors() == {"vmstat_unreadable": 1}


def test_no_psi_no_pressure_series(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(FIX / "proc" / "meminfo", proc / "meminfo")
    shutil.copy(FIX / "proc" / "vmstat", proc / "vmstat")
    out, c = run(str(proc))
    assert not [s for s in out if s.name.startswith("node_pressure")]
    assert c.take_partial_errors() == {}


def test_every_declared_meminfo_metric_has_a_unique_name() -> None:
    names = [m.name for m in MemoryCollector.metrics]
    assert len(names) == len(set(names))


def test_real_proc_smoke() -> None:
    out, c = run("/proc")
    assert_declared(out)
    v = {s.name: s.value for s in out}
    assert 0 < v["node_memory_MemAvailable_bytes"] <= v["node_memory_MemTotal_bytes"]
    assert v["node_memory_MemTotal_bytes"] > 64 * 2**20
    assert v["node_memory_SwapFree_bytes"] <= v["node_memory_SwapTotal_bytes"]
    assert c.take_partial_errors() == {}


def test_same_series_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    proc = str(FIX / "proc")
    theirs = nodeexp.scrape(binary, proc, str(FIX / "sys"), ["meminfo", "vmstat", "pressure"], free_port())
    out, _ = run(proc)
    names = {s.name for s in out}
    assert len([k for k in theirs if k[0].startswith("node_memory_")]) > 40
    assert nodeexp.compare(nodeexp.ours(out), theirs, names) == []


def test_vmstat_selected_matches_parsing_everything_on_the_real_file() -> None:
    from hostmond.collectors.memory import _VMSTAT, vmstat_selected

    text = Path("/proc/vmstat").read_text()
    every = _procfs.parse_vmstat(text)
    assert vmstat_selected(text) == {k: v for k, v in every.items() if k in _VMSTAT}
    assert vmstat_selected("pgpgin 1989981\npswpout 34\nbroken\npgfault x\nnr_free_pages 5\n") == {"pgpgin": 1989981, "pswpout": 34}
