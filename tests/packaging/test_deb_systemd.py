"""The .deb under a real systemd: installed with apt in a container that boots systemd, the units run unchanged.

This is the proof that the units' sandbox fits the agent (test_systemd.py's
setpriv run only approximates it: no mount namespace, no system-call filter).
The container (podman --privileged --systemd=always) is Debian bookworm from
debootstrap with systemd, Python 3.11 and the package's other dependencies,
so `apt-get install ./hostmon.deb` needs no network.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from podman_testutil import REPO, debian_base, podman

pytestmark = pytest.mark.slow

SYSTEMD_IMAGE = "localhost/hostmon-systemd:test"
CONTAINERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends systemd systemd-sysv python3.11 procps adduser init-system-helpers \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
"""
CORE = {"auth", "cpu", "disk", "memory", "network", "processes"}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Box:
    """A running systemd container."""

    def __init__(self, name: str) -> None:
        self.name = name

    def sh(self, script: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, "sh", "-ec", script, timeout=timeout, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def get(self, url: str) -> str:
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return podman("exec", self.name, "python3.11", "-c", code).stdout

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        out = []
        for line in self.get("http://127.0.0.1:19435/metrics").splitlines():
            m = SAMPLE.match(line)
            if m and not line.startswith("#"):
                out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
        return out

    def journal(self, unit: str) -> list[dict[str, Any]]:
        out = self.sh(f"journalctl -u {unit} -o json --no-pager").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for(what: str, check: Any, timeout: float = 60, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


@pytest.fixture(scope="module")
def box(podman_tools: None, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    tmp = tmp_path_factory.mktemp("deb-systemd")
    (tmp / "Containerfile").write_text(CONTAINERFILE)
    podman("build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={debian_base()}",
           "-f", str(tmp / "Containerfile"), "-t", SYSTEMD_IMAGE, str(tmp), timeout=600)
    b = Box(f"hostmon-systemd-t{id(tmp) % 100000}")
    podman("run", "-d", "--name", b.name, "--privileged", "--systemd=always", "-v", f"{deb.parent}:/deb:ro", SYSTEMD_IMAGE)
    try:
        state = wait_for("systemd up", lambda: b.sh("systemctl is-system-running || true").stdout.strip() in ("running", "degraded") and
                         b.sh("systemctl is-system-running || true").stdout.strip(), timeout=60)
        assert state == "running", b.sh("systemctl --failed --no-pager || true").stdout
        inst = b.sh(f"apt-get install -y -q /deb/{deb.name}", timeout=180, check=False)
        assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
        yield b
    finally:
        podman("rm", "-f", "-t", "5", b.name, check=False, timeout=60)


def test_unit_is_installed_unchanged_and_reaches_running_through_ready_after_the_first_collection(box: Box) -> None:
    installed = box.sh("cat /lib/systemd/system/hostmon.service").stdout
    assert installed == (REPO / "systemd/hostmon.service").read_text()
    assert box.sh("systemctl is-enabled hostmon").stdout.strip() == "enabled"  # enabled, not started, by the package
    assert box.sh("systemctl is-active hostmon || true").stdout.strip() == "inactive"
    box.sh("systemctl start hostmon", timeout=90)  # Type=notify: returns once READY=1 came (or fails)
    p = box.show("hostmon", "ActiveState", "SubState", "Type", "StatusText")
    assert (p["ActiveState"], p["SubState"], p["Type"]) == ("active", "running", "notify")
    assert re.fullmatch(r"\d+ collectors, 0 failing", p["StatusText"]), p["StatusText"]  # STATUS= from the agent
    # active (running) was entered after the agent logged its first collection (it sends READY=1
    # right after): the agent's own "ts" against systemd's clock, both wall clock in microseconds
    # (the journal's receive time of the log line can trail READY=1 on a busy machine)
    (first,) = [json.loads(str(e["MESSAGE"])) for e in box.journal("hostmon") if '"first collection done"' in str(e.get("MESSAGE", ""))]
    logged = datetime.datetime.fromisoformat(first["ts"])  # milliseconds
    out = box.sh("systemctl show hostmon -p ActiveEnterTimestamp --timestamp=us+utc").stdout.strip()
    entered = datetime.datetime.strptime(out.split("=", 1)[1], "%a %Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=datetime.UTC)
    assert logged <= entered + datetime.timedelta(milliseconds=1), (first["ts"], out)


def test_every_builtin_collector_succeeds_under_the_real_sandbox(box: Box) -> None:
    m = wait_for("metrics", box.metrics)
    success = {lab["collector"]: v for n, lab, v in m if n == "hostmon_collector_success"}
    # every collector the agent runs (those it did not find unavailable: its "first collection done"
    # line names them) succeeds; the core ones are among them
    (first,) = [json.loads(str(e["MESSAGE"])) for e in box.journal("hostmon") if '"first collection done"' in str(e.get("MESSAGE", ""))]
    assert set(success) == set(first["collectors"]) >= CORE, (sorted(success), first["collectors"])
    assert {name: v for name, v in success.items() if v != 1.0} == {}
    # the processes collector sees every process of the container (ProtectProc=default, ProcSubset=all)
    ((pids,),) = [(v,) for n, _, v in m if n == "node_processes_pids"]
    here = int(box.sh("ls /proc | grep -c '^[0-9]'").stdout)
    assert abs(pids - here) <= 3, (pids, here)


def test_failed_sshd_login_in_the_journal_is_counted(box: Box) -> None:
    def failures() -> float:
        return sum(v for n, lab, v in box.metrics() if n == "hostmon_auth_failures_total" and lab.get("service") == "sshd")

    before = failures()
    box.sh("logger -t sshd -p authpriv.notice 'Failed password for invalid user eve from 198.51.100.9 port 4711 ssh2'")
    wait_for("the failed login counted", lambda: failures() >= before + 1, timeout=60)


def test_reload_applies_a_config_change(box: Box) -> None:
    pid = box.show("hostmon", "MainPID")["MainPID"]
    box.sh("sed -i 's/^tags = {  }$/tags = { reloaded = \"yes\" }/' /etc/hostmon/hostmon.toml && grep -q reloaded /etc/hostmon/hostmon.toml")
    box.sh("systemctl reload hostmon", timeout=60)
    wait_for("the new tag on the metrics", lambda: any(lab.get("reloaded") == "yes" for _, lab, _ in box.metrics()), timeout=60)
    m = box.metrics()
    assert [v for n, lab, v in m if n == "hostmon_config_reloads_total" and lab["result"] == "success"] == [1.0]
    assert box.show("hostmon", "MainPID")["MainPID"] == pid  # reloaded in place, not restarted


def test_watchdog_keeps_it_alive_and_restarts_a_stalled_agent(box: Box) -> None:
    """WatchdogSec shortened to 3 s by a drop-in (30 s would make this test minutes long); the rest unchanged."""
    box.sh("mkdir -p /etc/systemd/system/hostmon.service.d && printf '[Service]\\nWatchdogSec=3\\n' "
           "> /etc/systemd/system/hostmon.service.d/test-watchdog.conf && systemctl daemon-reload && systemctl restart hostmon",
           timeout=90)
    try:
        start = box.show("hostmon", "MainPID", "NRestarts")
        time.sleep(12)  # four watchdog periods
        alive = box.show("hostmon", "MainPID", "NRestarts", "ActiveState")
        assert (alive["MainPID"], alive["NRestarts"], alive["ActiveState"]) == (start["MainPID"], start["NRestarts"], "active")
        box.sh(f"kill -STOP {start['MainPID']}")
        # watchdog timeout (3 s) -> SIGABRT, then Restart=on-failure after RestartSec=5
        after = wait_for(
            "a restart by the watchdog",
            lambda: (s := box.show("hostmon", "MainPID", "NRestarts", "ActiveState", "SubState"))["ActiveState"] == "active"
            and s["SubState"] == "running" and s["MainPID"] != start["MainPID"] and s,
            timeout=45,
        )
        assert int(after["NRestarts"]) == int(start["NRestarts"]) + 1
        assert any("Watchdog timeout" in str(e.get("MESSAGE", "")) for e in box.journal("hostmon"))
    finally:
        box.sh("rm -f /etc/systemd/system/hostmon.service.d/test-watchdog.conf && systemctl daemon-reload "
               "&& systemctl restart hostmon", timeout=90)


def test_stop_ends_it_within_timeout_stop_sec_cleanly(box: Box) -> None:
    box.sh("systemctl is-active hostmon")
    t0 = time.monotonic()
    box.sh("systemctl stop hostmon", timeout=60)
    took = time.monotonic() - t0
    p = box.show("hostmon", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "TimeoutStopUSec")
    assert p["TimeoutStopUSec"] == "30s" and took < 30, (p, took)
    # exited by itself (code 1 = exited) with status 0: not killed after the timeout
    assert (p["ActiveState"], p["Result"], p["ExecMainCode"], p["ExecMainStatus"]) == ("inactive", "success", "1", "0"), p
    msgs = [str(e.get("MESSAGE", "")) for e in box.journal("hostmon")]
    last_start = max(i for i, s in enumerate(msgs) if '"msg": "starting"' in s)
    tail = msgs[last_start:]
    assert any('"msg": "stopping"' in s for s in tail) and any('"msg": "stopped"' in s for s in tail), tail[-5:]
    # nothing left unsaved: the shipper seals what it buffered into the spool at stop and logs an
    # error for any batch it could not write ("their records are lost"); collectors stop in time
    assert not [s for s in tail if '"level": "error"' in s or "Traceback" in s or "did not stop in time" in s], tail


def test_ingest_unit_runs_and_is_restarted_not_reloaded_to_apply_a_change(box: Box) -> None:
    box.sh(
        "runuser -u hostmon-ingest -- hostmon keys ingest --dir /var/lib/hostmon-ingest/keys >/dev/null\n"
        "cat > /etc/hostmon-ingest/ingest.toml <<EOF\n"
        'listen = "127.0.0.1:19436"\n'
        'private_keys = ["/var/lib/hostmon-ingest/keys/ingest.key"]\n'
        "[sqlite]\n"
        'path = "/var/lib/hostmon-ingest/ingest.db"\n'
        "EOF\n"
        "hostmon ingest check-config /etc/hostmon-ingest/ingest.toml\n"
        "systemctl start hostmon-ingest"
    )
    wait_for("ingest healthz", lambda: "ok" in box.get("http://127.0.0.1:19436/healthz"), timeout=60)
    pid = box.show("hostmon-ingest", "MainPID")["MainPID"]
    # no reload: refused, and the ingest keeps running (a "kill -HUP" reload used to end it for good)
    assert box.sh("systemctl reload hostmon-ingest", check=False).returncode != 0
    time.sleep(1)
    assert box.show("hostmon-ingest", "MainPID", "ActiveState") == {"MainPID": pid, "ActiveState": "active"}
    # a change applied by restart: enrol the agent, point it at this ingest, and its batches arrive
    box.sh(
        "pub=$(cat /var/lib/hostmon/keys/agent.pub)\n"
        "printf '\\n[[agents]]\\nname = \"box\"\\npublic_key = \"%s\"\\ntenants = [\"default\"]\\n' \"$pub\" >> /etc/hostmon-ingest/ingest.toml\n"
        "install -m 0644 /var/lib/hostmon-ingest/keys/ingest.pub /etc/hostmon/ingest.pub\n"
        "sed -i 's|^ingest_url = .*|ingest_url = \"http://127.0.0.1:19436\"|; "
        "s|^ingest_public_key = .*|ingest_public_key = \"/etc/hostmon/ingest.pub\"|' /etc/hostmon/hostmon.toml\n"
        "grep -q '^ingest_url = \"http://127.0.0.1:19436\"' /etc/hostmon/hostmon.toml\n"
        "systemctl restart hostmon-ingest\n"
        "systemctl start hostmon",
        timeout=120,
    )

    def stored() -> int:
        out = box.sh("runuser -u hostmon-ingest -- hostmon ingest query --db /var/lib/hostmon-ingest/ingest.db "
                     "--tenant default --name node_memory_MemTotal_bytes --format json", check=False).stdout
        return len([line for line in out.splitlines() if line.strip()])

    wait_for("the agent's batches in the ingest", stored, timeout=90, every=2)
    t0 = time.monotonic()
    box.sh("systemctl stop hostmon-ingest", timeout=60)
    assert time.monotonic() - t0 < 30
    p = box.show("hostmon-ingest", "ActiveState", "Result", "ExecMainStatus")
    assert (p["ActiveState"], p["Result"], p["ExecMainStatus"]) == ("inactive", "success", "0"), p  # not "timeout"
    msgs = [str(e.get("MESSAGE", "")) for e in box.journal("hostmon-ingest")]
    last_start = max(i for i, s in enumerate(msgs) if "ingest listening on" in s)
    tail = msgs[last_start:]
    assert any("Deactivated successfully" in s for s in tail), tail
    assert not [s for s in tail if "Traceback" in s or "SIGKILL" in s or "leaked" in s], tail


def test_process_fds_drop_in_restores_other_users_fd_counts(box: Box) -> None:
    """Without the drop-in, other users' fd counts are refused and counted; with its capability, none are."""
    box.sh("systemctl restart hostmon", timeout=90)

    def perm_errors() -> float:
        (v,) = [v for n, _, v in box.metrics() if n == "hostmon_process_permission_errors_total"]
        return v

    assert wait_for("permission errors counted", lambda: perm_errors() > 0, timeout=60)
    box.sh("mkdir -p /etc/systemd/system/hostmon.service.d && cp /usr/share/doc/hostmon/examples/process-fds.conf "
           "/etc/systemd/system/hostmon.service.d/ && systemctl daemon-reload && systemctl restart hostmon", timeout=90)
    try:
        assert box.show("hostmon", "AmbientCapabilities")["AmbientCapabilities"] == "cap_dac_read_search"
        wait_for("processes collected", lambda: any(n == "hostmon_process_permission_errors_total" for n, _, _ in box.metrics()))
        time.sleep(1)
        assert perm_errors() == 0
    finally:
        box.sh("rm -f /etc/systemd/system/hostmon.service.d/process-fds.conf && systemctl daemon-reload", timeout=60)


def test_remove_stops_the_service_and_purge_removes_config_and_state(box: Box) -> None:
    assert box.sh("systemctl is-active hostmon || true").stdout.strip() == "active"
    box.sh("apt-get remove -y -q hostmon", timeout=120)
    assert box.sh("systemctl is-active hostmon || true").stdout.strip() in ("inactive", "unknown")
    assert box.sh("pgrep -f '^/opt/hostmon/bin/python /opt/hostmon/bin/hostmon run' || true").stdout.strip() == ""
    gone = box.sh("for p in /opt/hostmon /usr/bin/hostmon /lib/systemd/system/hostmon.service; do "
                  "[ -e $p ] && echo $p; done; true").stdout.split()
    assert gone == []
    box.sh("test -f /etc/hostmon/hostmon.toml")  # the conffile stays on remove
    box.sh("apt-get purge -y -q hostmon", timeout=120)
    left = box.sh("for p in /etc/hostmon/hostmon.toml /var/lib/hostmon /var/lib/hostmon-ingest; do "
                  "[ -e $p ] && echo $p; done; true").stdout.split()
    assert left == [], left
    # files the operator put there stay (docs/deployment.md): the ingest's config and the agent's copy of its key
    box.sh("test -f /etc/hostmon-ingest/ingest.toml && test -f /etc/hostmon/ingest.pub")
