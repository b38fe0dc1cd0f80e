"""The shipper end to end against a real HTTP ingest stand-in that opens every batch."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from aiohttp import web
from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.shipping import sender as snd
from hostmond.agent.shipping.shipper import METRICS, Shipper

from hostmond.api import Event, Sample
from hostmond.core import keys, wire
from hostmond.core.errors import KeyFileError, SealError


class OpeningIngest:
    """Verifies, decrypts and stores batches like the real ingest would; dedups by (agent id, seq)."""

    def __init__(self, agent_pub: keys.PublicKey, ingest_priv: keys.PrivateKey) -> None:
        self.agent_pub = agent_pub
        self.ingest_priv = ingest_priv
        self.stored: dict[tuple[str, int], tuple[wire.BatchHeader, list[Sample], list[Event]]] = {}
        self.answers: list[int] = []  # scripted statuses to answer before processing
        self.posts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        blob = await request.read()
        if self.answers:
            return web.json_response({"status": "rejected", "reason": "scripted"}, status=self.answers.pop(0))
        try:
            header, hb, ct, _ = wire.parse_envelope(blob, 1 << 24)
            wire.verify(blob, self.agent_pub)
            records = wire.open_records(header, hb, ct, self.ingest_priv, 1 << 26, 100_000)
        except SealError as e:
            return web.json_response({"status": "rejected", "reason": e.reason}, status=400)
        key = (header.agent_id, header.seq)
        if key in self.stored:
            return web.json_response({"status": "duplicate"})
        samples, events = wire.decode_records(records)
        self.stored[key] = (header, samples, events)
        return web.json_response({"status": "stored"})

    def samples(self) -> list[Sample]:
        return [s for k in sorted(self.stored) for s in self.stored[k][1]]

    def events(self) -> list[Event]:
        return [e for k in sorted(self.stored) for e in self.stored[k][2]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(ingest: OpeningIngest, port: int) -> web.AppRunner:
    app = web.Application(client_max_size=1 << 26)
    app.router.add_post("/v1/batches", ingest.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
def env(tmp_path):
    kd = tmp_path / "keys"
    a = keys.generate_agent_identity(kd)
    i = keys.generate_ingest_keypair(kd)
    ingest = OpeningIngest(keys.load_public_key(a.public_path), keys.load_private_key(i.private_path))
    return tmp_path, a, i, ingest


def make_shipper(tmp_path, a, i, port: int, **over) -> Shipper:
    cfg = ShippingConfig(
        ingest_url=f"http://127.0.0.1:{port}",
        ingest_public_key=i.public_path,
        batch_max_records=over.pop("batch_max_records", 50),
        batch_max_age=over.pop("batch_max_age", 0.05),
        backoff_first=0.01,
        backoff_max=0.05,
        **over,
    )
    cfg.validate()
    return Shipper(cfg, state_dir=str(tmp_path / "state"), tenant_ids=["acme"], agent_key_path=a.private_path)


def collection(n: int, start: int, tenant: str | None = "acme", events: int = 0) -> Collection:
    labels = lambda j: ({"tenant_id": tenant} if tenant else {}) | {"j": str(j)}
    samples = [Sample("hostmon_test_value", "gauge", float(j), labels(j)) for j in range(start, start + n)]
    evs = [Event("test_event", 1700000000.0 + j, {"j": j}, labels(j)) for j in range(start, start + events)]
    return Collection("test", 1700000000.0, samples, evs)


def metric(sh: Shipper, name: str, **labels: str) -> float:
    for s in sh.self_metrics():
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(name)


async def eventually(cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_every_sample_and_event_arrives_once_with_tenants_and_collection_time(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    sh = make_shipper(tmp_path, a, i, port)
    await sh.start()
    try:
        for k in range(10):
            sh.submit(collection(37, k * 37, events=2))
        sh.submit(collection(5, 1000, tenant=None))  # untagged: gets the agent's tenant
        sh.submit(collection(3, 2000, tenant="beta"))  # another tenant (per-process groups)
        await eventually(lambda: len(ingest.samples()) == 378)
        await sh.stop(drain_timeout=5)
    finally:
        await runner.cleanup()
    values = sorted(s.value for s in ingest.samples())
    assert values == sorted([float(j) for j in range(370)] + [float(j) for j in range(1000, 1005)] + [2000.0, 2001.0, 2002.0])
    assert all(s.timestamp == 1700000000.0 for s in ingest.samples())
    assert {s.labels["tenant_id"] for s in ingest.samples() if s.value >= 1000} == {"acme", "beta"}
    assert len(ingest.events()) == 20
    headers = [h for h, _, _ in ingest.stored.values()]
    assert all(len(s) + len(e) <= 50 for _, s, e in ingest.stored.values())
    assert len({h.seq for h in headers}) == len(headers)
    assert any(h.tenants == ("acme", "beta") for h in headers)
    assert metric(sh, "hostmon_ship_sent_batches_total") == len(headers)
    assert metric(sh, "hostmon_ship_sent_samples_total") == 378
    assert metric(sh, "hostmon_spool_batches") == 0 and metric(sh, "hostmon_spool_bytes") == 0
    assert metric(sh, "hostmon_spool_limit_bytes") == sh.config.spool_limit_bytes
    assert metric(sh, "hostmon_spool_dropped_batches_total") == 0
    assert metric(sh, "hostmon_ship_retries_total") == 0
    assert sum(s.value for s in sh.self_metrics() if s.name == "hostmon_ship_failed_total") == 0
    # send latency: attempts, time spent in them, and the last one's duration
    assert metric(sh, "hostmon_ship_send_attempts_total") == len(headers)
    assert 0 < metric(sh, "hostmon_ship_send_duration_seconds_total") < 60
    assert 0 < metric(sh, "hostmon_ship_last_send_duration_seconds") <= metric(sh, "hostmon_ship_send_duration_seconds_total")
    assert {s.name for s in sh.self_metrics()} == {m.name for m in METRICS}


async def test_ingest_down_then_up_delivers_everything_exactly_once(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    sh = make_shipper(tmp_path, a, i, port)
    await sh.start()
    try:
        for k in range(20):
            sh.submit(collection(25, k * 25))
            await asyncio.sleep(0.01)
        await eventually(
            lambda: metric(sh, "hostmon_shipper_buffer_records") == 0
            and metric(sh, "hostmon_ship_retries_total") >= 3
            and metric(sh, "hostmon_spool_batches") >= 10
        )
        assert metric(sh, "hostmon_ship_failed_total", reason="connect") >= 3
        runner = await start_server(ingest, port)
        try:
            await eventually(lambda: metric(sh, "hostmon_spool_batches") == 0)
            await sh.stop()
        finally:
            await runner.cleanup()
    finally:
        await sh.stop()
    assert sorted(s.value for s in ingest.samples()) == [float(j) for j in range(500)]
    assert metric(sh, "hostmon_spool_dropped_batches_total") == 0


async def test_stop_seals_the_buffer_and_a_restart_sends_it_with_new_sequence_numbers(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    sh = make_shipper(tmp_path, a, i, port, batch_max_age=3600.0, batch_max_records=1000)
    await sh.start()
    sh.submit(collection(40, 0))
    await sh.stop()  # ingest is down: the 40 samples must be in the spool now
    assert metric(sh, "hostmon_spool_batches") == 1
    first_seqs = set(os.listdir(tmp_path / "state" / "spool"))
    runner = await start_server(ingest, port)
    try:
        sh2 = make_shipper(tmp_path, a, i, port, batch_max_age=0.05)
        await sh2.start()
        assert metric(sh2, "hostmon_spool_batches") == 1
        sh2.submit(collection(10, 40))
        await eventually(lambda: len(ingest.samples()) == 50)
        await sh2.stop()
    finally:
        await runner.cleanup()
    assert sorted(s.value for s in ingest.samples()) == [float(j) for j in range(50)]
    seqs = sorted(seq for _, seq in ingest.stored)
    assert len(seqs) == 2 and seqs[0] < seqs[1]
    assert first_seqs == {f"{seqs[0]:020d}.hmb", "corrupt"}


async def test_permanent_rejections_leave_the_spool_and_are_counted_retryable_ones_stay(env, caplog) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    # batch 1: 503, 429, then 400 -> dropped; batches 2-5: 413, 401, 403, 400 -> dropped at the first answer;
    # batches 6 and 7 stored
    ingest.answers = [503, 429, 400, 413, 401, 403, 400]
    runner = await start_server(ingest, port)
    sh = make_shipper(tmp_path, a, i, port, batch_max_records=10, batch_max_age=3600.0)
    caplog.set_level("INFO", logger="hostmon.shipping")
    await sh.start()
    try:
        for k in range(7):
            sh.submit(collection(10, k * 10))
        await eventually(lambda: len(ingest.stored) == 2)
        # the ingest has stored the last batch; its answer may still be on the way: wait for the ack
        assert await sh.wait_sent(10)
        await sh.stop()
    finally:
        await runner.cleanup()
    assert sorted(s.value for s in ingest.samples()) == [float(j) for j in range(50, 70)]
    # a permanent rejection is never retried: 7 batches, 2 retries of batch 1, so 9 posts
    assert ingest.posts == 9
    for status, n in (("400", 2), ("401", 1), ("403", 1), ("413", 1)):
        assert metric(sh, "hostmon_ship_rejected_total", status=status) == n
    assert metric(sh, "hostmon_ship_rejected_samples_total") == 50
    assert metric(sh, "hostmon_ship_failed_total", reason="http_5xx") == 1
    assert metric(sh, "hostmon_ship_failed_total", reason="http_429") == 1
    assert metric(sh, "hostmon_ship_retries_total") == 2
    assert metric(sh, "hostmon_spool_batches") == 0
    # logged once per (status, reason), with the reason: the second 400 "scripted" is counted, not logged
    drops = [r for r in caplog.records if "rejected a batch for good" in r.getMessage()]
    assert sorted((r.status, r.reason) for r in drops) == [(400, "scripted"), (401, "scripted"), (403, "scripted"), (413, "scripted")]


async def test_full_spool_drops_exactly_the_oldest_batches_while_the_ingest_is_down(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    sh = make_shipper(tmp_path, a, i, port, batch_max_records=20, batch_max_age=3600.0, spool_limit_bytes=10**9)
    await sh.start()
    sh.submit(collection(20, 100))  # values 100..119: every batch's labels have the same width
    await eventually(lambda: metric(sh, "hostmon_spool_batches") == 1)
    size = int(metric(sh, "hostmon_spool_bytes"))
    await sh.stop()
    # restart with room for 5 batches of that size (labels are the same width, so sizes match closely)
    sh = make_shipper(tmp_path, a, i, port, batch_max_records=20, batch_max_age=3600.0, spool_limit_bytes=size * 5 + size // 2)
    await sh.start()
    for k in range(1, 12):
        sh.submit(collection(20, 100 + k * 20))
        await eventually(lambda: metric(sh, "hostmon_shipper_buffer_records") == 0)
    # 12 batches were sealed; each is either in the spool or counted as dropped
    await eventually(lambda: metric(sh, "hostmon_spool_batches") + metric(sh, "hostmon_spool_dropped_batches_total") == 12)
    dropped = int(metric(sh, "hostmon_spool_dropped_batches_total"))
    kept = 12 - dropped
    assert 4 <= kept <= 6  # about 5.5 batches fit (compressed sizes differ by a few bytes)
    assert metric(sh, "hostmon_spool_dropped_samples_total") == 20 * dropped
    runner = await start_server(ingest, port)
    try:
        await eventually(lambda: metric(sh, "hostmon_spool_batches") == 0)
        await sh.stop()
    finally:
        await runner.cleanup()
    # exactly the newest `kept` batches arrive: the dropped ones were the oldest
    assert sorted(s.value for s in ingest.samples()) == [float(j) for j in range(100 + (12 - kept) * 20, 100 + 12 * 20)]
    assert metric(sh, "hostmon_spool_dropped_batches_total") == dropped


async def test_full_buffer_drops_and_counts_without_blocking(env) -> None:
    tmp_path, a, i, _ = env
    sh = make_shipper(tmp_path, a, i, free_port(), buffer_limit_records=100, batch_max_age=3600.0, batch_max_records=1000)
    await sh.start()
    try:
        sh.submit(collection(60, 0))
        sh.submit(collection(60, 60))  # does not fit
        sh.submit(collection(40, 120))
        assert metric(sh, "hostmon_shipper_buffer_records") == 100
        assert metric(sh, "hostmon_shipper_buffer_dropped_total") == 60
        assert metric(sh, "hostmon_shipper_buffer_limit_records") == 100
    finally:
        await sh.stop()
    assert metric(sh, "hostmon_spool_batches") == 1 and metric(sh, "hostmon_shipper_buffer_records") == 0


async def test_invalid_records_are_dropped_and_counted_not_the_batch(env) -> None:
    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    sh = make_shipper(tmp_path, a, i, port)
    await sh.start()
    try:
        c = collection(5, 0)
        c.samples.append(Sample("bad", "gauge", "not a number", {"tenant_id": "acme"}))  # type: ignore[arg-type]
        c.events.append(Event("bad", 1.0, {"s": {1, 2}}, {"tenant_id": "acme"}))
        sh.submit(c)
        await eventually(lambda: len(ingest.samples()) == 5)
        await sh.stop()
    finally:
        await runner.cleanup()
    assert metric(sh, "hostmon_shipper_invalid_records_total") == 2


async def test_refuses_to_start_with_an_open_agent_key_or_the_wrong_suite(env) -> None:
    tmp_path, a, i, _ = env
    os.chmod(a.private_path, 0o640)
    with pytest.raises(KeyFileError, match="too open"):
        await make_shipper(tmp_path, a, i, free_port()).start()
    os.chmod(a.private_path, 0o600)
    with pytest.raises(KeyFileError, match="mlkem768-x25519"):
        await make_shipper(tmp_path, a, i, free_port(), suite="mlkem768-x25519").start()


async def test_mlkem_suite_ships_end_to_end(tmp_path) -> None:
    kd = tmp_path / "keys"
    a = keys.generate_agent_identity(kd)
    i = keys.generate_ingest_keypair(kd, "mlkem768-x25519")
    ingest = OpeningIngest(keys.load_public_key(a.public_path), keys.load_private_key(i.private_path))
    port = free_port()
    runner = await start_server(ingest, port)
    sh = make_shipper(tmp_path, a, i, port, suite="mlkem768-x25519")
    await sh.start()
    try:
        sh.submit(collection(30, 0))
        await eventually(lambda: len(ingest.samples()) == 30)
        await sh.stop()
    finally:
        await runner.cleanup()
    assert {h.suite for h, _, _ in ingest.stored.values()} == {"mlkem768-x25519"}


async def test_disk_full_holds_sealed_batches_in_memory_and_loses_nothing_once_space_returns(env, monkeypatch) -> None:
    """ENOSPC cannot be produced here without a tiny filesystem, so the write fails by patching (the only fake)."""
    import errno

    from hostmond.agent.shipping import spool as spool_mod

    tmp_path, a, i, ingest = env
    port = free_port()
    runner = await start_server(ingest, port)
    real = spool_mod.write_durably
    failures = {"left": 3}

    def flaky(path: str, data: bytes, mode: int = 0o600) -> None:
        if path.endswith(".hmb") and failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(spool_mod, "write_durably", flaky)
    sh = make_shipper(tmp_path, a, i, port, batch_max_records=10, batch_max_age=3600.0)
    await sh.start()
    try:
        sh.submit(collection(10, 0))
        await eventually(lambda: metric(sh, "hostmon_spool_write_errors_total") >= 1)
        assert len(ingest.samples()) == 0  # nothing is sent before it is on disk
        await eventually(lambda: len(ingest.samples()) == 10, timeout=15)
        await sh.stop()
    finally:
        await runner.cleanup()
    assert metric(sh, "hostmon_spool_write_errors_total") == 3
    assert metric(sh, "hostmon_spool_dropped_batches_total") == 0
    assert sorted(s.value for s in ingest.samples()) == [float(j) for j in range(10)]


async def test_stop_while_a_batch_is_being_sealed_loses_nothing(env) -> None:
    tmp_path, a, i, _ = env
    for round_ in range(3):
        sh = make_shipper(tmp_path, a, i, free_port(), batch_max_records=5000, batch_max_age=3600.0)
        await sh.start()
        sh.submit(collection(5000, 0))  # a full batch: the batch loop starts sealing it in a thread
        sh.submit(collection(7, 5000))
        for _ in range(round_):
            await asyncio.sleep(0)
        await sh.stop()
        assert metric(sh, "hostmon_spool_batches") == 2 * (round_ + 1)
    from hostmond.agent.shipping.spool import Spool

    sp = Spool(str(tmp_path / "state" / "spool"), 1 << 30, keys.load_public_key(a.public_path))
    sp.open()
    headers = [wire.parse_envelope(sp.read(e), 1 << 26)[0] for e in iter(sp.claim_oldest, None)]
    assert sorted(h.n_samples for h in headers) == [7, 7, 7, 5000, 5000, 5000]


async def test_shipper_stop_ends_even_when_the_send_loop_loses_its_cancel(env, monkeypatch) -> None:
    """The shipper's stop cancels its loops with cancel_and_wait: a send that swallows the
    first cancellation (as wait_for did) cannot make stop wait for ever."""
    tmp_path, a, i, _ = env
    entered = asyncio.Event()
    lost = []

    async def send(self, blob: bytes, seq: int | None = None, timeout: float | None = None) -> snd.SendResult:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if not lost:
                lost.append(seq)
                return snd.SendResult(snd.RETRY, reason="connect")  # the cancel is gone: the loop backs off and retries
            raise
        return snd.SendResult(snd.RETRY, reason="connect")

    monkeypatch.setattr(snd.Sender, "send", send)
    sh = make_shipper(tmp_path, a, i, free_port(), batch_max_records=10, batch_max_age=3600.0)
    await sh.start()
    sh.submit(collection(10, 0))
    await asyncio.wait_for(entered.wait(), 10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(sh.stop(), 10)
    assert lost, "the test's send did not see the stop"
    assert loop.time() - t0 < 5.0
    assert sh._send_task is None
