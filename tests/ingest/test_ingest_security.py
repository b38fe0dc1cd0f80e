"""Proof that no one gets in (issue 4, point 9).

One real ingest process (``python -m hostmond.ingest.cli run``, decode worker process
on) on a free 127.0.0.1 port. Every hostile batch gets its precise 4xx and
reason, is counted in the ingest's /metrics, stores nothing (the database's
batch, block, sample and event counts are unchanged), and an honest agent's
batch sent right after it is stored.
"""

from __future__ import annotations

import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from helpers import http_get, metric_value
from ingest_helpers import (
    IngestProcess,
    KeySet,
    db_counts,
    event_records,
    make_keys,
    sample_records,
    seal,
    write_config,
)

from hostmond.core import wire

MAX_BODY = 256 * 1024
MAX_DECOMPRESSED = 2 * 1024 * 1024
MAX_RECORDS = 5000


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.keys = make_keys(tmp / "keys")
        self.stranger = make_keys(tmp / "stranger")  # an agent nobody enrolled, and an ingest key not held
        cfg = write_config(
            tmp,
            self.keys,
            ("acme", "acme-dev"),
            extra="decode_workers = 1",
            limits=f"max_body_bytes = {MAX_BODY}\nmax_decompressed_bytes = {MAX_DECOMPRESSED}\nmax_records = {MAX_RECORDS}\n"
            "max_batch_age_seconds = 3600\nmax_clock_skew_seconds = 60",
        )
        self.db = tmp / "ingest.db"
        self.proc = IngestProcess(cfg)
        self.url = self.proc.start()
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def post(self, blob: bytes, content_type: str = wire.CONTENT_TYPE, chunked: bool = False) -> tuple[int, dict[str, Any]]:
        import json

        headers = {"Content-Type": content_type}
        data: Any = blob
        if chunked:
            data = iter([blob[i : i + 65536] for i in range(0, len(blob), 65536)])
            headers["Transfer-Encoding"] = "chunked"
        req = urllib.request.Request(self.url + "/v1/batches", data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def rejected(self, reason: str) -> float:
        text = http_get(self.url + "/metrics")[2].decode()
        return metric_value(text, "hostmon_ingest_rejected_total", {"reason": reason}) or 0.0

    def honest(self) -> None:
        """An honest batch is stored (the ingest keeps serving)."""
        before = db_counts(self.db)
        status, body = self.post(seal(self.keys, self.next_seq(), sample_records(3) + event_records(1)))
        assert (status, body) == (200, {"status": "stored"})
        after = db_counts(self.db)
        assert after["batches"] == before["batches"] + 1
        assert after["samples"] == before["samples"] + 3
        assert after["events"] == before["events"] + 1


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = Env(tmp_path_factory.mktemp("ingest-sec"))
    try:
        e.honest()  # creates the database
        yield e
    finally:
        e.proc.stop()


def refused(env: Env, blob: bytes, status: int, reason: str, **kw: Any) -> None:
    before = db_counts(env.db)
    count = env.rejected(reason)
    got_status, body = env.post(blob, **kw)
    assert (got_status, body.get("status"), body.get("reason")) == (status, "rejected", reason), body
    assert db_counts(env.db) == before, "a rejected batch stored something"
    assert env.rejected(reason) == count + 1
    env.honest()


def envelope(keys: KeySet, header: wire.BatchHeader, compressed_payload: bytes, sign_with: Any = None) -> bytes:
    """An envelope built from wire's primitives around an arbitrary compressed payload."""
    hb = header.pack()
    prefix = wire.MAGIC + struct.pack(">BI", wire.FORMAT_VERSION, len(hb)) + hb
    ct = wire.suite(header.suite).encrypt(compressed_payload, keys.ingest.public.key, info=prefix)
    body = prefix + struct.pack(">I", len(ct)) + ct
    return body + (sign_with or keys.agent).key.sign(body)


def header(keys: KeySet, seq: int, ns: int, ne: int = 0, tenants: tuple[str, ...] = ("acme",), created: float | None = None) -> wire.BatchHeader:
    return wire.BatchHeader(
        wire.FORMAT_VERSION, keys.ingest.alg, keys.ingest.key_id, keys.agent_id, tenants, seq,
        time.time() if created is None else created, ns, ne,
    )


def resign(keys: KeySet, blob: bytes) -> bytes:
    body = blob[: -wire.SIGNATURE_LEN]
    return body + keys.agent.key.sign(body)


def ct_offset(blob: bytes) -> int:
    (hlen,) = struct.unpack_from(">I", blob, 5)
    return 9 + hlen + 4


def test_tampered_ciphertext_fails_the_signature(env: Env) -> None:
    blob = bytearray(seal(env.keys, env.next_seq(), sample_records(5)))
    blob[ct_offset(bytes(blob)) + 40] ^= 0x01
    refused(env, bytes(blob), 401, "bad_signature")


def test_tampered_ciphertext_signed_again_fails_decryption(env: Env) -> None:
    # Even someone holding the agent key cannot alter a sealed batch's content.
    blob = bytearray(seal(env.keys, env.next_seq(), sample_records(5)))
    blob[ct_offset(bytes(blob)) + 40] ^= 0x01
    refused(env, resign(env.keys, bytes(blob)), 400, "decrypt_failed")


def test_tampered_header_signed_again_fails_decryption(env: Env) -> None:
    # The header is the HPKE info: changing a bound field (here the creation time) breaks the AEAD.
    seq = env.next_seq()
    blob = seal(env.keys, seq, sample_records(5))
    hdr, hb, _ct, _sig = wire.parse_envelope(blob, 1 << 30)
    forged = wire.BatchHeader(hdr.version, hdr.suite, hdr.key_id, hdr.agent_id, hdr.tenants, hdr.seq, hdr.created - 1.0, hdr.n_samples, hdr.n_events).pack()
    assert len(forged) == len(hb)
    tampered = blob.replace(hb, forged)
    refused(env, resign(env.keys, tampered), 400, "decrypt_failed")


def test_bad_signature(env: Env) -> None:
    blob = bytearray(seal(env.keys, env.next_seq(), sample_records(5)))
    blob[-1] ^= 0x80
    refused(env, bytes(blob), 401, "bad_signature")


def test_signed_by_another_key_claiming_an_enrolled_agent(env: Env) -> None:
    seq = env.next_seq()
    blob = envelope(env.keys, header(env.keys, seq, 5), zstandard.ZstdCompressor().compress(msgpack.packb(sample_records(5))), sign_with=env.stranger.agent)
    refused(env, blob, 401, "bad_signature")


def test_unknown_agent(env: Env) -> None:
    stranger = KeySet(env.stranger.dir, env.stranger.agent, env.stranger.agent_pub_path, env.keys.ingest, env.keys.ingest_key_path, env.keys.ingest_pub_path)
    refused(env, seal(stranger, 1, sample_records(5)), 401, "unknown_agent")


def test_tenant_not_allowed(env: Env) -> None:
    recs = sample_records(3) + sample_records(2, tenant="globex")
    refused(env, seal(env.keys, env.next_seq(), recs), 403, "tenant_not_allowed")


def test_record_tenant_not_named_in_the_header(env: Env) -> None:
    recs = sample_records(3, tenant="acme-dev")
    refused(env, seal(env.keys, env.next_seq(), recs, tenants=("acme",)), 422, "bad_record")


def test_replayed_sequence_with_other_content(env: Env) -> None:
    seq = env.next_seq()
    first = seal(env.keys, seq, sample_records(4))
    assert env.post(first) == (200, {"status": "stored"})
    refused(env, seal(env.keys, seq, sample_records(7)), 409, "replay")
    # The honest retry of the stored batch is a no-op 200.
    before = db_counts(env.db)
    assert env.post(first) == (200, {"status": "duplicate"})
    assert db_counts(env.db) == before


def test_batch_older_than_the_replay_window(env: Env) -> None:
    refused(env, seal(env.keys, env.next_seq(), sample_records(4), created=time.time() - 7200), 409, "too_old")


def test_batch_from_the_future_is_retryable_not_dropped(env: Env) -> None:
    refused(env, seal(env.keys, env.next_seq(), sample_records(4), created=time.time() + 600), 425, "created_in_future")


def test_oversized_body_with_content_length(env: Env) -> None:
    refused(env, b"\x00" * (MAX_BODY + 1), 413, "body_too_large")


def test_oversized_body_chunked(env: Env) -> None:
    refused(env, b"\x00" * (MAX_BODY + 70000), 413, "body_too_large", chunked=True)


def test_zstd_bomb_with_declared_size(env: Env) -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\x00" * (64 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    refused(env, envelope(env.keys, header(env.keys, env.next_seq(), 1), bomb), 413, "decompressed_too_large")


def test_zstd_bomb_streamed_without_declared_size(env: Env) -> None:
    cobj = zstandard.ZstdCompressor(level=3, write_content_size=False).compressobj()
    bomb = b"".join(cobj.compress(b"\x00" * (1 << 20)) for _ in range(64)) + cobj.flush()
    assert zstandard.frame_content_size(bomb) == -1
    refused(env, envelope(env.keys, header(env.keys, env.next_seq(), 1), bomb), 413, "decompressed_too_large")


def test_too_many_records(env: Env) -> None:
    refused(env, seal(env.keys, env.next_seq(), sample_records(MAX_RECORDS + 1)), 413, "too_many_records")


def test_malformed_msgpack(env: Env) -> None:
    payload = zstandard.ZstdCompressor().compress(b"\x95\x01\xc1\xc1garbage")
    refused(env, envelope(env.keys, header(env.keys, env.next_seq(), 1), payload), 400, "bad_msgpack")


def test_not_zstd(env: Env) -> None:
    refused(env, envelope(env.keys, header(env.keys, env.next_seq(), 1), b"plainly not zstd"), 400, "bad_compression")


@pytest.mark.parametrize(
    "bad",
    [
        {"s": "m", "k": "gauge", "v": "12", "l": {"tenant_id": "acme"}, "t": 1.0},  # value is a string
        {"s": "m", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme"}, "t": "now"},  # time is a string
        {"s": "m", "k": "histogram", "v": 1.0, "l": {"tenant_id": "acme"}, "t": 1.0},  # unknown type
        {"s": "m", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme", "x": 3}, "t": 1.0},  # label value not a string
        {"s": 7, "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme"}, "t": 1.0},  # name not a string
        {"s": "m", "k": "gauge", "v": True, "l": {"tenant_id": "acme"}, "t": 1.0},  # a bool is not a number
        {"s": "m", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme"}, "t": 1.0, "x": 1},  # unknown key
        {"e": "login", "t": 1.0, "f": {"when": {"deep": [{"x": b"bytes"}]}}, "l": {"tenant_id": "acme"}},  # bytes field
        ["not", "a", "map"],
    ],
    ids=["value_str", "time_str", "type", "label_int", "name_int", "value_bool", "extra_key", "event_bytes", "list"],
)
def test_wrong_field_types(env: Env, bad: Any) -> None:
    recs: list[Any] = sample_records(3) + [bad]
    is_sample = isinstance(bad, dict) and "s" in bad
    refused(env, seal(env.keys, env.next_seq(), recs, tenants=("acme",), n_samples=4 if is_sample else 3, n_events=0 if is_sample else 1), 422, "bad_record")


def test_header_counts_that_lie(env: Env) -> None:
    refused(env, seal(env.keys, env.next_seq(), sample_records(5), n_samples=4, n_events=1), 422, "count_mismatch")


def test_sealed_to_an_ingest_key_not_held(env: Env) -> None:
    other = KeySet(env.keys.dir, env.keys.agent, env.keys.agent_pub_path, env.stranger.ingest, env.stranger.ingest_key_path, env.stranger.ingest_pub_path)
    refused(env, seal(other, env.next_seq(), sample_records(3)), 400, "unknown_key_id")


@pytest.mark.parametrize(
    "blob,reason",
    [
        (b"GET / HTTP/1.1 and other junk" * 4, "bad_magic"),
        (wire.MAGIC + b"\x01" + b"\x00" * 80, "malformed_envelope"),
        (wire.MAGIC + b"\x09" + b"\x00" * 80, "unsupported_version"),
    ],
    ids=["junk", "truncated", "version"],
)
def test_malformed_envelopes(env: Env, blob: bytes, reason: str) -> None:
    refused(env, blob, 400, reason)


def test_wrong_content_type(env: Env) -> None:
    refused(env, seal(env.keys, env.next_seq(), sample_records(3)), 415, "wrong_content_type", content_type="application/json")


def test_all_reasons_are_exposed_from_the_start(env: Env) -> None:
    text = http_get(env.url + "/metrics")[2].decode()
    for reason in ("bad_signature", "unknown_agent", "tenant_not_allowed", "replay", "too_old", "body_too_large", "decompressed_too_large", "bad_msgpack", "bad_record"):
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": reason}) is not None, reason
    assert metric_value(text, "hostmon_ingest_batches_total", {"result": "stored"}) >= 1
    assert metric_value(text, "hostmon_ingest_samples_total", {"tenant_id": "acme"}) >= 3


async def test_an_honest_agent_keeps_shipping_during_a_flood_of_hostile_batches(env: Env) -> None:
    """The real Shipper delivers every sample, exactly once, while hostile batches hit the ingest concurrently."""
    import asyncio

    import aiohttp
    from hostmond.agent.handoff import Collection
    from hostmond.agent.shipping.config import ShippingConfig
    from hostmond.agent.shipping.shipper import Shipper
    from ingest_helpers import all_samples

    from hostmond.api import Sample

    def hostile() -> list[tuple[bytes, int, str]]:
        bad_sig = bytearray(seal(env.keys, env.next_seq(), sample_records(5)))
        bad_sig[-1] ^= 0x80
        bomb = zstandard.ZstdCompressor(level=3).compress(b"\x00" * (8 * 1024 * 1024))
        return [
            (bytes(bad_sig), 401, "bad_signature"),
            (seal(env.keys, env.next_seq(), sample_records(2, tenant="globex")), 403, "tenant_not_allowed"),
            (envelope(env.keys, header(env.keys, env.next_seq(), 1), bomb), 413, "decompressed_too_large"),
            (seal(env.keys, 1, sample_records(9)), 409, "replay"),  # seq 1 was stored by the fixture
            (envelope(env.keys, header(env.keys, env.next_seq(), 1), zstandard.ZstdCompressor().compress(b"\xc1\xc1")), 400, "bad_msgpack"),
            (seal(env.keys, env.next_seq(), [{"s": "m", "k": "gauge", "v": "1", "l": {"tenant_id": "acme"}, "t": 1.0}]), 422, "bad_record"),
        ]

    attacks = [a for _ in range(8) for a in hostile()]
    before = db_counts(env.db)
    t0 = time.time() - 60
    cfg = ShippingConfig(
        ingest_url=env.url, ingest_public_key=env.keys.ingest_pub_path,
        batch_max_records=10, batch_max_age=0.05, backoff_first=0.02, backoff_max=0.2,
    )
    shipper = Shipper(cfg, state_dir=str(env.tmp / "honest-agent"), tenant_ids=["acme-dev"], agent_key_path=str(env.keys.dir / "agent.key"))
    await shipper.start()
    sem = asyncio.Semaphore(4)
    answers: list[tuple[int, str, int, str]] = []

    async def attack(session: aiohttp.ClientSession, blob: bytes, status: int, reason: str) -> None:
        async with sem, session.post(env.url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
            body = await r.json()
            answers.append((r.status, body.get("reason", ""), status, reason))

    async def honest() -> None:
        for k in range(20):
            samples = [Sample("hostmon_flood_value", "gauge", float(k * 10 + j), {"k": str(k), "j": str(j)}, t0 + k) for j in range(10)]
            shipper.submit(Collection("flood", t0 + k, samples, []))
            await asyncio.sleep(0.01)

    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(honest(), *(attack(session, *a) for a in attacks))
        assert await shipper.wait_sent(30)
    finally:
        await shipper.stop()
    assert [(got, why) for got, why, _, _ in answers] == [(want, reason) for _, _, want, reason in answers]
    assert len(answers) == len(attacks)
    want = sorted(
        ("hostmon_flood_value", tuple(sorted({"tenant_id": "acme-dev", "k": str(k), "j": str(j)}.items())), float(k * 10 + j), t0 + k)
        for k in range(20) for j in range(10)
    )
    assert sorted(all_samples(env.db, tenant="acme-dev")) == want  # every honest sample, once
    after = db_counts(env.db)
    assert after["samples"] == before["samples"] + 200  # and nothing of the hostile batches
    assert after["batches"] == before["batches"] + shipper.sent_batches
    assert shipper.rejected_samples == 0 and shipper.duplicates == 0
