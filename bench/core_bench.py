#!/usr/bin/env python3
"""Agent-core budgets, side by side with node_exporter measured in the same run.

    python3 bench/core_bench.py [--quick] [--interval 1] [--windows 3] [--window 30]

Prints:
  0. what a user sees in top: whole-process CPU per cycle (utime+stime from /proc/PID/stat over the
     window; its children's CPU beside it) and RSS of `hostmon run` (defaults with shipping off; defaults,
     shipping to the embedded ingest; shipping to a central ingest run as a separate process) beside
     node_exporter with its defaults, all running at once and scraped in the same loop;
     the median over several windows, and the ratios;
  1. the in-process breakdown: CPU per collection cycle of cpu+memory+disk+network, rendering included (median), against
     node_exporter's CPU per scrape with the matching collectors, and the series counts;
  2. /metrics latency under 8 concurrent scrapers (median, p99) for hostmon and node_exporter;
  3. steady RSS of `hostmon run` with every built-in collector on, and its growth over 2,000 cycles.
Figures are medians; ratios are against the peer measured in this run (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
# node_exporter collectors that produce the figures of our cpu, memory, disk and network collectors.
NE_MATCHING = ["cpu", "loadavg", "stat", "pressure", "meminfo", "filesystem", "diskstats", "netdev", "netclass", "tcpstat"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[11]) + int(st[12])) / TICK


def proc_children_cpu(pid: int) -> float:
    """CPU of the process's children, a user sees it too: those it waited for (cutime+cstime) plus
    the ones running now (a long-lived ``journalctl --follow``), found by their parent pid."""
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    total = (int(st[13]) + int(st[14])) / TICK
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                cst = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(cst[1]) == pid:
            total += (int(cst[11]) + int(cst[12]) + int(cst[13]) + int(cst[14])) / TICK
    return total


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def series_count(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def start_node_exporter(collectors: list[str] | None) -> tuple[subprocess.Popen[bytes], str]:
    if NODE_EXPORTER is None:
        raise SystemExit("node_exporter not installed: apt-get install prometheus-node-exporter")
    port = free_port()
    args = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"]
    if collectors is not None:
        args.append("--collector.disable-defaults")
        args += [f"--collector.{c}" for c in collectors]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    wait_http(url)
    return p, url


def bench_cycle_cpu(cycles: int) -> tuple[float, int]:
    """Median thread-CPU of one cpu+memory+disk+network cycle plus a render, in-process."""
    from hostmond.agent import config as config_mod
    from hostmond.agent.exposition import MetricStore
    from hostmond.agent.registry import discover
    from hostmond.agent.runtime import apply_tags, build_collectors

    from hostmond.core import selfmetrics

    classes, _ = discover()
    cfg = config_mod.load(None, {})
    runners, _ = build_collectors(cfg, classes, persist_state=False, only=["cpu", "memory", "disk", "network"])
    store = MetricStore({s.name: s for _, s in selfmetrics.declared()})
    for c in classes.values():
        store.add_specs(c.metrics)
    for r in runners:
        r.c.start()
    tags = cfg.resolved_tags()
    times = []
    n = 0
    for i in range(cycles + 5):
        t0 = time.thread_time()
        for r in runners:
            samples, _ = apply_tags(r.c.collect(), tags)
            store.update(r.name, samples)  # no loop: renders now, as the agent does once per change
        t1 = time.thread_time()
        if i >= 5:
            times.append(t1 - t0)
        n = series_count(store.body(False, False))
    for r in runners:
        r.c.stop()
    return statistics.median(times), n


def bench_ne_scrape_cpu(url: str, pid: int, scrapes: int) -> tuple[float, int]:
    for _ in range(5):
        body = get(url)
    per = []
    for _ in range(scrapes):
        c0 = proc_cpu(pid)
        body = get(url)
        per.append(proc_cpu(pid) - c0)
    # clock ticks are 10 ms: the mean of many scrapes is the honest per-scrape figure
    return statistics.mean(per), series_count(body)


async def _scrapers(url: str, concurrency: int, total: int) -> list[float]:
    import aiohttp

    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one() -> None:
            t0 = time.perf_counter()
            async with s.get(url) as r:
                await r.read()
            lat.append(time.perf_counter() - t0)

        for _ in range(20):
            await one()
        lat.clear()
        for _ in range(total // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
    return lat


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start_hostmon(env_extra: dict[str, str], state: str | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    state = state or tempfile.mkdtemp(prefix="hostmon-bench-")
    env = {**os.environ, "HOSTMON_STATE_DIR": state, "HOSTMON_LISTEN": f"127.0.0.1:{port}", **env_extra}
    p = subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            get(url + "/readyz")
            break
        except OSError:
            time.sleep(0.1)
    return p, url, state


def stop(p: subprocess.Popen[bytes]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def start_central_ingest(tmp: str) -> tuple[subprocess.Popen[bytes], dict[str, str], str]:
    """A separate ``hostmon ingest run`` (a central ingest, as on another host) and the agent settings to ship to it."""
    hm = [sys.executable, "-m", "hostmond.cli"]
    subprocess.run([*hm, "keys", "ingest", "--dir", tmp], check=True, capture_output=True, cwd=REPO)
    state = os.path.join(tmp, "agent-state")
    subprocess.run([*hm, "keys", "agent", "--dir", os.path.join(state, "keys")], check=True, capture_output=True, cwd=REPO)
    port = free_port()
    with open(os.path.join(tmp, "ingest.toml"), "w") as f:
        f.write(
            f'listen = "127.0.0.1:{port}"\nprivate_keys = ["ingest.key"]\ndecode_workers = 0\n'
            f'[[agents]]\nname = "bench"\npublic_key = "{state}/keys/agent.pub"\ntenants = ["default"]\n'
        )
    p = subprocess.Popen([*hm, "ingest", "run", "--config", os.path.join(tmp, "ingest.toml")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    env = {"HOSTMON_SHIPPING__INGEST_URL": f"http://127.0.0.1:{port}",
           "HOSTMON_SHIPPING__INGEST_PUBLIC_KEY": os.path.join(tmp, "ingest.pub")}
    return p, env, state


def bench_whole_process(interval: float, window: float, windows: int) -> None:
    """Section 0: the processes a user runs, side by side, scraped at ``interval``; CPU per cycle per window."""
    procs: dict[str, tuple[subprocess.Popen[bytes], str, str | None]] = {}
    base = {"HOSTMON_RUNTIME__INTERVAL": str(interval), "HOSTMON_RUNTIME__JITTER": "0"}
    configs = {
        "hostmon, shipping off": {**base, "HOSTMON_SHIPPING__ENABLED": "false"},
        "hostmon, embedded ingest": base,
        # no collectors, shipping off: the timers, self-metrics and the scrape itself, i.e. the agent's
        # cost between collections; at --interval 15 its share of the "shipping off" row is the idle cost
        "hostmon, no collectors": {**base, "HOSTMON_SHIPPING__ENABLED": "false", "HOSTMON_RUNTIME__DISABLE_DEFAULT_COLLECTORS": "true",
                                   "HOSTMON_ANOMALY__ENABLED": "false"},
    }
    ingest_tmp = tempfile.mkdtemp(prefix="hostmon-bench-ingest-")
    ingest: subprocess.Popen[bytes] | None = None
    try:
        ingest, ship_env, ship_state = start_central_ingest(ingest_tmp)
        configs["hostmon, central ingest"] = {**base, **ship_env}
        for name, env in configs.items():
            p, url, state = start_hostmon(env, state=ship_state if name == "hostmon, central ingest" else None)
            procs[name] = (p, url + "/metrics", state)
        ne, ne_url = start_node_exporter(None)
        procs["node_exporter, defaults"] = (ne, ne_url, None)
        time.sleep(3 * interval)
        per_window: dict[str, list[float]] = {n: [] for n in procs}
        children: dict[str, list[float]] = {n: [] for n in procs}
        ingest_cpu: list[float] = []
        bodies: dict[str, bytes] = {}
        for _ in range(windows):
            c0 = {n: proc_cpu(p.pid) for n, (p, _, _) in procs.items()}
            k0 = {n: proc_children_cpu(p.pid) for n, (p, _, _) in procs.items()}
            i0 = proc_cpu(ingest.pid)
            t0 = time.monotonic()
            cycles = 0
            while time.monotonic() - t0 < window:
                ts = time.monotonic()
                for n, (_, url, _) in procs.items():
                    bodies[n] = get(url)
                cycles += 1
                time.sleep(max(0.0, interval - (time.monotonic() - ts)))
            for n, (p, _, _) in procs.items():
                per_window[n].append((proc_cpu(p.pid) - c0[n]) / cycles)
                children[n].append((proc_children_cpu(p.pid) - k0[n]) / cycles)
            ingest_cpu.append((proc_cpu(ingest.pid) - i0) / cycles)
        rss = {n: proc_rss(p.pid) for n, (p, _, _) in procs.items()}
    finally:
        for p, _, state in procs.values():
            stop(p)
            if state:
                shutil.rmtree(state, ignore_errors=True)
        if ingest is not None:
            stop(ingest)
        shutil.rmtree(ingest_tmp, ignore_errors=True)
    ne_cpu = statistics.median(per_window["node_exporter, defaults"])
    print(f"\n[0] Whole process, side by side: scraped every {interval:g} s, {windows} windows of {window:g} s "
          "(CPU from /proc/PID/stat, median of the windows)")
    print(f"  {'process':28} {'CPU ms/cycle':>12} {'ratio':>6} {'children':>8} {'RSS MB':>7} {'series':>7}")
    for n in procs:
        med = statistics.median(per_window[n])
        ratio = f"{med / ne_cpu:6.2f}" if ne_cpu else "     -"
        kids = statistics.median(children[n])
        print(f"  {n:28} {med * 1e3:12.2f} {ratio} {kids * 1e3:8.2f} {rss[n] / 1e6:7.1f} {series_count(bodies[n]):7d}")
    off, idle = statistics.median(per_window["hostmon, shipping off"]), statistics.median(per_window["hostmon, no collectors"])
    if off:
        print(f"  idle cost (timers, self-metrics, serving the scrape; no collector): {idle * 1e3:.2f} ms per cycle, "
              f"{100 * idle / off:.0f}% of the shipping-off agent's")
    print(f"  (the central ingest process itself: {statistics.median(ingest_cpu) * 1e3:.2f} ms per cycle, on its own host in production)")
    print("  (children: CPU of the agent's child processes, e.g. journalctl --follow; clock ticks are 10 ms:")
    print("   a window's figure is its total CPU over its cycles)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--rss-cycles", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=1.0, help="scrape and collection interval of section 0")
    ap.add_argument("--window", type=float, default=30.0, help="seconds per window of section 0")
    ap.add_argument("--windows", type=int, default=3, help="windows of section 0 (the median is quoted)")
    args = ap.parse_args()
    cycles = 50 if args.quick else 300
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; node_exporter {NODE_EXPORTER}")

    bench_whole_process(args.interval, 10.0 if args.quick else args.window, 1 if args.quick else args.windows)

    # 1. CPU per cycle
    hm_cpu, hm_series = bench_cycle_cpu(cycles)
    ne, ne_url = start_node_exporter(NE_MATCHING)
    try:
        ne_cpu, ne_series = bench_ne_scrape_cpu(ne_url, ne.pid, cycles)
    finally:
        stop(ne)
    ne_all, ne_all_url = start_node_exporter(None)
    try:
        ne_all_cpu, ne_all_series = bench_ne_scrape_cpu(ne_all_url, ne_all.pid, cycles)
        ne_rss = proc_rss(ne_all.pid)
        ne_lat = asyncio.run(_scrapers(ne_all_url, 8, 400 if args.quick else 4000))
    finally:
        stop(ne_all)
    print("\n[1] CPU per collection cycle (cpu+memory+disk+network, render included)")
    print(f"  hostmon       median {hm_cpu * 1e3:6.2f} ms CPU per cycle   ({hm_series} series, {cycles} cycles)")
    print(f"  node_exporter mean   {ne_cpu * 1e3:6.2f} ms CPU per scrape  ({ne_series} series; collectors {','.join(NE_MATCHING)})")
    print(f"  ratio hostmon/node_exporter: {hm_cpu / ne_cpu:.2f}" if ne_cpu else "  node_exporter CPU below clock resolution")
    print(f"  (node_exporter with all its defaults: {ne_all_cpu * 1e3:.2f} ms per scrape, {ne_all_series} series, RSS {ne_rss / 1e6:.1f} MB)")

    # 2. scrape latency under 8 concurrent scrapers, all collectors on
    # The per-client rate limit (10/s by default) would refuse a one-address hammer; raise it so the
    # middleware still runs and its cost is measured.
    unlimited = {"HOSTMON_WEB__RATE_LIMIT__REQUESTS_PER_SECOND": "1000000", "HOSTMON_WEB__RATE_LIMIT__BURST": "1000000"}
    p, url, state = start_hostmon({"HOSTMON_SHIPPING__ENABLED": "false", **unlimited})
    try:
        hm_lat = asyncio.run(_scrapers(url + "/metrics", 8, 400 if args.quick else 4000))
        body = get(url + "/metrics")
    finally:
        stop(p)
        shutil.rmtree(state, ignore_errors=True)
    print("\n[2] /metrics latency, 8 concurrent scrapers")
    print(f"  hostmon       median {statistics.median(hm_lat) * 1e3:6.2f} ms  p99 {pct(hm_lat, 99) * 1e3:6.2f} ms  ({len(hm_lat)} requests, {series_count(body)} series)")
    print(f"  node_exporter median {statistics.median(ne_lat) * 1e3:6.2f} ms  p99 {pct(ne_lat, 99) * 1e3:6.2f} ms  ({len(ne_lat)} requests)")

    # 3. RSS steady and growth over many cycles, every built-in collector on
    interval = 0.05
    p, url, state = start_hostmon({"HOSTMON_RUNTIME__INTERVAL": str(interval), "HOSTMON_RUNTIME__JITTER": "0", "HOSTMON_SHIPPING__ENABLED": "false", **unlimited})
    try:
        def runs() -> int:
            text = get(url + "/metrics").decode()
            return min(
                int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines()
                if line.startswith("hostmon_collector_runs_total{")
            )

        while runs() < 100:
            time.sleep(0.5)
        rss_100 = proc_rss(p.pid)
        t0 = time.monotonic()
        while runs() < args.rss_cycles and time.monotonic() - t0 < 600:
            time.sleep(1)
        rss_end = proc_rss(p.pid)
        done = runs()
        cpu = proc_cpu(p.pid)
    finally:
        stop(p)
        shutil.rmtree(state, ignore_errors=True)
    print("\n[3] RSS of `hostmon run`, every built-in collector on (shipping off: the collectors' budget)")
    print(f"  after 100 cycles {rss_100 / 1e6:.1f} MB; after {done} cycles {rss_end / 1e6:.1f} MB; growth {(rss_end - rss_100) / 1e6:+.2f} MB")
    print(f"  node_exporter RSS (all defaults, this run): {ne_rss / 1e6:.1f} MB; process CPU total {cpu:.1f} s")

    # 4. The newcomer's default: shipping on, to the embedded ingest in the same process.
    p, url, state = start_hostmon({"HOSTMON_RUNTIME__INTERVAL": str(interval), "HOSTMON_RUNTIME__JITTER": "0", **unlimited})
    try:
        while runs() < 100:
            time.sleep(0.5)
        rss_100 = proc_rss(p.pid)
        target = min(args.rss_cycles, 1000)
        t0 = time.monotonic()
        while runs() < target and time.monotonic() - t0 < 300:
            time.sleep(1)
        rss_end = proc_rss(p.pid)
        done = runs()
    finally:
        stop(p)
        shutil.rmtree(state, ignore_errors=True)
    print("\n[4] RSS of `hostmon run` with the defaults: every collector, shipping to the embedded ingest (SQLite)")
    print(f"  after 100 cycles {rss_100 / 1e6:.1f} MB; after {done} cycles {rss_end / 1e6:.1f} MB; growth {(rss_end - rss_100) / 1e6:+.2f} MB")


if __name__ == "__main__":
    main()
