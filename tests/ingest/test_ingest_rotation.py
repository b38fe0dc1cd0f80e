"""Key rotation to the post-quantum suite, end to end (issue 4, points 1 and 2).

A real ``hostmon ingest run`` process (decode worker process on) holds two
private keys: the old X25519 one and a new ``mlkem768-x25519`` one. The
agent's own Shipper seals batches to the old key while the ingest is down,
then is reconfigured (``shipping.suite = "mlkem768-x25519"``, the new public
key) and restarted: its spool still holds batches sealed to the old key id,
and new batches go to the new key. Every sample arrives exactly once. Once
the old key is retired from the ingest config, a batch sealed to it is
refused (400 ``unknown_key_id``) and stores nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from helpers import free_port, metric_value
from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.shipping.shipper import Shipper
from ingest_helpers import (
    IngestProcess,
    KeySet,
    all_samples,
    db_counts,
    make_keys,
    sample_records,
    seal,
    write_config,
)

from hostmond.api import Sample
from hostmond.core import keys as keymod
from hostmond.core import wire
from hostmond.core.errors import KeyFileError


def _collection(k: int, t0: float) -> Collection:
    samples = [Sample("hostmon_rotation_value", "gauge", float(k * 100 + j), {"tenant_id": "acme", "k": str(k), "j": str(j)}, t0 + k) for j in range(5)]
    return Collection("rotation", t0 + k, samples, [])


def _shipper(state: Path, url: str, pub: str, suite: str) -> Shipper:
    cfg = ShippingConfig(
        ingest_url=url, ingest_public_key=pub, suite=suite,
        batch_max_records=5, batch_max_age=60.0, backoff_first=0.05, backoff_max=0.2,
    )
    cfg.validate()
    return Shipper(cfg, state_dir=str(state), tenant_ids=["acme"])


async def _post(session: aiohttp.ClientSession, url: str, blob: bytes) -> tuple[int, dict[str, Any]]:
    async with session.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
        return r.status, await r.json()


def _spooled_key_ids(state: Path) -> list[str]:
    out = []
    for p in sorted((state / "spool").glob("*.hmb")):
        header, _, _, _ = wire.parse_envelope(p.read_bytes(), 1 << 24)
        out.append(header.key_id)
    return out


async def test_rotation_to_mlkem_delivers_old_and_new_batches_exactly_once(tmp_path: Path) -> None:
    old = make_keys(tmp_path / "keys")  # agent identity + the old x25519 ingest key
    new_files = keymod.generate_ingest_keypair(tmp_path / "keys", keymod.MLKEM768_X25519, name="ingest-2026")
    new = KeySet(old.dir, old.agent, old.agent_pub_path, keymod.load_private_key(new_files.private_path),
                 new_files.private_path, new_files.public_path)
    state = tmp_path / "agent-state"
    (state / "keys").mkdir(parents=True)
    for ext in ("key", "pub"):  # the shipper's default identity path
        src = Path(old.dir / f"agent.{ext}")
        dst = state / "keys" / f"agent.{ext}"
        dst.write_bytes(src.read_bytes())
        dst.chmod(0o600 if ext == "key" else 0o644)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.time() - 600

    # 1. The ingest is down; the agent seals 3 batches to the old x25519 key.
    sh = _shipper(state, url, old.ingest_pub_path, "x25519")
    await sh.start()
    for k in range(3):
        sh.submit(_collection(k, t0))
    await sh.stop()
    assert _spooled_key_ids(state) == [old.ingest.key_id] * 3

    # 2. The shipper is reconfigured to the new post-quantum key; a shipper asking for
    #    mlkem768-x25519 with the old key refuses to start (the suite is checked).
    wrong = _shipper(state, url, old.ingest_pub_path, "mlkem768-x25519")
    try:
        await wrong.start()
        raise AssertionError("a shipper with suite mlkem768-x25519 started with an x25519 key")
    except KeyFileError as e:
        assert "mlkem768-x25519" in str(e)

    # 3. The ingest comes up holding both private keys (decode worker process on).
    cfg = write_config(tmp_path, old, listen=f"127.0.0.1:{port}",
                       private_keys=[old.ingest_key_path, new.ingest_key_path], extra="decode_workers = 1")
    ingest = IngestProcess(cfg)
    ingest.start()
    try:
        sh = _shipper(state, url, new.ingest_pub_path, "mlkem768-x25519")
        await sh.start()
        try:
            for k in range(3, 6):
                sh.submit(_collection(k, t0))
            await sh.flush()
            assert await sh.wait_sent(30)
        finally:
            await sh.stop()
        assert sh.sealed == 3 and sh.ingest_key is not None and sh.ingest_key.key_id == new.ingest.key_id
        assert sh.sent_batches == 6 and sh.duplicates == 0 and not any(sh.rejected.values())
        async with aiohttp.ClientSession() as session, session.get(ingest.url + "/metrics") as r:
            metrics = await r.text()
        assert metric_value(metrics, "hostmon_ingest_private_keys") == 2
        assert metric_value(metrics, "hostmon_ingest_batches_total", {"result": "stored"}) == 6
    finally:
        ingest.stop()

    # Every sample, old key and new, exactly once and intact.
    want = sorted(
        ("hostmon_rotation_value", tuple(sorted({"tenant_id": "acme", "k": str(k), "j": str(j)}.items())), float(k * 100 + j), t0 + k)
        for k in range(6) for j in range(5)
    )
    assert sorted(all_samples(tmp_path / "ingest.db")) == want

    # 4. The old key is retired: a batch still sealed to it is refused and stores nothing.
    cfg = write_config(tmp_path, old, listen=f"127.0.0.1:{port}", private_keys=[new.ingest_key_path], extra="decode_workers = 0")
    ingest = IngestProcess(cfg)
    ingest.start()
    try:
        before = db_counts(tmp_path / "ingest.db")
        async with aiohttp.ClientSession() as session:
            status, body = await _post(session, ingest.url, seal(old, 10**15, sample_records(2)))
            assert (status, body["reason"]) == (400, "unknown_key_id")
            assert db_counts(tmp_path / "ingest.db") == before
            # ...while the new key keeps working.
            assert await _post(session, ingest.url, seal(new, 10**15 + 1, sample_records(2))) == (200, {"status": "stored"})
    finally:
        ingest.stop()
