#!/usr/bin/env python3
"""CPU per collection of each built-in collector (the default-enabled ones), cold and warm.

    python3 bench/collectors_bench.py [--rounds 15] [--pause 0.1] [--only processes,network]

A collector that runs once a second finds the CPU caches cold: the rest of the agent and of
the host ran in between. So each collector is timed twice per round (thread CPU,
``time.thread_time``): "cold" right after 8 MiB of other memory traffic and a pause (about
what a cycle at a 1 s interval sees), then "warm" immediately again. Each collector runs with
its default configuration against this host's /proc and /sys, in this process (no runtime,
no rendering: bench/core_bench.py measures the whole agent). Prints the medians per
collector, their sum, and the number of samples each returned. The collectors are started
and stopped like the agent does (a journal follower, kept files and mount polling included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib.metadata import entry_points
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hostmond.api import Collector, CollectorContext, CollectorUnavailable, StateStore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="timed collections per collector (after two untimed)")
    ap.add_argument("--pause", type=float, default=0.1, help="seconds of idle before each cold collection")
    ap.add_argument("--only", default="", help="comma-separated collector names (default: every default-enabled one)")
    args = ap.parse_args()
    only = {n for n in args.only.split(",") if n}

    state_dir = tempfile.mkdtemp(prefix="hostmon-collectors-bench-")
    running: list[tuple[str, Collector]] = []
    for ep in sorted(entry_points(group="hostmon.collectors"), key=lambda e: e.name):
        cls = ep.load()
        if (only and ep.name not in only) or (not only and not cls.default_enabled):
            continue
        ctx = CollectorContext(state_dir=state_dir, state=StateStore(f"{state_dir}/{ep.name}.json"))
        try:
            c = cls(cls.config_class(), ctx)
            c.start()
            list(c.collect())
            list(c.collect())
        except CollectorUnavailable as e:
            print(f"{ep.name:12} unavailable here: {e}")
            continue
        running.append((ep.name, c))

    junk = bytearray(8 << 20)
    cold: dict[str, list[float]] = {n: [] for n, _ in running}
    warm: dict[str, list[float]] = {n: [] for n, _ in running}
    samples: dict[str, int] = {}
    try:
        for _ in range(args.rounds):
            for name, c in running:
                for i in range(0, len(junk), 64):
                    junk[i] = 1
                time.sleep(args.pause)
                t = time.thread_time()
                n = len(list(c.collect()))
                cold[name].append(time.thread_time() - t)
                t = time.thread_time()
                list(c.collect())
                warm[name].append(time.thread_time() - t)
                samples[name] = n
    finally:
        for _, c in running:
            c.stop()

    print(f"{'collector':12} {'cold ms':>8} {'warm ms':>8} {'samples':>8}   (medians of {args.rounds} collections)")
    tc = tw = 0.0
    for name, _ in sorted(running, key=lambda x: -statistics.median(cold[x[0]])):
        c_ms, w_ms = statistics.median(cold[name]) * 1e3, statistics.median(warm[name]) * 1e3
        tc, tw = tc + c_ms, tw + w_ms
        print(f"{name:12} {c_ms:8.3f} {w_ms:8.3f} {samples[name]:8d}")
    print(f"{'sum':12} {tc:8.3f} {tw:8.3f} {sum(samples.values()):8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
