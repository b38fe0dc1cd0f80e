"""CPU cost of the ``textfile`` collector per series, next to prometheus_client's text parser in the same run.

It writes ``--files`` *.prom files of ``--series`` series each (gauges with two
labels, a histogram per file) into a temporary directory, then measures the CPU
time (``time.thread_time``) of one whole collection (list, read, parse, check,
emit) and of prometheus_client's ``text_string_to_metric_families`` over the
same texts (parsing only), ``--runs`` times each, and prints the medians per
series and their ratio. No budget is asserted; the figures are for the record.

    python bench/textfile_bench.py [--files 20] [--series 500] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hostmond.collectors.textfile import TextfileCollector, TextfileConfig

from hostmond.api import CollectorContext


def _text(i: int, n: int) -> str:
    lines = [f"# HELP bench_value_{i} A value.", f"# TYPE bench_value_{i} gauge"]
    lines += [f'bench_value_{i}{{shard="{j % 16}",item="item-{j}"}} {j * 1.5}' for j in range(n)]
    lines += [f"# TYPE bench_latency_{i} histogram"]
    lines += [f'bench_latency_{i}_bucket{{le="{le}"}} {k}' for k, le in enumerate(("0.1", "1", "10", "+Inf"))]
    lines += [f"bench_latency_{i}_sum 12.5", f"bench_latency_{i}_count 3"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        texts = []
        for i in range(a.files):
            t = _text(i, a.series)
            Path(d, f"f{i:03d}.prom").write_text(t)
            texts.append(t)
        cfg = TextfileConfig(directory=d, max_series=10**7)
        c = TextfileCollector(cfg, CollectorContext())
        ours, peer = [], []
        n = 0
        for _ in range(a.runs):
            t0 = time.thread_time()
            out = list(c.collect())
            ours.append(time.thread_time() - t0)
            c.take_families()
            n = sum(1 for s in out if s.name.startswith("bench_"))
            t0 = time.thread_time()
            for t in texts:
                for _f in text_string_to_metric_families(t):
                    pass
            peer.append(time.thread_time() - t0)
    mo, mp = statistics.median(ours), statistics.median(peer)
    print(f"series per collection: {n} ({a.files} files)")
    print(f"hostmon textfile collection (read+parse+check+emit): median {mo * 1e3:.1f} ms, {mo / n * 1e6:.2f} µs/series")
    print(f"prometheus_client text parser (parse only):          median {mp * 1e3:.1f} ms, {mp / n * 1e6:.2f} µs/series")
    print(f"ratio hostmon / prometheus_client: {mo / mp:.2f}")


if __name__ == "__main__":
    main()
