"""A fake of NVIDIA's ``pynvml`` module (package ``nvidia-ml-py``) for tests that run without a GPU.

It has the real module's names for what the gpu collector calls: the functions
(``nvmlInit``, ``nvmlDeviceGetMemoryInfo``, ...), the constants
(``NVML_TEMPERATURE_GPU``, ``NVML_ERROR_NOT_SUPPORTED``, ...) and the error
classes (``NVMLError`` whose constructor maps an error code to a subclass such as
``NVMLError_NotSupported``, exactly as the real module does). The values are the
real ones; ``tests/collectors/test_gpu.py`` checks that against the installed
``pynvml`` when there is one.

A :class:`FakeNVML` instance stands in for the module. Each :class:`FakeGpu`
holds the figures NVML would report, in NVML's units (percent, MiB-free bytes,
milliwatts, MHz, KB/s), and ``errors`` maps a function name to the NVML error
code that call raises. ``calls`` counts every call by function name.
"""

from __future__ import annotations

import dataclasses
import types
from collections import Counter
from typing import Any, ClassVar

# --- constants (same names and values as pynvml) ------------------------------
NVML_SUCCESS = 0
NVML_TEMPERATURE_GPU = 0
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
nvmlMemory_v2 = 0x02000028

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40
nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80
nvmlClocksEventReasonDisplayClockSetting = 0x100
nvmlClocksThrottleReasonBoardLimit = 0x200
nvmlClocksThrottleReasonReliability = 0x400

ERROR_CODES: dict[str, int] = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_ALREADY_INITIALIZED": 5,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_INSUFFICIENT_SIZE": 7,
    "NVML_ERROR_INSUFFICIENT_POWER": 8,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_TIMEOUT": 10,
    "NVML_ERROR_IRQ_ISSUE": 11,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_CORRUPTED_INFOROM": 14,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_RESET_REQUIRED": 16,
    "NVML_ERROR_OPERATING_SYSTEM": 17,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
    "NVML_ERROR_IN_USE": 19,
    "NVML_ERROR_MEMORY": 20,
    "NVML_ERROR_NO_DATA": 21,
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH": 25,
    "NVML_ERROR_GPU_NOT_FOUND": 28,
    "NVML_ERROR_UNKNOWN": 999,
}
globals().update(ERROR_CODES)


class NVMLError(Exception):
    """Like pynvml.NVMLError: ``NVMLError(code)`` builds the subclass for that code; ``.value`` is the code."""

    _by_code: ClassVar[dict[int, type[NVMLError]]] = {}
    value: int

    def __new__(cls, value: int | None = None) -> NVMLError:  # noqa: PYI034 - returns a subclass, like pynvml
        target = cls
        if cls is NVMLError and value is not None:
            target = NVMLError._by_code.get(value, NVMLError)
        code = getattr(target, "_code", value)
        obj = Exception.__new__(target)
        obj.value = code if code is not None else ERROR_CODES["NVML_ERROR_UNKNOWN"]
        return obj

    def __init__(self, value: int | None = None) -> None:
        super().__init__(self.value)

    def __str__(self) -> str:
        return f"NVML error {self.value} ({type(self).__name__})"


def _class_name(const: str) -> str:
    """``NVML_ERROR_GPU_IS_LOST`` -> ``NVMLError_GpuIsLost`` (pynvml's naming rule)."""
    words = const.removeprefix("NVML_ERROR_").split("_")
    return "NVMLError_" + "".join(w.capitalize() for w in words)


ERROR_CLASSES: dict[str, type[NVMLError]] = {}
for _const, _code in ERROR_CODES.items():
    _cls = type(_class_name(_const), (NVMLError,), {"_code": _code})
    NVMLError._by_code[_code] = _cls
    ERROR_CLASSES[_cls.__name__] = _cls
globals().update(ERROR_CLASSES)

#: Every module-level name the gpu collector relies on (checked against the real pynvml).
PUBLIC_NAMES: tuple[str, ...] = tuple(
    n
    for n in list(globals())
    if n.startswith(("NVML_", "nvmlClocks", "NVMLError")) or n == "nvmlMemory_v2"
)

FUNCTION_NAMES: tuple[str, ...] = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetComputeRunningProcesses",
    "nvmlDeviceGetGraphicsRunningProcesses",
)


@dataclasses.dataclass
class FakeGpu:
    """What one fake GPU reports, in NVML's own units."""

    uuid: str = "GPU-00000000-1111-2222-3333-444444444444"
    name: str = "NVIDIA H100 80GB HBM3"
    util_gpu: int = 37  # percent
    util_memory: int = 12  # percent
    memory_total: int = 85_520_809_984  # bytes
    memory_used: int = 1_073_741_824
    memory_reserved: int = 566_231_040
    temperature: int = 41  # Celsius
    power_mw: int = 71_234
    power_limit_mw: int = 700_000
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    fan_percent: int | None = None  # None: NotSupported (data-center boards have no fan)
    pcie_tx_kbs: int = 2048
    pcie_rx_kbs: int = 4096
    ecc_volatile: tuple[int, int] = (3, 0)  # corrected, uncorrected
    ecc_aggregate: tuple[int, int] = (10, 1)
    throttle_mask: int = 0x1  # GPU idle
    compute_procs: list[tuple[int, int | None]] = dataclasses.field(default_factory=list)  # (pid, bytes)
    graphics_procs: list[tuple[int, int | None]] = dataclasses.field(default_factory=list)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False  # every call on this GPU raises GPU_IS_LOST


