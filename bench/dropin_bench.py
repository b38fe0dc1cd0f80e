#!/usr/bin/env python3
"""hostmon as a node_exporter drop-in: whole-process cost for the same work, in one run.

Four exporters run at once on 127.0.0.1 and are scraped by one loop, once per ``--interval``, in an order
that rotates each window (hostmon also collects on its own every ``--interval``; shipping is off, as a
drop-in has no ingest):

  hostmon-ne-set      hostmon with node_exporter's collector set: its defaults without the two collectors
                      node_exporter has no default counterpart for (``--no-collector.processes``, per-tenant
                      process groups; ``--no-collector.auth``, failed logins)
  hostmon-defaults    hostmon with its defaults
  ne-defaults         node_exporter with its defaults (Debian's ``prometheus-node-exporter``)
  ne-processes        node_exporter with ``--collector.processes`` as well

For each: CPU per cycle (utime+stime from /proc/PID/stat over each window, divided by the scrapes; the
clock tick is 10 ms, so a 60-scrape window reads in steps of 0.17 ms), the median over the windows, RSS at
the end, and the series of one scrape. The budget (issue 13, point 7): hostmon doing node_exporter's work
(``hostmon-ne-set``) costs no more CPU than node_exporter with its defaults. The other two ratios say
what hostmon's defaults cost beside each node_exporter.

    python3 bench/dropin_bench.py [--interval 1] [--window 60] [--windows 3] [--hostmon PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / TICK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read()
    except OSError:
        return b""


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=1.0, help="scrape and collection interval, seconds")
    ap.add_argument("--window", type=float, default=60.0, help="seconds per window")
    ap.add_argument("--windows", type=int, default=3, help="windows (the median is quoted)")
    ap.add_argument("--hostmon", default=shutil.which("hostmon"), help="the hostmon command (default: on PATH)")
    a = ap.parse_args()
    ne = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if not ne or not a.hostmon:
        print("needs prometheus-node-exporter (apt) and hostmon on PATH", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="dropin-bench-")
    procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def start(name: str, argv: list[str], port: int) -> None:
        log = open(os.path.join(tmp, name + ".log"), "wb")  # noqa: SIM115 - kept open for the child's life
        procs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log), f"http://127.0.0.1:{port}/metrics")

    def hostmon(name: str, flags: list[str]) -> None:
        port = free_port()
        cfg = os.path.join(tmp, name + ".toml")
        with open(cfg, "w") as f:
            f.write(
                f'state_dir = "{tmp}/{name}-state"\n[runtime]\ninterval = {a.interval}\njitter = 0.0\n'
                "[shipping]\nenabled = false\n"
            )
        start(name, [a.hostmon, "run", "--config", cfg, f"--web.listen-address=127.0.0.1:{port}", *flags], port)

    try:
        hostmon("hostmon-ne-set", ["--no-collector.processes", "--no-collector.auth"])
        hostmon("hostmon-defaults", [])
        for name, flags in (("ne-defaults", []), ("ne-processes", ["--collector.processes"])):
            port = free_port()
            start(name, [ne, f"--web.listen-address=127.0.0.1:{port}", *flags], port)
        deadline = time.monotonic() + 30
        for name, (p, url) in procs.items():
            while not get(url.replace("/metrics", "/readyz") if name.startswith("hostmon") else url):
                if time.monotonic() > deadline or p.poll() is not None:
                    print(f"{name} did not come up (logs in {tmp})", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        time.sleep(2 * a.interval)
        per: dict[str, list[float]] = {n: [] for n in procs}
        bodies: dict[str, bytes] = {}
        names = list(procs)
        for w in range(a.windows):
            order = names[w % len(names):] + names[: w % len(names)]
            c0 = {n: cpu_seconds(procs[n][0].pid) for n in names}
            t0 = time.monotonic()
            cycles = 0
            while time.monotonic() - t0 < a.window:
                ts = time.monotonic()
                for n in order:
                    bodies[n] = get(procs[n][1])
                cycles += 1
                time.sleep(max(0.0, a.interval - (time.monotonic() - ts)))
            for n in names:
                per[n].append((cpu_seconds(procs[n][0].pid) - c0[n]) * 1000 / cycles)
            print(f"window {w + 1}: {cycles} scrapes; " + ", ".join(f"{n} {per[n][-1]:.2f}" for n in names), flush=True)
        med = {n: statistics.median(v) for n, v in per.items()}
        print(f"\ninterval {a.interval} s, {a.windows} windows of {a.window:.0f} s, medians")
        print(f"{'process':18} {'CPU ms/cycle':>12} {'RSS MB':>7} {'series':>7}")
        for n in names:
            print(f"{n:18} {med[n]:12.2f} {rss_mb(procs[n][0].pid):7.1f} {series(bodies.get(n, b'')):7d}")
        ratios = (
            ("hostmon-ne-set / ne-defaults (the budget: at most 1.0)", "hostmon-ne-set", "ne-defaults"),
            ("hostmon-defaults / ne-defaults", "hostmon-defaults", "ne-defaults"),
            ("hostmon-defaults / ne-processes", "hostmon-defaults", "ne-processes"),
        )
        for label, x, y in ratios:
            print(f"ratio {label}: {med[x] / med[y]:.2f}" if med[y] else f"ratio {label}: n/a (no CPU measured)")
        return 0
    finally:
        for p, _ in procs.values():
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
