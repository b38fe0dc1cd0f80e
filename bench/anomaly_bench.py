#!/usr/bin/env python3
"""CPU and memory of the anomaly detector (budget: <= 20 µs CPU per sample per series, median).

    python3 bench/anomaly_bench.py [--series 200] [--samples 2000] [--runs 5]

Feeds --series detectors (one per series, like the agent) --samples values each
(noise, a daily-like wave, steps and spikes), --runs times, and prints:
  1. CPU µs per sample per series: median and max over the runs (process CPU time);
  2. memory per detector (tracemalloc, objects included) and JSON state bytes;
  3. the time to restore every detector from JSON state (agent start).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
import tracemalloc

from hostmond.agent.anomaly.detector import Detector


def series(seed: int, n: int) -> list[float]:
    r = random.Random(seed)
    base = r.uniform(0, 100)
    out = []
    for i in range(n):
        v = base + 10 * math.sin(i / 50) + r.gauss(0, 2)
        if i > n // 2:
            v += 15  # a step
        if r.random() < 0.002:
            v += r.uniform(20, 60)  # a spike
        out.append(v)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    data = [series(i, a.samples) for i in range(a.series)]
    per_sample = []
    for _ in range(a.runs):
        dets = [Detector() for _ in range(a.series)]
        c0 = time.process_time()
        # interleaved like the agent: every series gets one sample per cycle
        for t in range(a.samples):
            now = 1.7e9 + 300.0 * t  # 5-minute samples: the seasonal profile is in play after 3 days
            for d, xs in zip(dets, data):
                d.update(xs[t], now)
        per_sample.append((time.process_time() - c0) / (a.samples * a.series) * 1e6)
    print(f"CPU per sample per series: median {statistics.median(per_sample):.2f} µs, max {max(per_sample):.2f} µs "
          f"({a.series} series x {a.samples} samples, {a.runs} runs; loop overhead included; budget 20 µs)")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fresh = [Detector() for _ in range(1000)]
    for d in fresh:
        for t, x in enumerate(data[0][:100]):
            d.update(x, 1.7e9 + 3600.0 * t)  # hourly: every slot of the profile filled
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    states = [json.dumps(d.to_state()) for d in fresh]
    print(f"memory per detector: {(after - before) / len(fresh):.0f} bytes (tracemalloc, 1000 detectors); "
          f"JSON state {statistics.median(len(s) for s in states):.0f} bytes")
    c0 = time.process_time()
    for s in states:
        Detector.from_state(json.loads(s))
    print(f"restore from JSON state: {(time.process_time() - c0) / len(states) * 1e6:.1f} µs per series")
    return 0


if __name__ == "__main__":
    sys.exit(main())
