"""``systemd``: parsing ``systemctl show``, node_exporter's families, and the real systemctl of this host.

No systemd runs where the tests run (a container), so the unit families are
proven on recorded ``systemctl show`` output served by a stand-in ``systemctl``
script (a real process, called the way the collector calls the real one); the
real ``systemctl`` proves the "no systemd here" path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hostmond.api import CollectorContext, CollectorUnavailable, Sample
from hostmond.collectors.systemd import (
    SystemdCollector,
    SystemdConfig,
    parse_show,
    parse_unix_timestamp,
    parse_version,
)

FIX = Path(__file__).parent / "fixtures" / "systemd"


def fake_systemctl(tmp_path: Path) -> Path:
    """An executable that answers ``show`` like systemctl, from the recorded files, and logs its arguments."""
    script = tmp_path / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/calls\n'
        'case "$*" in\n'
        f'  *--all*) cat {FIX}/show-units.txt ;;\n'
        f'  *) cat {FIX}/show-manager.txt ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script


def collect(cfg: SystemdConfig) -> list[Sample]:
    c = SystemdCollector(cfg, CollectorContext())
    c.start()
    return list(c.collect())


def test_parse_show_blocks_and_values() -> None:
    blocks = parse_show((FIX / "show-units.txt").read_text())
    assert len(blocks) == 7 and blocks[0]["Id"] == "ssh.service" and blocks[2]["NAccepted"] == "12"
    assert parse_version("252.39-1~deb12u2") == 252.39 and parse_version("unknown") is None
    assert parse_unix_timestamp("@1764540000") == 1764540000 and parse_unix_timestamp("n/a") is None


def test_unit_states_like_node_exporter(tmp_path: Path) -> None:
    out = collect(SystemdConfig(systemctl=str(fake_systemctl(tmp_path))))
    state = {(s.labels["name"], s.labels["state"]): (s.value, s.labels["type"]) for s in out if s.name == "node_systemd_unit_state"}
    assert state[("ssh.service", "active")] == (1.0, "notify") and state[("ssh.service", "failed")] == (0.0, "notify")
    assert state[("cron.service", "failed")] == (1.0, "simple")
    assert state[("docker.socket", "active")] == (1.0, "")  # Type is a service property only
    # targets are left out (node_exporter's default unit_exclude); not-found units are not loaded units
    assert {n for n, _ in state} == {"ssh.service", "cron.service", "docker.socket", "apt-daily.timer", "logrotate.timer"}
    assert len(state) == 5 * 5
    units = {s.labels["state"]: s.value for s in out if s.name == "node_systemd_units"}
    assert units == {"activating": 0, "active": 4, "deactivating": 0, "failed": 1, "inactive": 1}
    v = {(s.name, s.labels.get("name", s.labels.get("version", ""))): s.value for s in out if s.name != "node_systemd_unit_state" and s.name != "node_systemd_units"}
    assert v[("node_systemd_system_running", "")] == 0  # degraded
    assert v[("node_systemd_version", "252.39-1~deb12u2")] == 252.39
    assert v[("node_systemd_socket_accepted_connections_total", "docker.socket")] == 12
    assert v[("node_systemd_socket_current_connections", "docker.socket")] == 2
    assert v[("node_systemd_socket_refused_connections_total", "docker.socket")] == 1
    assert v[("node_systemd_timer_last_trigger_seconds", "apt-daily.timer")] == 1764540000
    assert v[("node_systemd_timer_last_trigger_seconds", "logrotate.timer")] == 0
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["show --timestamp=unix --property=SystemState,Version",
                     "show --timestamp=unix --all --property=Id,LoadState,ActiveState,Type,NAccepted,NConnections,NRefused,LastTriggerUSec *"]


def test_unit_filters(tmp_path: Path) -> None:
    out = collect(SystemdConfig(systemctl=str(fake_systemctl(tmp_path)), unit_include=r".+\.service", unit_exclude="cron.service"))
    assert {s.labels["name"] for s in out if s.name == "node_systemd_unit_state"} == {"ssh.service"}


def test_off_by_default_and_no_systemd_here_is_nothing_to_report(tmp_path: Path) -> None:
    assert SystemdCollector.default_enabled is False
    with pytest.raises(CollectorUnavailable):
        collect(SystemdConfig(systemctl=str(tmp_path / "absent")))
    real = shutil.which("systemctl")
    if real is None:
        return
    if Path("/run/systemd/system").exists():  # a host running systemd: the real thing answers
        out = collect(SystemdConfig(systemctl=real))
        assert any(s.name == "node_systemd_unit_state" and s.value == 1 for s in out)
    else:  # a container: systemctl says it cannot operate
        with pytest.raises(CollectorUnavailable):
            collect(SystemdConfig(systemctl=real))


def test_a_failing_systemctl_is_an_error_not_no_data(tmp_path: Path) -> None:
    script = tmp_path / "systemctl"
    script.write_text("#!/bin/sh\necho 'Access denied' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(RuntimeError, match="Access denied"):
        collect(SystemdConfig(systemctl=str(script)))