class _Handle:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


class FakeNVML:
    """A stand-in for the ``pynvml`` module, with a given list of GPUs."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        init_error: int | None = None,
        has_event_reasons: bool = True,
        has_memory_v2: bool = True,
    ) -> None:
        g = globals()
        for name in PUBLIC_NAMES:
            setattr(self, name, g[name])
        self.gpus = gpus if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.has_memory_v2 = has_memory_v2
        self.calls: Counter[str] = Counter()
        self.initialized = 0
        if not has_event_reasons:
            # an nvidia-ml-py older than 12.535 has only the "Throttle" name
            self.nvmlDeviceGetCurrentClocksEventReasons = None  # type: ignore[assignment]
            del self.nvmlDeviceGetCurrentClocksEventReasons

    # -- helpers ---------------------------------------------------------------
    def _gpu(self, fn: str, handle: _Handle) -> FakeGpu:
        self.calls[fn] += 1
        if not self.initialized:
            raise NVMLError(ERROR_CODES["NVML_ERROR_UNINITIALIZED"])
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError(ERROR_CODES["NVML_ERROR_GPU_IS_LOST"])
        code = gpu.errors.get(fn)
        if code is not None:
            raise NVMLError(code)
        return gpu

    # -- library ---------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        if not self.initialized:
            raise NVMLError(ERROR_CODES["NVML_ERROR_UNINITIALIZED"])
        self.initialized -= 1

    def nvmlDeviceGetCount(self) -> int:
        self.calls["nvmlDeviceGetCount"] += 1
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self.calls["nvmlDeviceGetHandleByIndex"] += 1
        if not 0 <= index < len(self.gpus):
            raise NVMLError(ERROR_CODES["NVML_ERROR_INVALID_ARGUMENT"])
        h = _Handle(index)
        self._gpu("nvmlDeviceGetHandleByIndex", h)
        self.calls["nvmlDeviceGetHandleByIndex"] -= 1
        return h

    # -- device queries ------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        g = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return types.SimpleNamespace(gpu=g.util_gpu, memory=g.util_memory)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        g = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        if version:
            if not self.has_memory_v2:
                raise NVMLError(ERROR_CODES["NVML_ERROR_FUNCTION_NOT_FOUND"])
            free = g.memory_total - g.memory_reserved - g.memory_used
            return types.SimpleNamespace(
                version=version, total=g.memory_total, reserved=g.memory_reserved, free=free, used=g.memory_used
            )
        # v1: "used" includes what the driver reserves
        used = g.memory_used + g.memory_reserved
        return types.SimpleNamespace(total=g.memory_total, free=g.memory_total - used, used=used)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        g = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(ERROR_CODES["NVML_ERROR_INVALID_ARGUMENT"])
        return g.temperature

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetClockInfo(self, handle: _Handle, type: int) -> int:
        g = self._gpu("nvmlDeviceGetClockInfo", handle)
        if type == NVML_CLOCK_SM:
            return g.sm_clock_mhz
        if type == NVML_CLOCK_MEM:
            return g.mem_clock_mhz
        raise NVMLError(ERROR_CODES["NVML_ERROR_INVALID_ARGUMENT"])

    def nvmlDeviceGetFanSpeed(self, handle: _Handle) -> int:
        g = self._gpu("nvmlDeviceGetFanSpeed", handle)
        if g.fan_percent is None:
            raise NVMLError(ERROR_CODES["NVML_ERROR_NOT_SUPPORTED"])
        return g.fan_percent

    def nvmlDeviceGetPcieThroughput(self, device: _Handle, counter: int) -> int:
        g = self._gpu("nvmlDeviceGetPcieThroughput", device)
        if counter == NVML_PCIE_UTIL_TX_BYTES:
            return g.pcie_tx_kbs
        if counter == NVML_PCIE_UTIL_RX_BYTES:
            return g.pcie_rx_kbs
        raise NVMLError(ERROR_CODES["NVML_ERROR_INVALID_ARGUMENT"])

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, errorType: int, counterType: int) -> int:
        g = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        counts = g.ecc_volatile if counterType == NVML_VOLATILE_ECC else g.ecc_aggregate
        return counts[0] if errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED else counts[1]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle_mask

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle_mask

    @staticmethod
    def _procs(entries: list[tuple[int, int | None]]) -> list[Any]:
        # the real module returns friendly objects; usedGpuMemory is None when NVML cannot tell
        return [
            types.SimpleNamespace(pid=pid, usedGpuMemory=mem, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
            for pid, mem in entries
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        return self._procs(self._gpu("nvmlDeviceGetComputeRunningProcesses", handle).compute_procs)

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        return self._procs(self._gpu("nvmlDeviceGetGraphicsRunningProcesses", handle).graphics_procs)


def one_gpu() -> FakeNVML:
    """A one-GPU fake used by ``bench/gpu_check.sh --self-test`` (no GPU needed)."""
    return FakeNVML([FakeGpu(compute_procs=[(1, 512 * 1024 * 1024)])])
