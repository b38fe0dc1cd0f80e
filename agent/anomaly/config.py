"""The ``[anomaly]`` config section: which series the detector watches, and its knobs.

A watch rule picks samples by metric name and label matchers, keeps the labels
listed in ``by`` apart (summing over every other label), and turns counters into
per-second rates. The host defaults (``DEFAULT_WATCH``) are on unless
``defaults = false``; ``[[anomaly.watch]]`` entries add to them.
"""

from __future__ import annotations

import dataclasses
import re

from hostmond.agent.anomaly.detector import DEFAULT_PARAMS, DetectorParams

from hostmond.core.config import field
from hostmond.core.validate import (
    check_fraction,
    check_not_negative,
    check_positive,
    check_regex,
)

RATE_MODES = ("auto", "always", "never")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _check_metric(v: str) -> None:
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", v):
        raise ValueError(f"{v!r} is not a metric name")


def _check_matchers(v: dict[str, str]) -> None:
    for k, pattern in v.items():
        if not _LABEL.match(k):
            raise ValueError(f"{k!r} is not a label name")
        check_regex(pattern)


def _check_labels(v: list[str]) -> None:
    for k in v:
        if not _LABEL.match(k):
            raise ValueError(f"{k!r} is not a label name")


def _check_rate(v: str) -> None:
    if v not in RATE_MODES:
        raise ValueError(f"must be one of {', '.join(RATE_MODES)}, got {v!r}")


def _check_max_series(v: int) -> None:
    if not 1 <= v <= 10_000:
        raise ValueError(f"must be between 1 and 10000, got {v}")


def _check_threshold(v: float) -> None:
    if not 0 < v <= 1:
        raise ValueError(f"must be greater than 0 and at most 1, got {v}")


@dataclasses.dataclass
class WatchRule:
    """One ``[[anomaly.watch]]`` entry."""

    metric: str = field("", "Metric name to watch (exact).", check=_check_metric)
    match: dict[str, str] = field({}, "Labels that must match: label = regular expression the whole value must match.", check=_check_matchers)  # noqa: RUF009
    exclude: dict[str, str] = field({}, "Samples whose label value wholly matches one of these regular expressions are skipped.", check=_check_matchers)  # noqa: RUF009
    by: list[str] = field([], "Labels that keep series apart (one model each); samples are summed over every other label.", check=_check_labels)  # noqa: RUF009
    rate: str = field(
        "auto",
        "auto: counters become per-second rates; always: also for cumulative gauges (node_vmstat_pswpin); never: the value itself.",
        check=_check_rate,
    )
    min_change: float = field(
        0.0,
        "Smallest change worth an event, in the series' unit (per second for rates): a value closer than this to what the "
        "model expected has its score scaled down in proportion (0: no floor).",
        check=check_not_negative,
    )
    min_change_ratio: float = field(
        0.0,
        "The same floor as a fraction of the expected level (0.02: a 2% move); the larger of the two floors applies.",
        check=check_not_negative,
    )

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("a watch rule needs metric")
        self._match = {k: re.compile(v) for k, v in self.match.items()}
        self._exclude = {k: re.compile(v) for k, v in self.exclude.items()}

    def selects(self, labels: dict[str, str]) -> bool:
        for k, r in self._match.items():
            if not r.fullmatch(labels.get(k, "")):
                return False
        return not any(r.fullmatch(labels.get(k, "")) for k, r in self._exclude.items())


def _w(
    metric: str,
    rate: str = "auto",
    by: tuple[str, ...] = (),
    match: dict[str, str] | None = None,
    exclude: dict[str, str] | None = None,
    min_change: float = 0.0,
    ratio: float = 0.0,
) -> WatchRule:
    return WatchRule(
        metric=metric, match=match or {}, exclude=exclude or {}, by=list(by), rate=rate, min_change=min_change, min_change_ratio=ratio
    )


_VIRTUAL_NET = {"device": r"lo|veth.*|docker.*|podman.*|br-.*|cni.*|flannel.*|cali.*|virbr.*|tun.*|tap.*|ifb.*"}
_VIRTUAL_DISK = {"device": r"loop.*|ram.*|zram.*|dm-.*|sr.*"}

