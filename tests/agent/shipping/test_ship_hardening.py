"""Issue 12, agent side of shipping: poison records, a batch the ingest fails on, a full spool, a slow ingest.

Everything runs through the real Shipper (real keys, spool files, HTTP on 127.0.0.1)
against a real aiohttp server that opens every batch like the ingest does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import sys
from pathlib import Path

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostmond.agent.handoff import Collection  # noqa: E402
from hostmond.agent.shipping.config import ShippingConfig  # noqa: E402
from hostmond.agent.shipping.shipper import Shipper  # noqa: E402
from test_ship_shipper import OpeningIngest, eventually, free_port, metric, start_server  # noqa: E402

from hostmond.api import Event, Sample  # noqa: E402
from hostmond.core import keys, wire  # noqa: E402


@pytest.fixture
def env(tmp_path):
    kd = tmp_path / "keys"
    a = keys.generate_agent_identity(kd)
    i = keys.generate_ingest_keypair(kd)
    ingest = OpeningIngest(keys.load_public_key(a.public_path), keys.load_private_key(i.private_path))
    return tmp_path, a, i, ingest


def shipper(tmp_path, a, i, port: int, **over) -> Shipper:
    cfg = ShippingConfig(ingest_url=f"http://127.0.0.1:{port}", ingest_public_key=i.public_path, **over)
    cfg.validate()
    return Shipper(cfg, state_dir=str(tmp_path / "state"), tenant_ids=["acme"], agent_key_path=a.private_path,
                   rng=random.Random(7))


def numbered(k: int, n: int = 5, pad: int = 0) -> Collection:
    """Collection k: n samples named by k; ``pad`` random hex chars per sample defeat compression."""
    samples = [
        Sample("hostmon_test_value", "gauge", float(j), {"k": str(k), "j": str(j), "pad": os.urandom(pad).hex()}, 1.7e9 + k)
        for j in range(n)
    ]
    return Collection("test", 1.7e9 + k, samples, [])


async def test_non_finite_or_huge_timestamps_are_refused_when_the_batch_is_made_and_the_rest_arrives(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    sh = shipper(tmp_path, a, i, port, batch_max_records=50, batch_max_age=0.05, backoff_first=0.01, backoff_max=0.05)
    await sh.start()
    try:
        good = [Sample("hostmon_test_value", "gauge", float(j), {"j": str(j)}) for j in range(3)]
        poison = [Sample("hostmon_test_value", "gauge", 1.0, {"j": w}, t) for w, t in
                  (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf), ("huge", 1e17))]
        bad_event = Event("test_event", math.nan, {"x": 1}, {})
        ok_event = Event("test_event", 1.7e9, {"x": 2}, {})
        # a NaN *value* is a legal gauge value and is kept; only the timestamps are poison
        nan_value = Sample("hostmon_test_nan_value", "gauge", math.nan, {})
        sh.submit(Collection("test", 1.7e9, [*good, *poison, nan_value], [bad_event, ok_event]))
        assert await sh.wait_sent(10)
    finally:
        await sh.stop()
        await runner.cleanup()
    samples = ingest.samples()
    assert sorted(s.labels["j"] for s in samples if s.name == "hostmon_test_value") == ["0", "1", "2"]
    assert all(math.isfinite(s.timestamp) for s in samples)
    assert [s.name for s in samples if s.name == "hostmon_test_nan_value"] == ["hostmon_test_nan_value"]
    assert [e.fields for e in ingest.events()] == [{"x": 2}]
    assert metric(sh, "hostmon_shipper_invalid_records_total") == 5


class FailsOneBatch(OpeningIngest):
    """The ingest stand-in, answering ``status`` for every batch that holds collection k == ``bad``."""

    def __init__(self, base: OpeningIngest, bad: int, status: int = 500) -> None:
        super().__init__(base.agent_pub, base.ingest_priv)
        self.bad, self.status = bad, status
        self.bad_posts = 0

    async def handle(self, request: web.Request) -> web.Response:
        blob = await request.read()
        header, hb, ct, _ = wire.parse_envelope(blob, 1 << 24)
        records = wire.open_records(header, hb, ct, self.ingest_priv, 1 << 26, 100_000)
        if any(r.get("l", {}).get("k") == str(self.bad) for r in records):
            self.bad_posts += 1
            return web.json_response({"status": "error", "reason": "internal"}, status=self.status)
        request._read_bytes = blob
        return await super().handle(request)


async def test_a_batch_the_ingest_keeps_failing_is_quarantined_and_the_queue_moves_on(env, caplog) -> None:
    tmp_path, a, i, base = env
    ingest = FailsOneBatch(base, bad=0)
    port = free_port()
    runner = await start_server(ingest, port)
    # the default quarantine_after (5): the test fails on a shipper without quarantine by timing out, not on a config key
    sh = shipper(tmp_path, a, i, port, batch_max_records=5, batch_max_age=60, backoff_first=0.01, backoff_max=0.05)
    await sh.start()
    caplog.set_level(logging.INFO, logger="hostmon.shipping")
    try:
        for k in range(6):
            sh.submit(numbered(k))
            await sh.flush()
        # the five honest batches arrive although the oldest one (k=0) is answered 500 every time
        await eventually(lambda: len(ingest.stored) == 5, timeout=30)
        await eventually(lambda: metric(sh, "hostmon_ship_quarantined_batches_total") == 1)
        assert await sh.wait_sent(10)
    finally:
        await sh.stop()
        await runner.cleanup()
    assert sorted({s.labels["k"] for s in ingest.samples()}) == ["1", "2", "3", "4", "5"]
    assert 5 <= ingest.bad_posts <= 8
    assert metric(sh, "hostmon_ship_quarantined_samples_total") == 5
    assert metric(sh, "hostmon_spool_dropped_batches_total") == 0
    qdir = tmp_path / "state" / "spool" / "quarantine"
    assert len(os.listdir(qdir)) == 1 and os.stat(qdir).st_mode & 0o777 == 0o700
    logged = [r for r in caplog.records if "kept failing" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR


async def test_an_ingest_failing_every_batch_quarantines_nothing_and_delivers_all_once_it_recovers(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    sh = shipper(tmp_path, a, i, port, batch_max_records=5, batch_max_age=60, backoff_first=0.01, backoff_max=0.05,
                 quarantine_after=2)
    ingest.answers = [503] * 40  # storage unavailable for everyone, for 40 attempts
    await sh.start()
    try:
        for k in range(4):
            sh.submit(numbered(k))
            await sh.flush()
        assert await sh.wait_sent(30)
    finally:
        await sh.stop()
        await runner.cleanup()
    assert ingest.answers == []
    assert sorted({s.labels["k"] for s in ingest.samples()}) == ["0", "1", "2", "3"]
    assert metric(sh, "hostmon_ship_quarantined_batches_total") == 0
    assert metric(sh, "hostmon_ship_failed_total", reason="http_5xx") == 40


async def test_a_nearly_full_spool_keeps_probing_so_nothing_is_dropped_once_the_ingest_is_back(env) -> None:
    """F1: default backoff (up to 60 s), spool of a few batches, ingest away for a while, then back."""
    tmp_path, a, i, ingest = env
    port = free_port()
    sh = shipper(tmp_path, a, i, port, batch_max_records=4, batch_max_age=60, spool_limit_bytes=9000,
                 backoff_first=0.5, backoff_max=60.0)
    await sh.start()
    stop = asyncio.Event()

    async def produce() -> None:
        k = 0
        while not stop.is_set():
            sh.submit(numbered(k, n=4, pad=100))  # one incompressible batch of ~1 KB every 0.25 s
            k += 1
            await asyncio.sleep(0.25)

    producer = asyncio.create_task(produce())
    runner = None
    try:
        # the ingest is away for 12 s: the spool fills and drops its oldest batches, the backoff grows
        await asyncio.sleep(12)
        dropped_before = metric(sh, "hostmon_spool_dropped_batches_total")
        assert dropped_before > 0, "the spool should have overflowed while the ingest was away"
        assert metric(sh, "hostmon_ship_retries_total") >= 5
        runner = await start_server(ingest, port)
        # back: the sender notices within a batch interval or two, not after a minute of backoff
        await eventually(lambda: len(ingest.stored) > 0, timeout=5)
        await asyncio.sleep(3)
        dropped_after = metric(sh, "hostmon_spool_dropped_batches_total") - dropped_before
        assert dropped_after <= 1, f"{dropped_after} batches dropped after the ingest was back"
    finally:
        stop.set()
        await producer
        await sh.stop()
        if runner is not None:
            await runner.cleanup()


async def delaying_proxy(upstream_port: int, delay: float) -> tuple[asyncio.Server, int]:
    """A TCP proxy on 127.0.0.1 that forwards requests at once and holds every answer ``delay`` seconds."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
        try:
            while data := await reader.read(65536):
                if hold:
                    await asyncio.sleep(hold)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pump(cr, uw, 0.0), pump(ur, cw, delay))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


async def test_a_slow_but_working_ingest_drains_the_spool(env) -> None:
    """F3: every answer comes 2.5 s late through a proxy; the request timeout is 1 s."""
    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    proxy, pport = await delaying_proxy(port, 2.5)
    sh = shipper(tmp_path, a, i, pport, batch_max_records=5, batch_max_age=60, backoff_first=0.01, backoff_max=0.05,
                 connect_timeout=1.0, request_timeout=1.0)  # request_timeout_max at its default (300 s)
    await sh.start()
    try:
        for k in range(4):
            sh.submit(numbered(k))
            await sh.flush()
        assert await sh.wait_sent(60), f"spool still holds {len(sh.spool)} batches"
    finally:
        await sh.stop()
        proxy.close()
        await runner.cleanup()
    assert sorted({s.labels["k"] for s in ingest.samples()}) == ["0", "1", "2", "3"]
    assert metric(sh, "hostmon_ship_sent_batches_total") == 4
    assert 2.5 < metric(sh, "hostmon_ship_request_timeout_seconds") <= 16.0
    assert metric(sh, "hostmon_ship_failed_total", reason="timeout") <= 3  # 1 s, 2 s, then 4 s is enough
