"""CPU cost per process of the ``processes`` collector, next to psutil measured in the same run.

Budget (issue 2, point 10): at most 40 µs of CPU per process with about 1,000
extra processes. The peer is ``psutil.process_iter`` with the attributes the same
figures need (name, username, cpu_times, memory_info, num_fds).

It spawns ``--procs`` sleeping children (``sleep 600``), runs several collections
of each kind, measures the CPU time of the collecting thread (``time.thread_time``)
per collection divided by the number of processes seen, and prints the medians
and the ratio. The children are killed (SIGKILL) and reaped at the end, also on
error or Ctrl-C.

    python bench/processes_bench.py [--procs 1000] [--runs 7] [--tenancy]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostmond.agent.tenancy import Tenancy, TenantRule
from hostmond.collectors.processes import ProcessesCollector, ProcessesConfig

from hostmond.api import CollectorContext


def _count_pids(proc: str = "/proc") -> int:
    return sum(1 for e in os.listdir(proc) if e.isdigit())


def _hostmon_run(c: ProcessesCollector) -> tuple[float, int]:
    n = _count_pids()
    t0 = time.thread_time()
    samples = list(c.collect())
    dt = time.thread_time() - t0
    assert samples
    return dt, n


def _psutil_run() -> tuple[float, int]:
    attrs = ["name", "username", "cpu_times", "memory_info", "num_fds"]
    t0 = time.thread_time()
    n = 0
    for p in psutil.process_iter(attrs):
        _ = p.info
        n += 1
    return time.thread_time() - t0, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=1000, help="extra sleeping processes to spawn")
    ap.add_argument("--runs", type=int, default=9, help="collections measured per side (after one warm-up)")
    ap.add_argument(
        "--tenancy", action="store_true", help="also measure with tenant rules that need each process's cgroup"
    )
    args = ap.parse_args()

    children: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(args.procs):
            children.append(subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, close_fds=True))
        time.sleep(0.5)
        total = _count_pids()
        print(f"processes on the host during the run: {total} ({args.procs} spawned sleep children)")

        variants: list[tuple[str, CollectorContext]] = [("hostmon processes (no tenant rules)", CollectorContext())]
        if args.tenancy:
            rules = [
                TenantRule(tenant_id="team-a", users=["nobody"]),
                TenantRule(tenant_id="team-b", cgroup_regex=r"^/kubepods/"),
                TenantRule(tenant_id="team-c", container_id_regex=r"^ab"),
            ]
            variants.append(
                (
                    "hostmon processes (3 tenant rules: user, cgroup, container id)",
                    CollectorContext(tenancy=Tenancy(rules, "default"), tags={"tenant_id": "default"}),
                )
            )

        # Interleaved rounds (each variant, then the peer) so that load from other users of
        # this shared machine hits both sides alike; medians over the rounds.
        collectors = []
        for label, ctx in variants:
            c = ProcessesCollector(ProcessesConfig(), ctx)
            list(c.collect())  # warm-up (first run fills the per-PID cache)
            collectors.append((label, c))
        _psutil_run()  # warm-up
        per_proc: dict[str, list[float]] = {label: [] for label, _ in collectors}
        peer: list[float] = []
        for _ in range(args.runs):
            for label, c in collectors:
                dt, n = _hostmon_run(c)
                per_proc[label].append(dt / n * 1e6)
            dt, n = _psutil_run()
            peer.append(dt / n * 1e6)
        results: dict[str, float] = {}
        for label, xs in per_proc.items():
            results[label] = statistics.median(xs)
            print(f"{label}: median {results[label]:.1f} µs CPU/process over {args.runs} runs "
                  f"(min {min(xs):.1f}, max {max(xs):.1f})")
        if args.tenancy:
            # Steady state caches the tenant per PID; a fresh collector pays the cgroup reads once.
            c2 = ProcessesCollector(ProcessesConfig(), variants[-1][1])
            dt, n = _hostmon_run(c2)
            print(f"  first collection of a fresh collector with tenant rules: {dt / n * 1e6:.1f} µs CPU/process")
        pmed = statistics.median(peer)
        print(f"psutil.process_iter(name, username, cpu_times, memory_info, num_fds): median {pmed:.1f} µs CPU/process "
              f"(min {min(peer):.1f}, max {max(peer):.1f})")
        for label, med in results.items():
            print(f"ratio {label} / psutil: {med / pmed:.2f}")
        print(f"budget: 40 µs/process -> {'OK' if all(m <= 40 for m in results.values()) else 'OVER'}")
    finally:
        for ch in children:
            try:
                ch.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        for ch in children:
            ch.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
