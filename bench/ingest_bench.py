"""Ingest throughput: samples/s end to end over HTTP into SQLite, on this machine.

Starts the real ingest (``python -m ingest.cli run``) on a free 127.0.0.1 port
with a fresh SQLite database (WAL, synchronous=FULL unless --synchronous
normal), pre-seals batches with the real wire format (sealing is not timed: it
is the agent's cost, measured by the seal bench), then POSTs them over HTTP
with a few concurrent connections and times until the last 200 "stored".
Prints the batch size, each run's figure and the median.

    python bench/ingest_bench.py [--batch 10000] [--batches 30] [--runs 5] [--concurrency 4]

Target (issue 4): at least 200,000 samples/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ingest"))

from ingest_helpers import IngestProcess, db_counts, make_keys, seal, write_config  # noqa: E402

from agent.shipping import wire  # noqa: E402


def make_batches(keys, n_batches: int, batch: int, seq0: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    now = time.time()
    out = []
    modes = ("user", "system", "idle", "iowait")
    for b in range(n_batches):
        recs = [
            {
                "s": "node_cpu_seconds_total",
                "k": "counter",
                "v": float(b * batch + i),
                "l": {"tenant_id": "acme", "host": f"host-{i % 50}", "cpu": str(i % 64), "mode": modes[i % 4]},
                "t": now + b + i * 1e-6,
            }
            for i in range(batch)
        ]
        out.append(seal(keys, seq0 + b, recs))
    return out


async def post_all(url: str, blobs: list[bytes], concurrency: int) -> float:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    for b in blobs:
        q.put_nowait(b)
    headers = {"Content-Type": wire.CONTENT_TYPE}

    async with aiohttp.ClientSession() as s:

        async def worker() -> None:
            while True:
                try:
                    blob = q.get_nowait()
                except asyncio.QueueEmpty:
                    return
                async with s.post(url + "/v1/batches", data=blob, headers=headers) as r:
                    body = await r.json()
                    if r.status != 200 or body.get("status") != "stored":
                        raise RuntimeError(f"unexpected answer {r.status} {body}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10_000, help="samples per batch")
    ap.add_argument("--batches", type=int, default=30, help="batches per run")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP connections")
    ap.add_argument("--synchronous", choices=("full", "normal"), default="full")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="hostmon-ingest-bench-") as tmp:
        d = Path(tmp)
        keys = make_keys(d / "keys")
        cfg = write_config(
            d, keys, ("acme",), sqlite=f'synchronous = "{args.synchronous}"', limits=f"max_records = {max(args.batch, 1000)}\nmax_inflight = {args.concurrency + 2}"
        )
        proc = IngestProcess(cfg)
        url = proc.start()
        try:
            rates = []
            print(f"ingest bench: {args.batch} samples/batch, {args.batches} batches/run, {args.runs} runs, "
                  f"{args.concurrency} connections, sqlite synchronous={args.synchronous}, cpus={os.cpu_count()}")
            # Warm-up (not timed, not counted): starts the decode worker processes.
            warm = make_batches(keys, 4, args.batch, seq0=10**9)
            asyncio.run(post_all(url, warm, args.concurrency))
            for run in range(args.runs):
                blobs = make_batches(keys, args.batches, args.batch, seq0=run * args.batches + 1)
                mb = sum(map(len, blobs)) / 1e6
                wall = asyncio.run(post_all(url, blobs, args.concurrency))
                rate = args.batches * args.batch / wall
                rates.append(rate)
                print(f"  run {run + 1}: {args.batches * args.batch} samples ({mb:.1f} MB sealed) in {wall:.3f} s = {rate:,.0f} samples/s")
            counts = db_counts(d / "ingest.db")
            expected = (args.runs * args.batches + 4) * args.batch
            if counts["samples"] != expected:
                print(f"ERROR: database holds {counts['samples']} samples, expected {expected}")
                return 1
            med = statistics.median(rates)
            print(f"median: {med:,.0f} samples/s into SQLite over HTTP (target >= 200,000): "
                  f"{'OK' if med >= 200_000 else 'BELOW TARGET'}; database rows verified: {counts['samples']}")
        finally:
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
