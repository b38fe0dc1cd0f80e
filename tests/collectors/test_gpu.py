"""The gpu collector against a fake NVML module (same names as pynvml) and, where installed, the real pynvml."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hostmond.agent.tenancy import Tenancy, TenantRule
from hostmond.collectors.gpu import (
    FIELDS,
    THROTTLE_REASONS,
    GpuCollector,
    GpuConfig,
    GpuInitError,
)

from hostmond.api import CollectorContext, CollectorUnavailable, Sample

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("hostmon_fake_nvml", _HERE / "fake_nvml.py")
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
sys.modules["hostmon_fake_nvml"] = fake
_spec.loader.exec_module(fake)
FakeGpu, FakeNVML, E = fake.FakeGpu, fake.FakeNVML, fake.ERROR_CODES

UUID0 = "GPU-00000000-1111-2222-3333-444444444444"
UUID1 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
L0 = {"gpu": "0", "uuid": UUID0, "name": "NVIDIA H100 80GB HBM3"}
MiB = 1024 * 1024


# -- helpers ---------------------------------------------------------------------------
def make(
    monkeypatch: pytest.MonkeyPatch,
    nvml: Any,
    config: GpuConfig | None = None,
    **ctx: Any,
) -> GpuCollector:
    monkeypatch.setattr(GpuCollector, "nvml_loader", staticmethod(lambda: nvml))
    return GpuCollector(config or GpuConfig(), CollectorContext(**ctx))


def by_key(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for s in samples:
        key = (s.name, tuple(sorted(s.labels.items())))
        assert key not in out, f"duplicate series {key}"
        out[key] = s.value
    return out


def value(samples: list[Sample], metric: str, /, **labels: str) -> float | None:
    """The one sample of ``metric`` whose labels include ``labels`` (None when absent)."""
    found = [s for s in samples if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0].value if found else None


def names(samples: list[Sample]) -> set[str]:
    return {s.name for s in samples}


def field_errors(samples: list[Sample], gpu: str = "0") -> dict[str, float]:
    return {
        s.labels["field"]: s.value
        for s in samples
        if s.name == "hostmon_gpu_field_errors_total" and s.labels["gpu"] == gpu
    }


# -- normal path ---------------------------------------------------------------------------
def test_every_figure_is_reported_in_base_units_with_gpu_labels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, "train")
    nvml = FakeNVML([FakeGpu(fan_percent=55, throttle_mask=0x4 | 0x20, compute_procs=[(10, 300 * MiB)])])
    c = make(monkeypatch, nvml, GpuConfig(pcie_throughput=True), proc_root=str(tmp_path))
    c.start()
    got = by_key(list(c.collect()))

    def k(name: str, **extra: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (name, tuple(sorted({**L0, **extra}.items())))

    expected = {
        k("hostmon_gpu_up"): 1.0,
        k("hostmon_gpu_utilization_ratio"): 0.37,
        k("hostmon_gpu_memory_utilization_ratio"): 0.12,
        k("hostmon_gpu_memory_total_bytes"): 85_520_809_984.0,
        k("hostmon_gpu_memory_used_bytes"): 1_073_741_824.0,
        k("hostmon_gpu_memory_free_bytes"): float(85_520_809_984 - 566_231_040 - 1_073_741_824),
        k("hostmon_gpu_memory_reserved_bytes"): 566_231_040.0,
        k("hostmon_gpu_temperature_celsius"): 41.0,
        k("hostmon_gpu_power_watts"): 71.234,
        k("hostmon_gpu_power_limit_watts"): 700.0,
        k("hostmon_gpu_sm_clock_hertz"): 1_980_000_000.0,
        k("hostmon_gpu_memory_clock_hertz"): 2_619_000_000.0,
        k("hostmon_gpu_fan_speed_ratio"): 0.55,
        k("hostmon_gpu_pcie_throughput_bytes_per_second", direction="tx"): 2048 * 1024.0,
        k("hostmon_gpu_pcie_throughput_bytes_per_second", direction="rx"): 4096 * 1024.0,
        k("hostmon_gpu_ecc_errors_total", type="corrected"): 3.0,
        k("hostmon_gpu_ecc_errors_total", type="uncorrected"): 0.0,
        k("hostmon_gpu_processes"): 1.0,
        k("hostmon_gpu_process_memory_used_bytes", groupname="train", tenant_id="default"): 300.0 * MiB,
    }
    for _, reason in THROTTLE_REASONS:
        expected[k("hostmon_gpu_throttle_reason", reason=reason)] = 1.0 if reason in ("sw_power_cap", "sw_thermal_slowdown") else 0.0
    expected[k("hostmon_gpu_throttle_reason", reason="other")] = 0.0
    for f in FIELDS:
        expected[k("hostmon_gpu_field_errors_total", field=f)] = 0.0
    assert got == pytest.approx(expected)
    assert c.take_partial_errors() == {}


def test_samples_carry_exactly_the_labels_their_spec_declares(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nvml = FakeNVML([FakeGpu(fan_percent=30, compute_procs=[(1, 5)])])
    c = make(monkeypatch, nvml, GpuConfig(pcie_throughput=True), proc_root=str(tmp_path))
    c.start()
    samples = list(c.collect())
    specs = {m.name: m for m in GpuCollector.metrics}
    for s in samples:
        assert set(s.labels) == set(specs[s.name].labels), s
        assert s.type == specs[s.name].type
    assert names(samples) == set(specs), "every declared metric is emitted on a fully working GPU"


def test_two_gpus_are_reported_apart_by_index_and_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML([FakeGpu(temperature=40), FakeGpu(uuid=UUID1, name="NVIDIA A100-SXM4-40GB", temperature=63)])
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_temperature_celsius", gpu="0", uuid=UUID0) == 40.0
    assert value(s, "hostmon_gpu_temperature_celsius", gpu="1", uuid=UUID1, name="NVIDIA A100-SXM4-40GB") == 63.0


def test_pcie_is_not_sampled_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML()
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert "hostmon_gpu_pcie_throughput_bytes_per_second" not in names(s)
    assert nvml.calls["nvmlDeviceGetPcieThroughput"] == 0


def test_memory_falls_back_to_v1_where_the_v2_call_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML(has_memory_v2=False)
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_memory_used_bytes") == 1_073_741_824 + 566_231_040
    assert "hostmon_gpu_memory_reserved_bytes" not in names(s)
    assert c.take_partial_errors() == {}
    list(c.collect())
    assert nvml.calls["nvmlDeviceGetMemoryInfo"] == 3, "v2 is tried once, then v1 only"


def test_throttle_uses_the_older_call_name_when_the_bindings_lack_the_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML([FakeGpu(throttle_mask=0x40 | 0x800)], has_event_reasons=False)
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_throttle_reason", reason="hw_thermal_slowdown") == 1.0
    assert value(s, "hostmon_gpu_throttle_reason", reason="other") == 1.0, "an unknown bit lands in other"
    assert value(s, "hostmon_gpu_throttle_reason", reason="gpu_idle") == 0.0
    assert len([x for x in s if x.name == "hostmon_gpu_throttle_reason"]) == len(THROTTLE_REASONS) + 1


def test_throttle_uses_the_older_call_when_the_driver_lacks_the_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(throttle_mask=0x8, errors={"nvmlDeviceGetCurrentClocksEventReasons": E["NVML_ERROR_FUNCTION_NOT_FOUND"]})
    nvml = FakeNVML([gpu])
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_throttle_reason", reason="hw_slowdown") == 1.0
    list(c.collect())
    assert nvml.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1, "the working name is remembered"
    assert nvml.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 2
    assert c.take_partial_errors() == {}


# -- error paths -------------------------------------------------------------------------------
def test_a_field_not_supported_is_left_out_quietly_and_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(fan_percent=None, errors={"nvmlDeviceGetTotalEccErrors": E["NVML_ERROR_NOT_SUPPORTED"]})
    nvml = FakeNVML([gpu])
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert "hostmon_gpu_fan_speed_ratio" not in names(s)
    assert "hostmon_gpu_ecc_errors_total" not in names(s)
    assert value(s, "hostmon_gpu_up") == 1.0
    assert value(s, "hostmon_gpu_temperature_celsius") == 41.0
    assert set(field_errors(s).values()) == {0.0}
    assert c.take_partial_errors() == {}
    list(c.collect())
    assert nvml.calls["nvmlDeviceGetFanSpeed"] == 1
    assert nvml.calls["nvmlDeviceGetTotalEccErrors"] == 1
    assert nvml.calls["nvmlDeviceGetTemperature"] == 2


@pytest.mark.parametrize(
    ("function", "field", "gone"),
    [
        ("nvmlDeviceGetTemperature", "temperature", "hostmon_gpu_temperature_celsius"),
        ("nvmlDeviceGetUtilizationRates", "utilization", "hostmon_gpu_utilization_ratio"),
        ("nvmlDeviceGetPowerUsage", "power", "hostmon_gpu_power_watts"),
        ("nvmlDeviceGetComputeRunningProcesses", "processes", "hostmon_gpu_processes"),
        ("nvmlDeviceGetMemoryInfo", "memory", "hostmon_gpu_memory_used_bytes"),
    ],
)
@pytest.mark.parametrize("code", ["NVML_ERROR_UNKNOWN", "NVML_ERROR_NO_PERMISSION", "NVML_ERROR_TIMEOUT"])
def test_a_failing_field_is_counted_and_the_rest_kept(
    monkeypatch: pytest.MonkeyPatch, function: str, field: str, gone: str, code: str
) -> None:
    nvml = FakeNVML([FakeGpu(errors={function: E[code]})])
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert gone not in names(s)
    assert value(s, "hostmon_gpu_up") == 1.0
    assert value(s, "hostmon_gpu_power_limit_watts") == 700.0
    assert field_errors(s)[field] == 1.0
    assert sum(field_errors(s).values()) == 1.0
    assert c.take_partial_errors() == {"field_error": 1}
    s = list(c.collect())
    assert field_errors(s)[field] == 2.0, "a failing field is retried and counted every cycle"


def test_a_lost_gpu_reads_down_and_the_other_gpu_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML([FakeGpu(), FakeGpu(uuid=UUID1)])
    c = make(monkeypatch, nvml)
    c.start()
    nvml.gpus[1].lost = True
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up", gpu="0") == 1.0
    assert value(s, "hostmon_gpu_up", gpu="1", uuid=UUID1) == 0.0
    assert value(s, "hostmon_gpu_temperature_celsius", gpu="0") == 41.0
    assert value(s, "hostmon_gpu_temperature_celsius", gpu="1") is None
    assert field_errors(s, "1")["utilization"] == 1.0, "the first read that failed is counted"
    assert sum(field_errors(s, "1").values()) == 1.0, "nothing else is asked of a lost GPU"
    assert c.take_partial_errors() == {"field_error": 1, "gpu_lost": 1}
    # still lost: the handle is taken afresh and fails
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up", gpu="1") == 0.0
    assert field_errors(s, "1")["device"] == 1.0
    # back (after a reset): reported again under the same labels
    nvml.gpus[1].lost = False
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up", gpu="1", uuid=UUID1) == 1.0
    assert value(s, "hostmon_gpu_temperature_celsius", gpu="1") == 41.0


def test_a_driver_mismatch_after_start_fails_every_field_and_reads_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML()
    c = make(monkeypatch, nvml)
    c.start()
    assert value(list(c.collect()), "hostmon_gpu_up") == 1.0  # learns: no fan on this board
    mismatch = E["NVML_ERROR_LIB_RM_VERSION_MISMATCH"]
    nvml.gpus[0].errors = {fn: mismatch for fn in fake.FUNCTION_NAMES}
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up") == 0.0
    errs = field_errors(s)
    assert errs["device"] == 0.0 and errs["pcie"] == 0.0 and errs["fan"] == 0.0  # not read: off / unsupported
    assert all(errs[f] == 1.0 for f in ("utilization", "memory", "temperature", "ecc", "throttle", "processes"))
    assert names(s) == {"hostmon_gpu_up", "hostmon_gpu_field_errors_total"}


def test_a_gpu_that_fails_at_start_is_retried_each_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML([FakeGpu(), FakeGpu(uuid=UUID1, errors={"nvmlDeviceGetUUID": E["NVML_ERROR_UNKNOWN"]})])
    c = make(monkeypatch, nvml)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up", gpu="1", uuid="unknown", name="unknown") == 0.0
    assert field_errors(s, "1")["device"] == 1.0
    assert value(s, "hostmon_gpu_up", gpu="0") == 1.0
    nvml.gpus[1].errors = {}
    s = list(c.collect())
    assert value(s, "hostmon_gpu_up", gpu="1", uuid=UUID1) == 1.0


# -- off by itself ----------------------------------------------------------------------------------
def test_missing_bindings_make_the_collector_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_module() -> Any:
        raise ModuleNotFoundError("No module named 'pynvml'", name="pynvml")

    monkeypatch.setattr(GpuCollector, "nvml_loader", staticmethod(no_module))
    c = GpuCollector(GpuConfig(), CollectorContext())
    with pytest.raises(CollectorUnavailable, match="nvidia-ml-py"):
        c.start()


@pytest.mark.parametrize("code", ["NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"])
def test_no_library_or_driver_makes_the_collector_unavailable(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    c = make(monkeypatch, FakeNVML(init_error=E[code]))
    with pytest.raises(CollectorUnavailable):
        c.start()


def test_no_gpu_makes_the_collector_unavailable_and_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML([])
    c = make(monkeypatch, nvml)
    with pytest.raises(CollectorUnavailable, match="no GPU"):
        c.start()
    assert nvml.initialized == 0
    assert nvml.calls["nvmlShutdown"] == 1


@pytest.mark.parametrize("code", ["NVML_ERROR_LIB_RM_VERSION_MISMATCH", "NVML_ERROR_NO_PERMISSION"])
def test_a_broken_nvml_at_start_is_a_failure_not_no_data(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    c = make(monkeypatch, FakeNVML(init_error=E[code]))
    with pytest.raises(GpuInitError) as info:
        c.start()
    assert not isinstance(info.value, CollectorUnavailable)


def test_stop_shuts_nvml_down(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = FakeNVML()
    c = make(monkeypatch, nvml)
    c.start()
    assert nvml.initialized == 1
    c.stop()
    assert nvml.initialized == 0


def test_importing_the_module_does_not_import_pynvml() -> None:
    code = "import sys, hostmond.collectors.gpu; print('pynvml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_the_nvml_library_the_real_loader_gives_up_before_importing_pynvml(tmp_path: Path) -> None:
    """The default loader on a host without libnvidia-ml: unavailable, and pynvml (~2 MB of RSS) never imported."""
    code = (
        "import ctypes, sys\n"
        "from hostmond.api import CollectorContext, CollectorUnavailable\n"
        "from hostmond.collectors.gpu import NVML_LIBRARY, GpuCollector, GpuConfig\n"
        "try:\n"
        "    ctypes.CDLL(NVML_LIBRARY)\n"
        "    print('HAS-NVML')\n"
        "    sys.exit(0)\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        "    GpuCollector(GpuConfig(), CollectorContext()).start()\n"
        "except CollectorUnavailable as e:\n"
        "    print('UNAVAILABLE', e)\n"
        "print('pynvml' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    if out.startswith("HAS-NVML"):
        pytest.skip("this host has libnvidia-ml")
    assert "UNAVAILABLE NVML cannot start here: NVML Shared Library Not Found" in out, out
    assert out.strip().endswith("False"), out


def test_the_collector_is_registered_as_gpu() -> None:
    from hostmond.agent.registry import discover

    found, _errors = discover()
    assert found["gpu"] is GpuCollector


# -- per-process memory ----------------------------------------------------------------------------
def fake_proc(root: Path, pid: int, comm: str, cgroup: str = "0::/system.slice/x.service\n") -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "cgroup").write_text(cgroup)


def test_process_memory_keeps_the_top_groups_and_folds_the_rest_per_tenant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    acme, globex = "0::/tenants/acme/job.scope\n", "0::/tenants/globex/job.scope\n"
    procs = {
        # pid: (comm, cgroup, MiB)
        101: ("python3", acme, 4000),
        102: ("python3", acme, 3000),  # same name and tenant: one group of 7000
        103: ("python3", globex, 5000),  # same name, other tenant: its own group
        104: ("tritonserver", globex, 6000),
        105: ("ollama", acme, 100),
        106: ("blender", acme, 200),
        107: ("stress", globex, 50),
        109: ("Xorg", "0::/system.slice/display-manager.service\n", 20),  # no rule: the default tenant
    }
    for pid, (comm, cg, _) in procs.items():
        fake_proc(tmp_path, pid, comm, cg)
    gpu = FakeGpu(
        compute_procs=[(pid, mib * MiB) for pid, (_, _, mib) in procs.items() if pid != 106]
        + [(108, None)],  # NVML cannot size it: counted, not sized
        graphics_procs=[(106, 200 * MiB), (101, None)],  # 101 has both contexts: counted once, sized once
    )
    tenancy = Tenancy(
        [TenantRule("acme", cgroup_regex="/acme/"), TenantRule("globex", cgroup_regex="/globex/")],
        default_tenant="hostco",
    )
    c = make(monkeypatch, FakeNVML([gpu]), GpuConfig(top_processes=3), proc_root=str(tmp_path), tenancy=tenancy)
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_processes") == 9.0
    mem = {
        (x.labels["groupname"], x.labels["tenant_id"]): x.value / MiB
        for x in s
        if x.name == "hostmon_gpu_process_memory_used_bytes"
    }
    assert mem == {
        ("python3", "acme"): 7000,
        ("tritonserver", "globex"): 6000,
        ("python3", "globex"): 5000,
        ("other", "acme"): 300,  # blender + ollama
        ("other", "globex"): 50,  # stress
        ("other", "hostco"): 20,  # Xorg
    }
    assert c.take_partial_errors() == {}


def test_process_names_are_bounded_and_unknown_pids_are_named_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_proc(tmp_path, 1, "x" * 200 + "\x1b[31m")
    gpu = FakeGpu(compute_procs=[(1, 10 * MiB), (2, 20 * MiB)])  # pid 2 has no /proc entry (gone, other namespace)
    c = make(monkeypatch, FakeNVML([gpu]), proc_root=str(tmp_path))
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_process_memory_used_bytes", groupname="x" * 15) == 10 * MiB
    assert value(s, "hostmon_gpu_process_memory_used_bytes", groupname="unknown") == 20 * MiB
    assert {x.labels["tenant_id"] for x in s if "tenant_id" in x.labels} == {"default"}, "no tenancy: the agent's tenant"


def test_a_real_process_is_named_from_the_real_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    me = os.getpid()
    comm = Path(f"/proc/{me}/comm").read_text().strip()
    c = make(monkeypatch, FakeNVML([FakeGpu(compute_procs=[(me, 64 * MiB)])]), proc_root="/proc")
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_process_memory_used_bytes", groupname=comm) == 64 * MiB


def test_a_failing_tenancy_keeps_the_process_series_under_the_agents_tenant(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Broken:
        def tenant_for(self, uid: int, cgroup_reader: Any) -> str:
            raise RuntimeError("rules not loaded")

    fake_proc(tmp_path, 7, "train")
    c = make(
        monkeypatch,
        FakeNVML([FakeGpu(compute_procs=[(7, MiB)])]),
        proc_root=str(tmp_path),
        tenancy=Broken(),
        tags={"tenant_id": "hostco"},
    )
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_process_memory_used_bytes", groupname="train", tenant_id="hostco") == MiB
    assert c.take_partial_errors() == {"tenant_lookup": 1}


def test_a_process_named_other_never_gets_its_own_series(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_proc(tmp_path, 1, "other")
    fake_proc(tmp_path, 2, "train")
    fake_proc(tmp_path, 3, "eval")
    gpu = FakeGpu(compute_procs=[(1, 900 * MiB), (2, 500 * MiB), (3, 100 * MiB)])
    c = make(monkeypatch, FakeNVML([gpu]), GpuConfig(top_processes=1), proc_root=str(tmp_path))
    c.start()
    mem = {x.labels["groupname"]: x.value / MiB for x in c.collect() if x.name == "hostmon_gpu_process_memory_used_bytes"}
    assert mem == {"train": 500, "other": 1000}


def test_top_processes_zero_reports_only_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    c = make(monkeypatch, FakeNVML([FakeGpu(compute_procs=[(1, 1), (2, 2)])]), GpuConfig(top_processes=0))
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_processes") == 2.0
    assert "hostmon_gpu_process_memory_used_bytes" not in names(s)


def test_graphics_processes_count_when_compute_listing_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(
        graphics_procs=[(5, MiB)],
        errors={"nvmlDeviceGetComputeRunningProcesses": E["NVML_ERROR_NOT_SUPPORTED"]},
    )
    c = make(monkeypatch, FakeNVML([gpu]))
    c.start()
    s = list(c.collect())
    assert value(s, "hostmon_gpu_processes") == 1.0
    assert c.take_partial_errors() == {}


@pytest.mark.parametrize(("bad", "reason"), [(-1, "between 0 and 50"), (51, "between 0 and 50"), (True, "integer"), ("5", "integer")])
def test_a_bad_top_processes_names_file_key_and_reason(bad: Any, reason: str) -> None:
    from hostmond.agent.config import load_dataclass

    from hostmond.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_dataclass({"top_processes": bad}, GpuConfig, "/etc/hostmon/hostmon.toml", "collectors.gpu")
    assert info.value.file == "/etc/hostmon/hostmon.toml"
    assert info.value.key == "collectors.gpu.top_processes"
    assert reason in info.value.reason


def test_the_default_config_loads_from_an_empty_section() -> None:
    from hostmond.agent.config import load_dataclass

    cfg = load_dataclass({}, GpuConfig, "hostmon.toml", "collectors.gpu")
    assert (cfg.top_processes, cfg.pcie_throughput) == (5, False)


# -- the fake against the real bindings -------------------------------------------------------------
def _real_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("nvidia-ml-py is not installed; CI installs the gpu extra (pip install -e '.[gpu]')")
        pytest.skip("nvidia-ml-py is not installed")
    return pynvml


def test_the_fake_has_the_real_modules_names_and_values() -> None:
    real = _real_pynvml()
    for name in fake.PUBLIC_NAMES:
        assert hasattr(real, name), name
        if not name.startswith("NVMLError"):
            assert getattr(real, name) == getattr(fake, name), name
    for name in fake.FUNCTION_NAMES:
        assert callable(getattr(real, name, None)), name
    for name, cls in fake.ERROR_CLASSES.items():
        real_cls = getattr(real, name)
        assert issubclass(real_cls, real.NVMLError)
        assert type(real.NVMLError(cls().value)) is real_cls, name
        assert type(fake.NVMLError(cls().value)) is cls, name
    for bit, _reason in THROTTLE_REASONS:
        assert bit & real.nvmlClocksThrottleReasonAll


def test_the_real_bindings_without_a_driver_leave_the_collector_unavailable() -> None:
    """The real pynvml: on a host without libnvidia-ml the collector is off by itself."""
    _real_pynvml()
    c = GpuCollector(GpuConfig(), CollectorContext())
    if ctypes.util.find_library("nvidia-ml") is not None or os.path.exists("/dev/nvidiactl"):
        c.start()  # an NVIDIA host: it must start and report its GPUs
        try:
            s = list(c.collect())
            assert value(s, "hostmon_gpu_up", gpu="0") == 1.0
        finally:
            c.stop()
        return
    with pytest.raises(CollectorUnavailable, match="NVML"):
        c.start()


# -- bench/gpu_check.sh, against a fake NVML and a fake nvidia-smi ------------------------------------
SCRIPT = _HERE.parent.parent / "bench" / "gpu_check.sh"


def _run_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "GPU_CHECK_RUNS": "10", "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=120, check=False)


def test_gpu_check_passes_when_hostmon_and_nvidia_smi_agree() -> None:
    r = _run_check("--self-test")
    assert "comparison: PASS" in r.stdout, r.stdout + r.stderr
    assert "temperature   hostmon      41.00 C" in r.stdout
    assert "cost target: median" in r.stdout  # printed; its value is a bench figure, never asserted here


@pytest.mark.parametrize("skew", ["temperature", "memory", "na"])
def test_gpu_check_fails_when_a_figure_disagrees(skew: str) -> None:
    r = _run_check("--self-test", GPU_CHECK_SKEW=skew)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "comparison: FAIL (1 disagreements)" in r.stdout
    assert "result: FAIL" in r.stdout


def test_gpu_check_says_so_on_a_machine_without_a_gpu(tmp_path: Path) -> None:
    stub = tmp_path / "nvidia-smi"
    stub.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2\nexit 9\n")
    stub.chmod(0o755)
    r = _run_check(PATH=f"{tmp_path}:{os.environ['PATH']}")
    assert r.returncode == 77, r.stdout + r.stderr
    assert "no NVIDIA GPU on this machine" in r.stdout


def test_the_gpu_metrics_pass_promtool_through_the_real_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus)")
        pytest.skip("promtool is missing")
    from hostmond.cli import main

    fake_proc(tmp_path, 1, "python3")
    nvml = FakeNVML([FakeGpu(fan_percent=40, compute_procs=[(1, MiB)]), FakeGpu(uuid=UUID1, lost=True)])
    monkeypatch.setattr(GpuCollector, "nvml_loader", staticmethod(lambda: nvml))
    monkeypatch.setenv("HOSTMON_PATHS__PROC_ROOT", str(tmp_path))
    assert main(["collect", "--once", "--format", "prom", "--collector", "gpu"]) == 0
    text = capsys.readouterr().out
    # lost before start: no identity to read, reported under uuid="unknown", down
    assert re.search(r'^hostmon_gpu_up\{gpu="1",uuid="unknown",name="unknown",[^}]*\} 0(\.0)?$', text, re.MULTILINE), text
    assert re.search(r'^hostmon_gpu_up\{gpu="0",uuid="GPU-00000000-1111-2222-3333-444444444444",[^}]*\} 1(\.0)?$', text, re.MULTILINE)
    assert 'groupname="python3"' in text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
