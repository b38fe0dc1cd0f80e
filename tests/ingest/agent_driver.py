"""A real agent-side process for the no-loss proofs: the project's Shipper, fed numbered collections.

    python agent_driver.py --state DIR --url URL --ingest-pub FILE --t0 T
                           [--start K] [--collections N] [--samples M]
                           [--spool-limit BYTES] [--wait SECONDS]

Collection k holds M samples ``hostmon_proof_value{k, j}`` = k*1000+j at time
t0+k. After each collection is sealed into the spool (``Shipper.flush``) the
driver prints ``spooled k``; after all, ``all spooled``; when the spool is empty
(every batch acknowledged), ``drained`` and ``metrics {json}`` with the
shipper's self-metrics, then it exits 0. Nothing else is mocked: real keys,
real spool files, real HTTP to the real ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.shipping.shipper import Shipper

from hostmond.api import Event, Sample

NAME = "hostmon_proof_value"


def collection(k: int, m: int, t0: float) -> Collection:
    t = t0 + k
    samples = [Sample(NAME, "gauge", float(k * 1000 + j), {"tenant_id": "acme", "host": "proof", "k": str(k), "j": str(j)}, t) for j in range(m)]
    events = [Event("proof_event", t, {"k": k}, {"tenant_id": "acme", "host": "proof"})]
    return Collection("proof", t, samples, events)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--ingest-pub", required=True)
    ap.add_argument("--t0", type=float, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--collections", type=int, default=0)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--spool-limit", type=int, default=64 << 20)
    ap.add_argument("--wait", type=float, default=60.0)
    a = ap.parse_args()

    cfg = ShippingConfig(
        ingest_url=a.url,
        ingest_public_key=a.ingest_pub,
        batch_max_records=a.samples + 1,  # one collection (M samples + 1 event) per batch
        batch_max_age=60.0,
        spool_limit_bytes=a.spool_limit,
        backoff_first=0.05,
        backoff_max=0.3,
        connect_timeout=2.0,
        request_timeout=10.0,
    )
    shipper = Shipper(cfg, state_dir=a.state, tenant_ids=["acme"])
    await shipper.start()
    try:
        for k in range(a.start, a.start + a.collections):
            shipper.submit(collection(k, a.samples, a.t0))
            await shipper.flush()
            print(f"spooled {k}", flush=True)
        print("all spooled", flush=True)
        if not await shipper.wait_sent(a.wait):
            print("not drained", flush=True)
            return 1
        # wait_sent() looks at the spool only: a batch evicted from a full spool while
        # its send was in flight is no longer there, but its fate (stored, or counted
        # as dropped) is settled only when that send ends. Wait for it.
        spool = shipper.spool
        assert spool is not None
        for _ in range(int(a.wait / 0.02)):
            if not spool._doomed and not spool._in_flight:
                break
            await asyncio.sleep(0.02)
        print("drained", flush=True)
        metrics = {}
        for s in shipper.self_metrics():
            key = s.name + ("" if not s.labels else json.dumps(s.labels, sort_keys=True))
            metrics[key] = s.value
        print("metrics " + json.dumps(metrics, sort_keys=True), flush=True)
    finally:
        await shipper.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
