#!/usr/bin/env python3
"""False alarms of the anomaly stage on this host over a quiet run (nothing injected).

    python3 bench/anomaly_quiet.py [--seconds 600] [--interval 0.25] [--learn 160]

Starts `hostmon run` (this tree's) with the agent of tests/agent/test_anomaly_host.py:
three watched series (CPU user time as a rate, available memory, bytes written to
disk as a rate; with the default watch list's floors unless --no-floors), no seasonal profile, at --interval seconds, lets it learn for
--learn cycles, then counts the `anomaly` events it logs over --seconds and prints
each (series, value, the range the model expected, score). Anything else running
on the host (other users' jobs, test suites) is part of what it measures.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cycles(url: str) -> float:
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith('hostmon_collector_runs_total{collector="memory"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "anomaly":
            out.append(rec)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--learn", type=int, default=160)
    ap.add_argument("--no-floors", action="store_true",
                    help="watch without the default watch list's min_change floors (as before they existed)")
    a = ap.parse_args()
    cpu_floor, mem_floor, disk_floor = ("", "", "") if a.no_floors else (
        "min_change = 0.1\n", "min_change = 16777216\nmin_change_ratio = 0.02\n", "min_change = 1048576\n")
    tmp = Path(tempfile.mkdtemp(prefix="hostmon-quiet-"))
    port = free_port()
    cfg = tmp / "hostmon.toml"
    cfg.write_text(f"""
state_dir = "{tmp / "state"}"
[http]
listen = "127.0.0.1:{port}"
[runtime]
interval = {a.interval}
jitter = 0.0
[shipping]
enabled = false
[collectors.processes]
enabled = false
[collectors.auth]
enabled = false
[collectors.network]
enabled = false
[collectors.gpu]
enabled = false
[anomaly]
defaults = false
learn_samples = {a.learn}
season_weight = 0.0
[[anomaly.watch]]
metric = "node_cpu_seconds_total"
match = {{ mode = "user" }}
by = ["mode"]
{cpu_floor}[[anomaly.watch]]
metric = "node_memory_MemAvailable_bytes"
{mem_floor}[[anomaly.watch]]
metric = "node_disk_written_bytes_total"
exclude = {{ device = "loop.*|ram.*|zram.*|dm-.*|sr.*" }}
{disk_floor}""")
    log = tmp / "agent.log"
    url = f"http://127.0.0.1:{port}/metrics"
    with open(log, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run", "--config", str(cfg)], stdout=f, stderr=f)
    try:
        deadline = time.monotonic() + 60 + a.learn * a.interval * 4
        while cycles(url) < a.learn + 4:
            if time.monotonic() > deadline or p.poll() is not None:
                print(f"the agent did not get through {a.learn} cycles; its log: {log}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        c0 = cycles(url)
        time.sleep(a.seconds)
        c1 = cycles(url)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    ev = events(log)
    n = (c1 - c0) * 3
    print(f"quiet run: {a.seconds:.0f} s after {a.learn} cycles of learning, {c1 - c0:.0f} cycles x 3 series: "
          f"{len(ev)} anomaly events ({len(ev) / n * 1000 if n else 0:.2f} per 1,000 series-samples)")
    for e in ev:
        print(f"  {e['series']}: value {e['value']:.6g}, expected {e['expected_low']:.6g} .. {e['expected_high']:.6g}, score {e['score']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
