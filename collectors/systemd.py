"""``systemd``: unit states from systemd (node_exporter's ``systemd``; off by default, as upstream's).

Each cycle runs ``systemctl show`` twice (the manager's ``SystemState`` and
``Version``, then the properties of every loaded unit: one process each, no
D-Bus library needed) and reports node_exporter's families:

* ``node_systemd_unit_state{name,state,type}``: 1 for the unit's active state,
  0 for the four others; ``type`` is a service's ``Type`` (``simple``, ``notify``,
  ...), empty for other units. Units matching ``unit_include`` and not
  ``unit_exclude`` (node_exporter's defaults), loaded ones only;
* ``node_systemd_units{state}``: loaded units by active state;
* ``node_systemd_system_running``, ``node_systemd_version{version}``;
* ``node_systemd_socket_{accepted,current,refused}_connections*{name}`` and
  ``node_systemd_timer_last_trigger_seconds{name}``.

No systemd here (a container, a non-systemd distribution): nothing to report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    CollectorUnavailable,
    MetricSpec,
    Sample,
    check_regex,
    field,
)

STATES = ("activating", "active", "deactivating", "failed", "inactive")
UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "Type", "NAccepted", "NConnections", "NRefused", "LastTriggerUSec")
_VERSION = re.compile(r"[0-9]{3,}(\.[0-9]+)?")


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output: ``Key=value`` lines, one block per unit, blocks separated by blank lines."""
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        k, sep, v = line.partition("=")
        if sep:
            cur[k] = v
    if cur:
        blocks.append(cur)
    return blocks


def parse_version(text: str) -> float | None:
    """node_exporter's reading of the manager's Version: ``252.39-1~deb12u2`` -> 252.39."""
    m = _VERSION.search(text)
    return float(m.group(0)) if m else None


def parse_unix_timestamp(v: str) -> float | None:
    """``@1764540000`` (``--timestamp=unix``) -> seconds; empty or ``n/a`` (never triggered) -> None."""
    v = v.strip()
    if v.startswith("@"):
        try:
            return float(v[1:])
        except ValueError:
            return None
    return None


def _positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be greater than 0")


@dataclass
class SystemdConfig(CollectorConfig):
    unit_include: str = field(".+", "Regular expression of the units reported (node_exporter's default).", check=check_regex)
    unit_exclude: str = field(
        r".+\.(automount|device|mount|scope|slice|target)",
        "Regular expression of the units left out (node_exporter's default).",
        check=check_regex,
    )
    systemctl: str = field("systemctl", "The systemctl command (a name looked up on PATH, or a path).")
    command_timeout: float = field(5.0, "Seconds one systemctl call may take before it is killed.", check=_positive)


class SystemdCollector(Collector[SystemdConfig]):
    name = "systemd"
    default_enabled = False
    config_class = SystemdConfig
    metrics = (
        MetricSpec("node_systemd_unit_state", GAUGE, "Systemd unit", ("name", "state", "type")),
        MetricSpec("node_systemd_units", GAUGE, "Summary of systemd unit states", ("state",)),
        MetricSpec("node_systemd_system_running", GAUGE, "Whether the system is operational (see 'systemctl is-system-running')"),
        MetricSpec("node_systemd_version", GAUGE, "Detected systemd version", ("version",)),
        MetricSpec("node_systemd_socket_accepted_connections_total", COUNTER, "Total number of accepted socket connections", ("name",)),
        MetricSpec("node_systemd_socket_current_connections", GAUGE, "Current number of socket connections", ("name",)),
        MetricSpec("node_systemd_socket_refused_connections_total", COUNTER, "Total number of refused socket connections", ("name",)),
        MetricSpec("node_systemd_timer_last_trigger_seconds", GAUGE, "Seconds since epoch of last trigger.", ("name",), "seconds"),
    )

    config: SystemdConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._include = re.compile(self.config.unit_include)
        self._exclude = re.compile(self.config.unit_exclude)
        self._cmd: str | None = None

    def start(self) -> None:
        self._cmd = shutil.which(self.config.systemctl)
        if self._cmd is None:
            raise CollectorUnavailable(f"{self.config.systemctl} not found")

    def _show(self, *args: str) -> str:
        assert self._cmd is not None
        r = subprocess.run(
            [self._cmd, "show", "--timestamp=unix", *args],
            capture_output=True, text=True, timeout=self.config.command_timeout, check=False,
        )
        if r.returncode != 0:
            err = r.stderr.strip()
            if "not been booted with systemd" in err or "Failed to connect to bus" in err:
                raise CollectorUnavailable(err.splitlines()[0] if err else "no systemd")
            raise RuntimeError(f"systemctl show failed ({r.returncode}): {err[:200]}")
        return r.stdout

    def collect(self) -> Iterator[Sample]:
        if self._cmd is None:
            self.start()
        mgr = parse_show(self._show("--property=SystemState,Version"))
        m = mgr[0] if mgr else {}
        s = self.sample
        yield s("node_systemd_system_running", 1.0 if m.get("SystemState") == "running" else 0.0)
        version = m.get("Version", "")
        v = parse_version(version)
        if v is not None:
            yield s("node_systemd_version", v, {"version": version})
        units = [u for u in parse_show(self._show("--all", f"--property={','.join(UNIT_PROPERTIES)}", "*")) if u.get("Id")]
        yield from self.unit_samples(units)

    def unit_samples(self, units: list[dict[str, str]]) -> Iterator[Sample]:
        """The unit families from parsed ``systemctl show`` blocks (pure: tested on recorded output)."""
        s = self.sample
        loaded = [u for u in units if u.get("LoadState") == "loaded"]
        summary = dict.fromkeys(STATES, 0)
        for u in loaded:
            st = u.get("ActiveState", "")
            if st in summary:
                summary[st] += 1
        for st, n in summary.items():
            yield s("node_systemd_units", float(n), {"state": st})
        for u in loaded:
            name = u["Id"]
            if not self._include.fullmatch(name) or self._exclude.fullmatch(name):
                continue
            typ = u.get("Type", "") if name.endswith(".service") else ""
            active = u.get("ActiveState", "")
            for st in STATES:
                yield s("node_systemd_unit_state", 1.0 if st == active else 0.0, {"name": name, "state": st, "type": typ})
            if name.endswith(".socket"):
                for prop, metric in (
                    ("NAccepted", "node_systemd_socket_accepted_connections_total"),
                    ("NConnections", "node_systemd_socket_current_connections"),
                    ("NRefused", "node_systemd_socket_refused_connections_total"),
                ):
                    try:
                        yield s(metric, float(int(u.get(prop, ""))), {"name": name})
                    except ValueError:
                        continue
            elif name.endswith(".timer"):
                t = parse_unix_timestamp(u.get("LastTriggerUSec", ""))
                yield s("node_systemd_timer_last_trigger_seconds", t if t is not None else 0.0, {"name": name})
