#!/usr/bin/env python3
"""Noise alarms of the anomaly detector: how often pure noise alarms, per 1,000 samples.

    python3 bench/anomaly_noise.py [--seeds 5] [--samples 20000] [--threshold 0.8 0.6]

For each noise kind (Gaussian, exponential, log-normal, small counts: Poisson with
mean 2) and each seed, one fresh ``Detector`` with the agent's defaults (only the
threshold changed) sees --samples values 15 s apart, and the alarms (scores at or
above the threshold outside a hold: what raises an event in the agent) are counted
in the first 500 samples (the seen ranges still grow; the agent raises nothing in
its first ``learn_samples``, 120 by default) and after them. Prints alarms per
1,000 samples per kind, over all seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import sys

from hostmond.agent.anomaly.detector import DEFAULT_PARAMS, Detector


def poisson(r: random.Random, mean: float) -> float:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= r.random()
        if p <= limit:
            return float(k)
        k += 1


KINDS = {
    "gaussian": lambda r: r.gauss(50.0, 2.0),
    "exponential": lambda r: r.expovariate(1.0),
    "log-normal": lambda r: r.lognormvariate(0.0, 1.0),
    "counts": lambda r: poisson(r, 2.0),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--threshold", type=float, nargs="+", default=[0.8, 0.6])
    a = ap.parse_args(argv)
    t0 = 1_700_006_400.0
    for thr in a.threshold:
        params = dataclasses.replace(DEFAULT_PARAMS, threshold=thr)
        parts = []
        for kind, draw in KINDS.items():
            early = late = 0
            for seed in range(a.seeds):
                r = random.Random(seed * 101 + len(kind))
                d = Detector(params)
                for i in range(a.samples):
                    d.update(draw(r), t0 + 15.0 * i)
                    if d.alarm:
                        if i < 500:
                            early += 1
                        else:
                            late += 1
            n_late = a.seeds * (a.samples - 500)
            parts.append(f"{kind} {late / n_late * 1000:.2f} (first 500: {early / (a.seeds * 500) * 1000:.1f})")
        print(f"threshold {thr}: alarms per 1,000 samples after the first 500: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
