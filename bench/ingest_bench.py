"""Ingest throughput: samples/s end to end over HTTP into SQLite, on this machine.

Starts the real ingest (``python -m hostmond.ingest.cli run``) on a free 127.0.0.1 port
with a fresh SQLite database (WAL, synchronous=FULL unless --synchronous
normal), pre-seals batches with the real wire format (sealing is not timed: it
is the agent's cost, measured by the seal bench), then POSTs them over HTTP
with a few concurrent connections and times until the last 200 "stored".
Prints the batch size, each run's figure and the median, and two figures that
hold up on a shared, noisy machine:

* the ingest's CPU cost per sample (CPU seconds of the ingest process and its
  decode workers divided by samples stored), i.e. samples/s per busy core;
* a peer measured in the same run: the same samples inserted into SQLite as
  plain rows (tenant, name, labels JSON, value, ts; WAL, synchronous=FULL, one
  transaction per batch) by this process, with no HTTP, crypto or validation.
  The ratio ingest/peer says how the whole ingest path compares with merely
  writing the rows.

    python bench/ingest_bench.py [--batch 10000] [--batches 30] [--runs 5] [--concurrency 4]

Target (issue 4): at least 200,000 samples/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ingest"))

from ingest_helpers import IngestProcess, db_counts, make_keys, seal, write_config

from hostmond.core import wire


def make_batches(keys, n_batches: int, batch: int, seq0: int) -> list[bytes]:  # type: ignore[no-untyped-def]
    now = time.time()
    return [seal(keys, seq0 + b, make_records(b, batch, now)) for b in range(n_batches)]


def make_records(b: int, batch: int, now: float) -> list[dict]:  # type: ignore[type-arg]
    modes = ("user", "system", "idle", "iowait")
    return [
        {
            "s": "node_cpu_seconds_total",
            "k": "counter",
            "v": float(b * batch + i),
            "l": {"tenant_id": "acme", "host": f"host-{i % 50}", "cpu": str(i % 64), "mode": modes[i % 4]},
            "t": now + b + i * 1e-6,
        }
        for i in range(batch)
    ]


def peer_rows_per_second(path: Path, n_batches: int, batch: int) -> float:
    """Plain SQLite: the same samples as one row each, one durable transaction per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, tenant TEXT, name TEXT, labels TEXT, value REAL, ts REAL)")
    conn.execute("CREATE INDEX IF NOT EXISTS s_tnt ON samples (tenant, name, ts)")
    now = time.time()
    batches = [make_records(b, batch, now) for b in range(n_batches)]
    t0 = time.perf_counter()
    for recs in batches:
        rows = [(r["l"]["tenant_id"], r["s"], json.dumps(r["l"], sort_keys=True), r["v"], r["t"]) for r in recs]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO samples (tenant, name, labels, value, ts) VALUES (?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    return n_batches * batch / wall


def cpu_seconds(p: psutil.Process) -> float:
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


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
            peers = []
            cpu_per_sample = []
            assert proc.proc is not None
            ps = psutil.Process(proc.proc.pid)
            print(f"ingest bench: {args.batch} samples/batch, {args.batches} batches/run, {args.runs} runs, "
                  f"{args.concurrency} connections, sqlite synchronous={args.synchronous}, cpus={os.cpu_count()}")
            # Warm-up (not timed, not counted): starts the decode worker processes.
            warm = make_batches(keys, 4, args.batch, seq0=10**9)
            asyncio.run(post_all(url, warm, args.concurrency))
            for run in range(args.runs):
                blobs = make_batches(keys, args.batches, args.batch, seq0=run * args.batches + 1)
                mb = sum(map(len, blobs)) / 1e6
                c0 = cpu_seconds(ps)
                wall = asyncio.run(post_all(url, blobs, args.concurrency))
                cpu = cpu_seconds(ps) - c0
                n = args.batches * args.batch
                rate = n / wall
                rates.append(rate)
                cpu_per_sample.append(cpu / n)
                peer = peer_rows_per_second(d / f"peer-{run}.db", args.batches, args.batch)
                peers.append(peer)
                print(f"  run {run + 1}: {n} samples ({mb:.1f} MB sealed) in {wall:.3f} s = {rate:,.0f} samples/s; "
                      f"ingest CPU {cpu / n * 1e6:.2f} us/sample; peer (plain SQLite rows) {peer:,.0f} rows/s")
            counts = db_counts(d / "ingest.db")
            expected = (args.runs * args.batches + 4) * args.batch
            if counts["samples"] != expected:
                print(f"ERROR: database holds {counts['samples']} samples, expected {expected}")
                return 1
            med = statistics.median(rates)
            cps = statistics.median(cpu_per_sample)
            peer = statistics.median(peers)
            print(f"median: {med:,.0f} samples/s into SQLite over HTTP (target >= 200,000): "
                  f"{'OK' if med >= 200_000 else 'BELOW TARGET'}; best run {max(rates):,.0f}; samples verified in the database: {counts['samples']}")
            print(f"median ingest CPU cost: {cps * 1e6:.2f} us/sample = {1 / cps:,.0f} samples/s per busy core "
                  f"(HTTP, signature, HPKE, zstd, validation, SQLite commit)")
            print(f"median peer (plain SQLite row inserts, same samples, same run): {peer:,.0f} rows/s; ingest/peer = {med / peer:.2f}")
        finally:
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
