"""NVIDIA GPUs through NVML, using NVIDIA's own bindings (``nvidia-ml-py``, module ``pynvml``).

The bindings are an optional extra (``pip install 'hostmon[gpu]'``) and are
imported inside :meth:`GpuCollector.start`, so importing this module costs
nothing. On a host without the bindings, without ``libnvidia-ml``, without a
loaded driver or without a GPU, ``start()`` raises ``CollectorUnavailable``: the
agent notes it once at debug level and never schedules the collector again.

Per GPU (labels ``gpu`` = NVML index, ``uuid``, ``name`` = model name) it reports
utilization, memory, temperature, power, clocks, fan, optionally PCIe throughput,
ECC counts, clock-throttle reasons (a fixed set of series) and the number of
processes using it; per process only the GPU memory of the top few process
groups, grouped by process name and tenant, the rest folded into ``other``.

Errors are per field: a field NVML does not support on this board is left out
quietly (and not asked for again); any other NVML error fails that field only,
counted in ``hostmon_gpu_field_errors_total{field}`` and in the agent's
``hostmon_collector_partial_errors_total{collector="gpu",reason="field_error"}``.
A lost GPU (``GPU_IS_LOST``) reads ``hostmon_gpu_up 0`` and the other GPUs go on.

``GpuCollector.nvml_loader`` is the test seam: it returns the module to use
(``pynvml`` by default; the tests put a fake with the same names there).
docs/gpu.md lists every metric with the NVML call it comes from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorUnavailable,
    HostmonError,
    MetricSpec,
    Sample,
    field,
)

GPU_LABELS = ("gpu", "uuid", "name")

#: Throttle ("clocks event") reason bits, from nvml.h; the series set is fixed: these plus "other".
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)
_KNOWN_THROTTLE_BITS = sum(bit for bit, _ in THROTTLE_REASONS)

#: The fixed vocabulary of the ``field`` label of hostmon_gpu_field_errors_total.
FIELDS: tuple[str, ...] = (
    "device",  # handle, uuid, name
    "utilization",
    "memory",
    "temperature",
    "power",
    "power_limit",
    "sm_clock",
    "memory_clock",
    "fan",
    "pcie",
    "ecc",
    "throttle",
    "processes",
)

OTHER = "other"
UNKNOWN = "unknown"
_MAX_LABEL = 64
_COMM_LEN = 15  # the kernel's TASK_COMM_LEN minus the NUL


NVML_LIBRARY = "libnvidia-ml.so.1"  # the name pynvml itself loads on Linux


def _import_pynvml() -> Any:
    """The bindings, once NVML's library is known to load: on a host without it (most hosts) the
    collector is unavailable without importing pynvml, which alone is ~2 MB of the agent's RSS."""
    if importlib.util.find_spec("pynvml") is None:
        raise ImportError("No module named 'pynvml'")
    import ctypes

    try:
        ctypes.CDLL(NVML_LIBRARY)  # what pynvml.nvmlInit() does first; the loader keeps it loaded for it
    except OSError as e:
        raise CollectorUnavailable(f"NVML cannot start here: NVML Shared Library Not Found ({e})") from None
    return importlib.import_module("pynvml")


