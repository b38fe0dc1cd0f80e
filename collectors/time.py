"""``time``: the wall clock, time zone and clock sources, and the kernel's NTP state (node_exporter's ``time`` and ``timex``).

``node_time_seconds`` is the agent's clock when the collection ran (node_exporter
reads it at scrape time; both serve it to a Prometheus that compares it with its
own clock for the clock-skew alert). Clock sources come from
``{sys_root}/devices/system/clocksource/clocksource*/``. The ``node_timex_*``
family comes from adjtimex(2) with ``modes = 0`` (read only, no privilege), called
through ctypes; the conversion is the pure :func:`timex_values`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    MetricSpec,
    Sample,
    field,
)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """struct timex of <sys/timex.h> (glibc, Linux)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


TIME_ERROR = 5  # adjtimex's return value when the clock is not synchronised
STA_NANO = 0x2000
PPM16FRAC = 1_000_000.0 * 65536.0

# name -> (type, help)
TIMEX_METRICS: dict[str, tuple[str, str]] = {
    "node_timex_offset_seconds": (GAUGE, "Time offset in between local system and reference clock."),
    "node_timex_frequency_adjustment_ratio": (GAUGE, "Local clock frequency adjustment."),
    "node_timex_maxerror_seconds": (GAUGE, "Maximum error in seconds."),
    "node_timex_estimated_error_seconds": (GAUGE, "Estimated error in seconds."),
    "node_timex_status": (GAUGE, "Value of the status array bits."),
    "node_timex_loop_time_constant": (GAUGE, "Phase-locked loop time constant."),
    "node_timex_tick_seconds": (GAUGE, "Seconds between clock ticks."),
    "node_timex_pps_frequency_hertz": (GAUGE, "Pulse per second frequency."),
    "node_timex_pps_jitter_seconds": (GAUGE, "Pulse per second jitter."),
    "node_timex_pps_shift_seconds": (GAUGE, "Pulse per second interval duration."),
    "node_timex_pps_stability_hertz": (GAUGE, "Pulse per second stability, average of recent frequency changes."),
    "node_timex_pps_jitter_total": (COUNTER, "Pulse per second count of jitter limit exceeded events."),
    "node_timex_pps_calibration_total": (COUNTER, "Pulse per second count of calibration intervals."),
    "node_timex_pps_error_total": (COUNTER, "Pulse per second count of calibration errors."),
    "node_timex_pps_stability_exceeded_total": (COUNTER, "Pulse per second count of stability limit exceeded events."),
    "node_timex_tai_offset_seconds": (GAUGE, "International Atomic Time (TAI) offset."),
    "node_timex_sync_status": (GAUGE, "Is clock synchronized to a reliable server (1 = yes, 0 = no)."),
}


def timex_values(tx: Timex, ret: int) -> dict[str, float]:
    """node_exporter's conversion of one adjtimex(2) answer (``tx`` filled, ``ret`` its return value)."""
    div = 1e9 if tx.status & STA_NANO else 1e6
    return {
        "node_timex_offset_seconds": tx.offset / div,
        "node_timex_frequency_adjustment_ratio": 1 + tx.freq / PPM16FRAC,
        "node_timex_maxerror_seconds": tx.maxerror / 1e6,
        "node_timex_estimated_error_seconds": tx.esterror / 1e6,
        "node_timex_status": float(tx.status),
        "node_timex_loop_time_constant": float(tx.constant),
        "node_timex_tick_seconds": tx.tick / 1e6,
        "node_timex_pps_frequency_hertz": tx.ppsfreq / PPM16FRAC,
        "node_timex_pps_jitter_seconds": tx.jitter / div,
        "node_timex_pps_shift_seconds": float(tx.shift),
        "node_timex_pps_stability_hertz": tx.stabil / PPM16FRAC,
        "node_timex_pps_jitter_total": float(tx.jitcnt),
        "node_timex_pps_calibration_total": float(tx.calcnt),
        "node_timex_pps_error_total": float(tx.errcnt),
        "node_timex_pps_stability_exceeded_total": float(tx.stbcnt),
        "node_timex_tai_offset_seconds": float(tx.tai),
        "node_timex_sync_status": 0.0 if ret == TIME_ERROR else 1.0,
    }


_libc: ctypes.CDLL | None = None


def adjtimex() -> tuple[Timex, int]:
    """Read the kernel's clock discipline state (adjtimex with modes 0: changes nothing)."""
    global _libc
    if _libc is None:  # find_library runs a compiler/ldconfig probe: once per process, not per cycle
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc = _libc
    tx = Timex()
    ret = libc.adjtimex(ctypes.byref(tx))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex: {os.strerror(err)}")
    return tx, ret


def parse_clocksources(text: str) -> list[str]:
    """``available_clocksource`` holds names separated by spaces."""
    return text.split()


@dataclass
class TimeConfig(CollectorConfig):
    timex: bool = field(True, "Report the kernel's NTP discipline state (node_timex_*, node_exporter's timex collector).")


class TimeCollector(Collector[TimeConfig]):
    name = "time"
    inline = True
    config_class = TimeConfig
    metrics = (
        MetricSpec("node_time_seconds", GAUGE, "System time in seconds since epoch (1970).", (), "seconds"),
        MetricSpec("node_time_zone_offset_seconds", GAUGE, "System time zone offset in seconds.", ("time_zone",), "seconds"),
        MetricSpec("node_time_clocksource_available_info", GAUGE, "Available clocksources read from '/sys/devices/system/clocksource'.", ("device", "clocksource")),
        MetricSpec("node_time_clocksource_current_info", GAUGE, "Current clocksource read from '/sys/devices/system/clocksource'.", ("device", "clocksource")),
        *(MetricSpec(n, t, h) for n, (t, h) in TIMEX_METRICS.items()),
    )

    config: TimeConfig

    def collect(self) -> Iterator[Sample]:
        s = self.sample
        now = time.time()
        lt = time.localtime(now)
        yield s("node_time_seconds", now)
        yield s("node_time_zone_offset_seconds", float(lt.tm_gmtoff or 0), {"time_zone": lt.tm_zone or ""})
        base = os.path.join(self.ctx.sys_root, "devices", "system", "clocksource")
        try:
            names = sorted(n for n in os.listdir(base) if n.startswith("clocksource") and n[11:].isdigit())
        except OSError:
            names = []
        for n in names:
            dev = n[11:]
            try:
                avail = _procfs.read_text(os.path.join(base, n, "available_clocksource"))
                cur = _procfs.read_text(os.path.join(base, n, "current_clocksource")).strip()
            except OSError:
                self.partial_error("clocksource_unreadable")
                continue
            for cs in parse_clocksources(avail):
                yield s("node_time_clocksource_available_info", 1.0, {"device": dev, "clocksource": cs})
            if cur:
                yield s("node_time_clocksource_current_info", 1.0, {"device": dev, "clocksource": cur})
        if self.config.timex:
            try:
                tx, ret = adjtimex()
            except (OSError, AttributeError):
                self.partial_error("adjtimex_failed")
                return
            for name, v in timex_values(tx, ret).items():
                yield s(name, v)
