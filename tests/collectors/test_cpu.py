from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
from helpers import free_port, require_tool
from hostmond.collectors import _procfs
from hostmond.collectors.cpu import CPUCollector

from hostmond.api import Collector, CollectorContext, Sample

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["hostmon_nodeexp"] = nodeexp
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]


def run(cls: type[Collector], proc: str, sys_: str = str(FIX / "sys"), **cfg: object) -> tuple[list[Sample], Collector]:
    c = cls(cls.config_class(**cfg), CollectorContext(proc_root=proc, sys_root=sys_, rootfs="/"))
    out = list(c.collect())
    return out, c


def assert_declared(cls: type[Collector], samples: list[Sample]) -> None:
    specs = {m.name: m for m in cls.metrics}
    for s in samples:
        assert s.name in specs, f"{s.name} not declared"
        assert tuple(sorted(s.labels)) == tuple(sorted(specs[s.name].labels)), (s.name, s.labels)
        assert s.type == specs[s.name].type


def values(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


STAT = """cpu  4741 10 2511 1789926 437 0 79 208 0 0
cpu0 1605 4 1070 895992 105 0 20 106 12 3
cpu1 3136 6 1441 893934 331 0 59 102 0 0
intr 1022874 0 9 0 0 0
ctxt 2179460
btime 1763884800
processes 7453
procs_running 3
procs_blocked 1
softirq 512344 1 139425 1 11227 0 0 7 217009 0 144674
"""


def test_parse_stat_gives_per_cpu_seconds_and_kernel_counters() -> None:
    st = _procfs.parse_stat(STAT, user_hz=100)
    assert set(st.cpus) == {"0", "1"}  # the aggregate "cpu" line is not a CPU
    assert st.cpus["0"].user == pytest.approx(16.05)
    assert st.cpus["1"].idle == pytest.approx(8939.34)
    assert st.cpus["0"].guest == pytest.approx(0.12) and st.cpus["0"].guest_nice == pytest.approx(0.03)
    assert (st.intr, st.ctxt, st.btime, st.processes, st.procs_running, st.procs_blocked) == (
        1022874, 2179460, 1763884800, 7453, 3, 1)


def test_parse_stat_old_kernel_without_steal_or_guest_columns() -> None:
    st = _procfs.parse_stat("cpu0 10 20 30 40\n", user_hz=100)
    assert st.cpus["0"].user == 0.1 and st.cpus["0"].idle == 0.4 and st.cpus["0"].steal == 0.0
    assert st.ctxt is None


def test_parse_loadavg() -> None:
    assert _procfs.parse_loadavg("0.28 0.12 0.04 2/90 7180\n") == (0.28, 0.12, 0.04)
    with pytest.raises(ValueError):
        _procfs.parse_loadavg("0.28\n")


def test_parse_pressure_turns_microseconds_into_seconds() -> None:
    p = _procfs.parse_pressure(
        "some avg10=0.08 avg60=0.52 avg300=0.56 total=8366968\nfull avg10=1.50 avg60=0.00 avg300=0.00 total=2000000\n"
    )
    assert p["some"].total_seconds == pytest.approx(8.366968)
    assert p["some"].avg60 == 0.52
    assert p["full"].total_seconds == 2.0 and p["full"].avg10 == 1.5
    assert list(_procfs.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")) == ["some"]
    with pytest.raises(ValueError):
        _procfs.parse_pressure("some avg10=0.00 total=x\n")


def test_fixture_tree_exact_values() -> None:
    out, c = run(CPUCollector, str(FIX / "proc"))
    assert_declared(CPUCollector, out)
    v = values(out)
    assert v[("node_cpu_seconds_total", (("cpu", "0"), ("mode", "user")))] == pytest.approx(16.05)
    assert v[("node_cpu_seconds_total", (("cpu", "1"), ("mode", "softirq")))] == pytest.approx(0.59)
    assert v[("node_cpu_seconds_total", (("cpu", "1"), ("mode", "steal")))] == pytest.approx(1.02)
    assert v[("node_cpu_guest_seconds_total", (("cpu", "0"), ("mode", "nice")))] == pytest.approx(0.03)
    assert len([s for s in out if s.name == "node_cpu_seconds_total"]) == 2 * 8
    assert v[("node_load1", ())] == 0.28 and v[("node_load5", ())] == 0.12 and v[("node_load15", ())] == 0.04
    assert v[("node_context_switches_total", ())] == 2179460
    assert v[("node_intr_total", ())] == 1022874
    assert v[("node_forks_total", ())] == 7453
    assert v[("node_boot_time_seconds", ())] == 1763884800
    assert v[("node_procs_running", ())] == 3 and v[("node_procs_blocked", ())] == 1
    assert v[("node_pressure_cpu_waiting_seconds_total", ())] == pytest.approx(8.366968)
    assert v[("node_pressure_cpu_stalled_seconds_total", ())] == 0.0
    assert c.take_partial_errors() == {}


def test_no_pressure_file_means_no_pressure_series_and_no_error(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(FIX / "proc" / "stat", proc / "stat")
    shutil.copy(FIX / "proc" / "loadavg", proc / "loadavg")
    out, c = run(CPUCollector, str(proc))
    assert not [s for s in out if s.name.startswith("node_pressure")]
    assert [s for s in out if s.name == "node_load1"]
    assert c.take_partial_errors() == {}


def test_unreadable_loadavg_is_a_partial_error_not_a_failure(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(FIX / "proc" / "stat", proc / "stat")
    out, c = run(CPUCollector, str(proc))
    assert [s for s in out if s.name == "node_cpu_seconds_total"]
    assert c.take_partial_errors() == {"loadavg_unreadable": 1}


def test_missing_proc_stat_raises() -> None:
    with pytest.raises(FileNotFoundError):
        run(CPUCollector, "/nonexistent-proc")


def test_config_switches_off_guest_and_pressure() -> None:
    out, _ = run(CPUCollector, str(FIX / "proc"), guest=False, pressure=False)
    names = {s.name for s in out}
    assert "node_cpu_guest_seconds_total" not in names
    assert not any(n.startswith("node_pressure") for n in names)


def test_real_proc_smoke() -> None:
    out, _ = run(CPUCollector, "/proc", "/sys")
    assert_declared(CPUCollector, out)
    v = values(out)
    ncpu = os.cpu_count() or 1
    assert len([s for s in out if s.name == "node_cpu_seconds_total"]) == ncpu * 8
    assert all(s.value >= 0 for s in out)
    assert v[("node_load1", ())] < 1000
    assert v[("node_procs_running", ())] >= 1  # this test itself is running
    assert v[("node_context_switches_total", ())] > 0


def test_same_series_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    proc = str(FIX / "proc")
    theirs = nodeexp.scrape(binary, proc, str(FIX / "sys"), ["cpu", "loadavg", "stat", "pressure"], free_port())
    out, _ = run(CPUCollector, proc)
    names = {s.name for s in out}
    assert len([k for k in theirs if k[0] == "node_cpu_seconds_total"]) == 16
    problems = nodeexp.compare(nodeexp.ours(out), theirs, names)
    # node_exporter 1.5 predates the PSI "full" line for cpu; newer releases report it under this name.
    problems = [p for p in problems if "node_pressure_cpu_stalled_seconds_total" not in p]
    assert problems == []


def test_parse_stat_reads_the_totals_of_the_long_intr_and_softirq_lines() -> None:
    text = "cpu0 1 2 3 4 5 6 7 8 9 10\nintr 1234 " + " ".join(["7"] * 500) + "\nctxt 99\nsoftirq 55 1 2 3\nprocesses 7\n"
    st = _procfs.parse_stat(text, user_hz=1)
    assert (st.intr, st.ctxt, st.processes) == (1234, 99, 7)
    real = Path("/proc/stat").read_text()
    want = {line.split()[0]: int(line.split()[1]) for line in real.splitlines() if line.startswith(("intr", "ctxt", "btime"))}
    st = _procfs.parse_stat(real)
    assert st.intr is not None and st.intr >= want["intr"] and st.btime == want["btime"]