def _clean(value: object, limit: int = _MAX_LABEL) -> str:
    """A label value from a device or process string: printable ASCII, bounded length."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(c if " " <= c <= "~" else "?" for c in str(value).strip())
    return text[:limit]


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _check_top_processes(n: int) -> None:
    if not 0 <= n <= 50:
        raise ValueError(f"must be between 0 and 50, not {n}")


@dataclasses.dataclass
class GpuConfig(CollectorConfig):
    top_processes: int = field(
        5,
        "Per GPU, how many process groups (same process name and tenant) get their own GPU memory series; "
        "the rest are summed into process=\"other\"; 0 turns per-process series off.",
        check=_check_top_processes,
    )
    pcie_throughput: bool = field(
        False,
        "Report PCIe throughput; off by default because NVML samples it over 20 ms per direction, "
        "which adds about 40 ms per GPU to every collection.",
    )



class GpuInitError(HostmonError):
    """NVML is there but would not start (driver/library version mismatch, no permission, ...)."""


class _Unsupported(Exception):
    """This field is not available on this GPU (NVML NOT_SUPPORTED, or the call does not exist)."""


class _Gpu:
    """What the collector remembers about one GPU between cycles."""

    __slots__ = ("errors", "handle", "index", "labels", "mem_v2", "throttle_fn", "unsupported")

    def __init__(self, index: int) -> None:
        self.index = index
        self.handle: Any = None
        self.labels: dict[str, str] = {"gpu": str(index), "uuid": UNKNOWN, "name": UNKNOWN}
        self.unsupported: set[str] = set()
        self.errors: dict[str, int] = dict.fromkeys(FIELDS, 0)
        self.mem_v2: bool | None = None  # None: not tried yet
        self.throttle_fn: str | None = None


def _m(name: str, type_: str, help_: str, unit: str = "", labels: tuple[str, ...] = GPU_LABELS) -> MetricSpec:
    return MetricSpec(name, type_, help_, labels, unit)


class GpuCollector(Collector[GpuConfig]):
    name = "gpu"
    default_enabled = True
    config_class = GpuConfig
    config: GpuConfig

    #: Returns the NVML module. Tests replace it with one returning a fake of the same shape.
    nvml_loader: ClassVar[Callable[[], Any]] = staticmethod(_import_pynvml)

    metrics = (
        _m("hostmon_gpu_up", GAUGE, "1 when the GPU answered this cycle, 0 when it is lost (NVML GPU_IS_LOST), has no handle, or every read failed."),
        _m("hostmon_gpu_utilization_ratio", GAUGE, "Fraction of the last sample period in which a kernel ran on the GPU, 0-1 (NVML nvmlDeviceGetUtilizationRates .gpu / 100).", "ratio"),
        _m("hostmon_gpu_memory_utilization_ratio", GAUGE, "Fraction of the last sample period in which device memory was read or written, 0-1 (NVML nvmlDeviceGetUtilizationRates .memory / 100).", "ratio"),
        _m("hostmon_gpu_memory_total_bytes", GAUGE, "Device memory installed (NVML nvmlDeviceGetMemoryInfo .total).", "bytes"),
        _m("hostmon_gpu_memory_used_bytes", GAUGE, "Device memory in use, without what the driver reserves where the v2 call exists (NVML nvmlDeviceGetMemoryInfo .used).", "bytes"),
        _m("hostmon_gpu_memory_free_bytes", GAUGE, "Device memory free (NVML nvmlDeviceGetMemoryInfo .free).", "bytes"),
        _m("hostmon_gpu_memory_reserved_bytes", GAUGE, "Device memory reserved by the driver and firmware (NVML nvmlDeviceGetMemoryInfo v2 .reserved).", "bytes"),
        _m("hostmon_gpu_temperature_celsius", GAUGE, "GPU core temperature (NVML nvmlDeviceGetTemperature, NVML_TEMPERATURE_GPU).", "celsius"),
        _m("hostmon_gpu_power_watts", GAUGE, "Power drawn by the board (NVML nvmlDeviceGetPowerUsage, mW / 1000).", "watts"),
        _m("hostmon_gpu_power_limit_watts", GAUGE, "Power limit the driver enforces (NVML nvmlDeviceGetEnforcedPowerLimit, mW / 1000).", "watts"),
        _m("hostmon_gpu_sm_clock_hertz", GAUGE, "Current SM clock (NVML nvmlDeviceGetClockInfo, NVML_CLOCK_SM, MHz x 1e6).", "hertz"),
        _m("hostmon_gpu_memory_clock_hertz", GAUGE, "Current memory clock (NVML nvmlDeviceGetClockInfo, NVML_CLOCK_MEM, MHz x 1e6).", "hertz"),
        _m("hostmon_gpu_fan_speed_ratio", GAUGE, "Intended fan speed as a fraction of the maximum, boards with a fan only (NVML nvmlDeviceGetFanSpeed / 100).", "ratio"),
        _m(
            "hostmon_gpu_pcie_throughput_bytes_per_second",
            GAUGE,
            "PCIe throughput over a 20 ms sample, direction tx or rx; only with pcie_throughput = true (NVML nvmlDeviceGetPcieThroughput, KB/s x 1024).",
            "bytes_per_second",
            GPU_LABELS + ("direction",),
        ),
        _m(
            "hostmon_gpu_ecc_errors_total",
            COUNTER,
            "ECC memory errors since the driver loaded, type corrected or uncorrected (NVML nvmlDeviceGetTotalEccErrors, NVML_VOLATILE_ECC).",
            "",
            GPU_LABELS + ("type",),
        ),
        _m(
            "hostmon_gpu_throttle_reason",
            GAUGE,
            "1 when this reason holds the clocks down now, else 0; a fixed set of reasons plus other (NVML nvmlDeviceGetCurrentClocksEventReasons bits).",
            "",
            GPU_LABELS + ("reason",),
        ),
        _m("hostmon_gpu_processes", GAUGE, "Processes with a compute or graphics context on the GPU (NVML nvmlDeviceGetComputeRunningProcesses + GetGraphicsRunningProcesses)."),
        _m(
            "hostmon_gpu_process_memory_used_bytes",
            GAUGE,
            "GPU memory of the top process groups by name and tenant, the rest summed per tenant as groupname=other (NVML usedGpuMemory of the running processes).",
            "bytes",
            GPU_LABELS + ("groupname", "tenant_id"),
        ),
        _m(
            "hostmon_gpu_field_errors_total",
            COUNTER,
            "NVML reads that failed with an error other than NOT_SUPPORTED, by field.",
            "",
            GPU_LABELS + ("field",),
        ),
    )

    def __init__(self, config: CollectorConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self._nvml: Any = None
        self._gpus: list[_Gpu] = []
        self._err_not_supported = -1
        self._err_function_not_found = -1
        self._err_version_mismatch = -1
        self._err_gpu_lost = -1

    # -- life cycle --------------------------------------------------------------
    def start(self) -> None:
        try:
            nvml = type(self).nvml_loader()
        except ImportError as e:
            raise CollectorUnavailable(
                "the NVML bindings (nvidia-ml-py, module pynvml) are not installed; install hostmon[gpu]"
            ) from e

        def code(name: str, default: int) -> int:
            return int(getattr(nvml, name, default))

        unavailable = {
            code("NVML_ERROR_LIBRARY_NOT_FOUND", 12),
            code("NVML_ERROR_DRIVER_NOT_LOADED", 9),
            code("NVML_ERROR_GPU_NOT_FOUND", 28),
        }
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            if getattr(e, "value", None) in unavailable:
                raise CollectorUnavailable(f"NVML cannot start here: {e}") from e
            raise GpuInitError(f"NVML failed to initialise: {e} ({type(e).__name__})") from e
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as e:
            self._shutdown(nvml)
            raise GpuInitError(f"NVML could not count the GPUs: {e} ({type(e).__name__})") from e
        if count <= 0:
            self._shutdown(nvml)
            raise CollectorUnavailable("NVML started but reports no GPU on this host")
        self._nvml = nvml
        self._err_not_supported = code("NVML_ERROR_NOT_SUPPORTED", 3)
        self._err_function_not_found = code("NVML_ERROR_FUNCTION_NOT_FOUND", 13)
        self._err_version_mismatch = code("NVML_ERROR_ARGUMENT_VERSION_MISMATCH", 25)
        self._err_gpu_lost = code("NVML_ERROR_GPU_IS_LOST", 15)
        self._gpus = [_Gpu(i) for i in range(count)]
        for gpu in self._gpus:
            try:
                self._open(gpu)
            except nvml.NVMLError:
                # counted and retried by collect(); the other GPUs are fine
                gpu.handle = None

    def stop(self) -> None:
        if self._nvml is not None:
            self._shutdown(self._nvml)
            self._nvml = None
            self._gpus = []

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        with contextlib.suppress(Exception):  # nothing useful to do when shutdown fails
            nvml.nvmlShutdown()

    def _open(self, gpu: _Gpu) -> None:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(gpu.index)
        uuid = _clean(nvml.nvmlDeviceGetUUID(handle)) or UNKNOWN
        name = _clean(nvml.nvmlDeviceGetName(handle)) or UNKNOWN
        gpu.handle = handle
        gpu.labels = {"gpu": str(gpu.index), "uuid": uuid, "name": name}

    # -- collection -----------------------------------------------------------------
    def collect(self) -> list[Sample]:
        if self._nvml is None:
            raise CollectorUnavailable("NVML is not started")
        out: list[Sample] = []
        for gpu in self._gpus:
            up = self._collect_gpu(gpu, out)
            out.append(self.sample("hostmon_gpu_up", 1.0 if up else 0.0, dict(gpu.labels)))
            for fld in FIELDS:
                out.append(self.sample("hostmon_gpu_field_errors_total", float(gpu.errors[fld]), {**gpu.labels, "field": fld}))
        return out

    def _failed(self, gpu: _Gpu, fld: str, e: Exception) -> bool:
        """Count a failed read; return True when the whole GPU is gone for this cycle."""
        gpu.errors[fld] += 1
        self.partial_error("field_error")
        if getattr(e, "value", None) == self._err_gpu_lost:
            self.partial_error("gpu_lost")
            gpu.handle = None  # take a fresh handle next cycle
            return True
        return False

    def _collect_gpu(self, gpu: _Gpu, out: list[Sample]) -> bool:
        nvml = self._nvml
        if gpu.handle is None:
            try:
                self._open(gpu)
            except nvml.NVMLError as e:
                self._failed(gpu, "device", e)
                return False
        tried = ok = 0
        for fld, reader in self._readers:
            if fld in gpu.unsupported:
                continue
            if fld == "pcie" and not self.config.pcie_throughput:
                continue
            tried += 1
            produced: list[Sample] = []
            try:
                reader(self, gpu, produced)
            except _Unsupported:
                gpu.unsupported.add(fld)
                continue
            except nvml.NVMLError as e:
                if getattr(e, "value", None) in (self._err_not_supported, self._err_function_not_found):
                    gpu.unsupported.add(fld)
                    continue
                if self._failed(gpu, fld, e):
                    return False
                continue
            ok += 1
            out.extend(produced)
        return ok > 0 or tried == 0

    def _call(self, fn_name: str, *args: Any) -> Any:
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            raise _Unsupported(fn_name)
        return fn(*args)

    # Each reader appends the samples of one field; a raise leaves that field out.
    def _read_utilization(self, gpu: _Gpu, out: list[Sample]) -> None:
        u = self._call("nvmlDeviceGetUtilizationRates", gpu.handle)
        out.append(self.sample("hostmon_gpu_utilization_ratio", u.gpu / 100.0, dict(gpu.labels)))
        out.append(self.sample("hostmon_gpu_memory_utilization_ratio", u.memory / 100.0, dict(gpu.labels)))

    def _read_memory(self, gpu: _Gpu, out: list[Sample]) -> None:
        nvml = self._nvml
        mem = None
        v2 = getattr(nvml, "nvmlMemory_v2", None)
        if gpu.mem_v2 is not False and v2 is not None:
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(gpu.handle, version=v2)
                gpu.mem_v2 = True
            except (TypeError, nvml.NVMLError) as e:
                if isinstance(e, nvml.NVMLError) and getattr(e, "value", None) not in (
                    self._err_not_supported,
                    self._err_function_not_found,
                    self._err_version_mismatch,
                ):
                    raise
                gpu.mem_v2 = False
        if mem is None:
            mem = self._call("nvmlDeviceGetMemoryInfo", gpu.handle)
        lab = gpu.labels
        out.append(self.sample("hostmon_gpu_memory_total_bytes", float(mem.total), dict(lab)))
        out.append(self.sample("hostmon_gpu_memory_used_bytes", float(mem.used), dict(lab)))
        out.append(self.sample("hostmon_gpu_memory_free_bytes", float(mem.free), dict(lab)))
        if gpu.mem_v2:
            out.append(self.sample("hostmon_gpu_memory_reserved_bytes", float(mem.reserved), dict(lab)))

    def _read_temperature(self, gpu: _Gpu, out: list[Sample]) -> None:
        t = self._call("nvmlDeviceGetTemperature", gpu.handle, self._nvml.NVML_TEMPERATURE_GPU)
        out.append(self.sample("hostmon_gpu_temperature_celsius", float(t), dict(gpu.labels)))

    def _read_power(self, gpu: _Gpu, out: list[Sample]) -> None:
        mw = self._call("nvmlDeviceGetPowerUsage", gpu.handle)
        out.append(self.sample("hostmon_gpu_power_watts", mw / 1000.0, dict(gpu.labels)))

    def _read_power_limit(self, gpu: _Gpu, out: list[Sample]) -> None:
        mw = self._call("nvmlDeviceGetEnforcedPowerLimit", gpu.handle)
        out.append(self.sample("hostmon_gpu_power_limit_watts", mw / 1000.0, dict(gpu.labels)))

    def _read_sm_clock(self, gpu: _Gpu, out: list[Sample]) -> None:
        mhz = self._call("nvmlDeviceGetClockInfo", gpu.handle, self._nvml.NVML_CLOCK_SM)
        out.append(self.sample("hostmon_gpu_sm_clock_hertz", mhz * 1e6, dict(gpu.labels)))

    def _read_memory_clock(self, gpu: _Gpu, out: list[Sample]) -> None:
        mhz = self._call("nvmlDeviceGetClockInfo", gpu.handle, self._nvml.NVML_CLOCK_MEM)
        out.append(self.sample("hostmon_gpu_memory_clock_hertz", mhz * 1e6, dict(gpu.labels)))

    def _read_fan(self, gpu: _Gpu, out: list[Sample]) -> None:
        pct = self._call("nvmlDeviceGetFanSpeed", gpu.handle)
        out.append(self.sample("hostmon_gpu_fan_speed_ratio", pct / 100.0, dict(gpu.labels)))

    def _read_pcie(self, gpu: _Gpu, out: list[Sample]) -> None:
        nvml = self._nvml
        # NVML reports KB/s; like nvidia-smi and nvitop we read KB as 1024 bytes
        tx = self._call("nvmlDeviceGetPcieThroughput", gpu.handle, nvml.NVML_PCIE_UTIL_TX_BYTES)
        rx = self._call("nvmlDeviceGetPcieThroughput", gpu.handle, nvml.NVML_PCIE_UTIL_RX_BYTES)
        name = "hostmon_gpu_pcie_throughput_bytes_per_second"
        out.append(self.sample(name, tx * 1024.0, {**gpu.labels, "direction": "tx"}))
        out.append(self.sample(name, rx * 1024.0, {**gpu.labels, "direction": "rx"}))

    def _read_ecc(self, gpu: _Gpu, out: list[Sample]) -> None:
        nvml = self._nvml
        fn = "nvmlDeviceGetTotalEccErrors"
        corrected = self._call(fn, gpu.handle, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC)
        uncorrected = self._call(fn, gpu.handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC)
        name = "hostmon_gpu_ecc_errors_total"
        out.append(self.sample(name, float(corrected), {**gpu.labels, "type": "corrected"}))
        out.append(self.sample(name, float(uncorrected), {**gpu.labels, "type": "uncorrected"}))

    def _read_throttle(self, gpu: _Gpu, out: list[Sample]) -> None:
        nvml = self._nvml
        mask: int | None = None
        names = (
            (gpu.throttle_fn,)
            if gpu.throttle_fn
            else ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")
        )
        for fn_name in names:
            fn = getattr(nvml, fn_name, None)
            if fn is None:
                continue
            try:
                mask = int(fn(gpu.handle))
            except nvml.NVMLError as e:
                # a driver older than the bindings lacks the newer name: try the older one
                if getattr(e, "value", None) == self._err_function_not_found and fn_name != names[-1]:
                    continue
                raise
            gpu.throttle_fn = fn_name
            break
        if mask is None:
            raise _Unsupported("clocks event reasons")
        for bit, reason in THROTTLE_REASONS:
            value = 1.0 if mask & bit else 0.0
            out.append(self.sample("hostmon_gpu_throttle_reason", value, {**gpu.labels, "reason": reason}))
        other = 1.0 if mask & ~_KNOWN_THROTTLE_BITS else 0.0
        out.append(self.sample("hostmon_gpu_throttle_reason", other, {**gpu.labels, "reason": OTHER}))

    def _read_processes(self, gpu: _Gpu, out: list[Sample]) -> None:
        nvml = self._nvml
        used: dict[int, int | None] = {}
        answered = False
        for fn_name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                procs = self._call(fn_name, gpu.handle)
            except _Unsupported:
                continue
            except nvml.NVMLError as e:
                if getattr(e, "value", None) in (self._err_not_supported, self._err_function_not_found):
                    continue
                raise
            answered = True
            for p in procs:
                pid = int(p.pid)
                mem = p.usedGpuMemory
                prev = used.get(pid)
                # a process with both contexts is listed twice with the same memory: keep one
                used[pid] = mem if prev is None else (prev if mem is None else max(prev, mem))
        if not answered:
            raise _Unsupported("running processes")
        out.append(self.sample("hostmon_gpu_processes", float(len(used)), dict(gpu.labels)))
        if self.config.top_processes > 0:
            out.extend(self._process_memory(gpu, used))

    # -- per-process groups -------------------------------------------------------------
    def _process_memory(self, gpu: _Gpu, used: dict[int, int | None]) -> Iterator[Sample]:
        """GPU memory per (process name, tenant): the top N groups, the rest summed per tenant as "other".

        Labels as the processes collector's groups: ``groupname`` and ``tenant_id``. A
        process literally named ``other`` never gets its own series: it folds too.
        """
        groups: dict[tuple[str, str], int] = {}
        for pid, mem in used.items():
            if mem is None:  # NVML could not tell (no permission, MIG, WDDM): counted, not sized
                continue
            key = self._identify(pid)
            groups[key] = groups.get(key, 0) + int(mem)
        # a group named "other" ranks last, so it takes no top slot and lands in the fold's series
        ranked = sorted(groups.items(), key=lambda kv: (kv[0][0] == OTHER, -kv[1], kv[0]))
        series: dict[tuple[str, str], int] = {}
        for rank, ((proc, tenant), mem) in enumerate(ranked):
            key = (proc, tenant) if rank < self.config.top_processes else (OTHER, tenant)
            series[key] = series.get(key, 0) + mem
        for (proc, tenant), mem in series.items():
            labels = {**gpu.labels, "groupname": proc, "tenant_id": tenant}
            yield self.sample("hostmon_gpu_process_memory_used_bytes", float(mem), labels)

    def _identify(self, pid: int) -> tuple[str, str]:
        """(process name, tenant) of a host PID, from ``proc_root``; the agent's tenant when unknown."""
        base = os.path.join(self.ctx.proc_root, str(pid))
        comm = _clean(_read_text(os.path.join(base, "comm")) or "", _COMM_LEN) or UNKNOWN
        default = self.ctx.tenant_id
        tenancy = self.ctx.tenancy
        if tenancy is None:
            return comm, default
        try:
            uid = os.stat(base).st_uid
        except OSError:  # gone, or not in this PID namespace
            return comm, default
        cgroup_path = os.path.join(base, "cgroup")
        try:
            tenant = tenancy.tenant_for(uid, lambda: _read_text(cgroup_path))
        except Exception:  # noqa: BLE001 - a tenancy bug must not lose the GPU figures
            self.partial_error("tenant_lookup")
            return comm, default
        return comm, _clean(tenant) or default

    _readers: ClassVar[tuple[tuple[str, Callable[[GpuCollector, _Gpu, list[Sample]], None]], ...]] = (
        ("utilization", _read_utilization),
        ("memory", _read_memory),
        ("temperature", _read_temperature),
        ("power", _read_power),
        ("power_limit", _read_power_limit),
        ("sm_clock", _read_sm_clock),
        ("memory_clock", _read_memory_clock),
        ("fan", _read_fan),
        ("pcie", _read_pcie),
        ("ecc", _read_ecc),
        ("throttle", _read_throttle),
        ("processes", _read_processes),
    )
