"""Issue 12, F5: an agent stopped with SIGSTOP counts one missed period per collector, not one overrun per tick."""

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

STOPPED_FOR = 8.0  # seconds, at a 1 s interval: main counted 8-9 overruns per collector


def _scrape(port: int) -> str:
    return http_get(f"http://127.0.0.1:{port}/metrics")[2].decode()


def test_sigstop_for_many_periods_is_one_missed_period_not_overruns(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(
        f'tenant_id = "acme"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n[runtime]\ninterval = 1.0\njitter = 0.0\n'
        "[shipping]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env.pop("NOTIFY_SOCKET", None)
    log = tmp_path / "agent.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run", "--config", str(cfg)],
                                env=env, stdout=subprocess.DEVNULL, stderr=f)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60, what="ready")
        time.sleep(2.5)
        before = _scrape(port)
        collectors = ["cpu", "memory", "network"]
        over0 = {c: metric_value(before, "hostmon_collector_overruns_total", {"collector": c}) for c in collectors}
        runs0 = metric_value(before, "hostmon_collector_runs_total", {"collector": "cpu"})
        proc.send_signal(signal.SIGSTOP)
        time.sleep(STOPPED_FOR)
        proc.send_signal(signal.SIGCONT)
        # it runs on: collections resume within a couple of periods
        wait_until(lambda: (metric_value(_scrape(port), "hostmon_collector_runs_total", {"collector": "cpu"}) or 0)
                   >= runs0 + 2, timeout=20, what="collections resume after SIGCONT")
        after = _scrape(port)
        for c in collectors:
            over = metric_value(after, "hostmon_collector_overruns_total", {"collector": c}) - over0[c]
            missed = metric_value(after, "hostmon_collector_missed_periods_total", {"collector": c})
            assert over <= 1, f"{c}: {over} overruns counted for one SIGSTOP of {STOPPED_FOR} s"
            assert missed == 1, f"{c}: missed periods {missed}"
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert text.count("stood still") == 1, text[-2000:]