# The host defaults: CPU busy and iowait, load, memory available, swap activity,
# disk read/write bytes and busy time, network bytes and errors, TCP retransmits,
# failed logins, process counts, GPU utilisation (where present).
# Each has a floor (min_change, min_change_ratio) below which a move is not worth an event, however
# unusual for the series: on a quiet host MemAvailable moving by 1 MB or CPU user time by 0.04 cores
# is statistically new and operationally nothing. Errors and failed logins have none: any is news.
KIB = 1024
MIB = 1024 * 1024
DEFAULT_WATCH: tuple[WatchRule, ...] = (
    _w("node_cpu_seconds_total", match={"mode": "user|system|iowait|steal"}, by=("mode",), min_change=0.1),  # cores
    _w("node_load1", min_change=0.5, ratio=0.25),
    _w("node_memory_MemAvailable_bytes", min_change=16 * MIB, ratio=0.02),
    _w("node_vmstat_pswpin", rate="always", min_change=16),  # pages per second
    _w("node_vmstat_pswpout", rate="always", min_change=16),
    _w("node_disk_read_bytes_total", exclude=_VIRTUAL_DISK, by=("device",), min_change=MIB),
    _w("node_disk_written_bytes_total", exclude=_VIRTUAL_DISK, by=("device",), min_change=MIB),
    _w("node_disk_io_time_seconds_total", exclude=_VIRTUAL_DISK, by=("device",), min_change=0.05),  # busy share
    _w("node_network_receive_bytes_total", exclude=_VIRTUAL_NET, by=("device",), min_change=128 * KIB),
    _w("node_network_transmit_bytes_total", exclude=_VIRTUAL_NET, by=("device",), min_change=128 * KIB),
    _w("node_network_receive_errs_total", exclude=_VIRTUAL_NET),
    _w("node_network_transmit_errs_total", exclude=_VIRTUAL_NET),
    _w("node_netstat_Tcp_RetransSegs", rate="always", min_change=1),  # a cumulative count node_exporter types gauge
    _w("hostmon_auth_failures_total"),
    _w("node_procs_running", min_change=2),
    _w("node_procs_blocked", min_change=1),
    _w("node_processes_pids", min_change=10, ratio=0.05),
    _w("hostmon_gpu_utilization_ratio", by=("gpu",), min_change=0.05),
)


@dataclasses.dataclass
class AnomalyConfig:
    """On-host anomaly detection: one streaming model per watched series (see docs/anomaly.md)."""

    enabled: bool = field(True, "Score the watched series for anomalies and raise 'anomaly' events.")
    defaults: bool = field(True, "Watch the host defaults (CPU, load, memory, swap, disks, network, failed logins, processes, GPU).")
    watch: list[WatchRule] = field([], "Series to watch besides the defaults.")  # noqa: RUF009
    max_series: int = field(64, "Most series modelled at once; further series are counted as dropped, not watched.", check=_check_max_series)
    threshold: float = field(DEFAULT_PARAMS.threshold, "Score at or above which a series raises an 'anomaly' event (0 to 1).", check=_check_threshold)
    hold: int = field(DEFAULT_PARAMS.hold, "Samples after an event during which the same series raises no other.", check=check_not_negative)
    learn_samples: int = field(
        120, "Samples a new series only learns from before it may raise events (its published score reads 0 until then).", check=check_not_negative
    )
    save_interval: float = field(300.0, "Seconds between two saves of the models to the state directory (and at stop).", check=check_positive)
    alpha: float = field(DEFAULT_PARAMS.alpha, "Weight of each new sample in the baseline: about 1/alpha samples of memory.", check=check_fraction)
    season_weight: float = field(DEFAULT_PARAMS.season_weight, "Weight of the hour-of-day profile's surprise; 0 turns the profile off.")
    context_weight: float = field(
        DEFAULT_PARAMS.context_weight,
        "Weight of the transition model's surprise (an unusual move between value bins); 0 turns it off.",
        check=check_not_negative,
    )

    def validate(self) -> None:
        errs = self.params().validate()
        if errs:
            raise ValueError(errs[0])

    def params(self) -> DetectorParams:
        return dataclasses.replace(
            DEFAULT_PARAMS,
            threshold=self.threshold,
            hold=self.hold,
            alpha=self.alpha,
            season_weight=self.season_weight,
            context_weight=self.context_weight,
        )

    def rules(self) -> list[WatchRule]:
        return [*(DEFAULT_WATCH if self.defaults else ()), *self.watch]
