"""Issue 12, F4: a garbled or empty position file loses nothing logged while the agent was down, and says so.

The real ``hostmon run`` process follows a real log file; it is stopped, failures are
logged while it is down, its saved position is damaged, and it is started again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.slow


def failed_lines(n: int, start: int) -> str:
    ts = time.strftime("%b %e %H:%M:%S", time.localtime())
    return "".join(f"{ts} web sshd[{start + j}]: Failed password for root from 192.0.2.{start % 200 + j} port 4{j} ssh2\n"
                   for j in range(n))


def password_failures(port: int) -> float | None:
    text = http_get(f"http://127.0.0.1:{port}/metrics")[2].decode()
    return metric_value(text, "hostmon_auth_failures_total", {"service": "sshd", "reason": "password"})


class Agent:
    def __init__(self, tmp: Path, log: Path) -> None:
        self.port = free_port()
        self.cfg = tmp / "hostmon.toml"
        self.cfg.write_text(
            f'tenant_id = "acme"\nstate_dir = "{tmp / "state"}"\n'
            f'[http]\nlisten = "127.0.0.1:{self.port}"\n[runtime]\ninterval = 1.0\n[shipping]\nenabled = false\n'
            f'[collectors.auth]\nfiles = ["{log}"]\njournal = false\nbtmp = ""\n'
        )
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
        env.pop("NOTIFY_SOCKET", None)
        with open(self.tmp / f"{name}.log", "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run", "--config", str(self.cfg)],
                                         env=env, stdout=subprocess.DEVNULL, stderr=f)
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200, timeout=60, what="ready")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=15) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("damage", ["garbled", "empty-and-no-previous-save"])
def test_failures_logged_while_down_are_counted_after_the_position_file_is_damaged(tmp_path: Path, damage: str) -> None:
    log = tmp_path / "auth.log"
    log.write_text("Jan  1 00:00:00 web sshd[1]: Server listening on 0.0.0.0 port 22.\n")
    agent = Agent(tmp_path, log)
    agent.start("first")
    try:
        with open(log, "a") as f:
            f.write(failed_lines(2, 100))
        wait_until(lambda: password_failures(agent.port) == 2, timeout=30, what="2 failures counted")
    finally:
        agent.stop()
    state = tmp_path / "state" / "collectors" / "auth.json"
    assert state.exists() and (tmp_path / "state" / "collectors" / "auth.json.prev").exists()
    if damage == "garbled":
        state.write_bytes(b'{"files": {"/var/log/au\x00\xff garbage')
    else:
        state.write_bytes(b"")
        os.unlink(str(state) + ".prev")
    time.sleep(1.2)  # the failures below are logged in a later second than the damaged file's last write
    with open(log, "a") as f:
        f.write(failed_lines(3, 200))  # logged while the agent is down
    agent.start("second")
    try:
        wait_until(lambda: password_failures(agent.port) is not None, timeout=30, what="auth collected")
        time.sleep(2.5)  # a few more collections: nothing else may be counted
        text = http_get(f"http://127.0.0.1:{agent.port}/metrics")[2].decode()
    finally:
        agent.stop()
    # the 3 failures logged while down, and not the 2 counted by the first run
    assert metric_value(text, "hostmon_auth_failures_total", {"service": "sshd", "reason": "password"}) == 3
    assert metric_value(text, "hostmon_collector_state_resets_total", {"collector": "auth"}) == 1
    assert metric_value(text, "hostmon_collector_state_resets_total", {"collector": "cpu"}) == 0
    assert "collector state reset" in (tmp_path / "second.log").read_text()
