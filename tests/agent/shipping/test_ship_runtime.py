"""make_shipper/check_shipping: the embedded default ships to a local ingest; key problems stop the start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from hostmond.agent import config as config_mod
from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.runtime import check_shipping, make_shipper
from hostmond.ingest.embedded import EmbeddedIngest

from hostmond.api import Event, Sample
from hostmond.core import keys
from hostmond.core.errors import ConfigError, KeyFileError


def load_cfg(tmp_path, extra: str = "") -> config_mod.Config:
    p = tmp_path / "agent.toml"
    p.write_text(f'tenant_id = "acme"\nstate_dir = "{tmp_path / "state"}"\n[shipping]\nbatch_max_age = 0.05\n{extra}')
    return config_mod.load(str(p), environ={})


async def test_embedded_default_creates_keys_ships_and_stores(tmp_path) -> None:
    pytest.importorskip("hostmond.ingest.embedded")
    cfg = load_cfg(tmp_path)
    shipper = await make_shipper(cfg, None, EmbeddedIngest())
    await shipper.start()
    try:
        samples = [Sample("hostmon_test_value", "gauge", float(j), {"tenant_id": "acme", "j": str(j)}) for j in range(25)]
        shipper.submit(Collection("test", 1767225600.0, samples, [Event("test_event", 1767225600.0, {"n": 1}, {"tenant_id": "acme"})]))
        assert await shipper.wait_sent(10)
    finally:
        await shipper.stop()
    state = tmp_path / "state"
    assert os.stat(state / "keys" / "agent.key").st_mode & 0o077 == 0
    agent_id = keys.load_public_key(state / "keys" / "agent.pub").key_id
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hostmond.cli", "ingest", "query", "--db", str(state / "ingest" / "ingest.db"),
         "--tenant", "acme", "--name", "hostmon_test_value", "--format", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert sorted(row["value"] for row in rows) == [float(j) for j in range(25)]
    assert agent_id == keys.load_private_key(state / "keys" / "agent.key").key_id


def test_check_shipping_reports_key_problems(tmp_path) -> None:
    kd = tmp_path / "k"
    a = keys.generate_agent_identity(kd)
    i = keys.generate_ingest_keypair(kd)
    ok = load_cfg(tmp_path, f'ingest_url = "https://ingest:19436"\ningest_public_key = "{i.public_path}"\nagent_key = "{a.private_path}"\n')
    check_shipping(ok)
    os.chmod(a.private_path, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        check_shipping(ok)
    os.chmod(a.private_path, 0o600)
    wrong_suite = load_cfg(tmp_path, f'ingest_url = "https://ingest:19436"\ningest_public_key = "{i.public_path}"\nsuite = "mlkem768-x25519"\n')
    with pytest.raises(ConfigError, match="shipping.suite"):
        check_shipping(wrong_suite)
    missing = load_cfg(tmp_path, f'ingest_url = "https://ingest:19436"\ningest_public_key = "{kd / "nope.pub"}"\n')
    with pytest.raises(KeyFileError, match="not found"):
        check_shipping(missing)


async def test_with_an_ingest_url_no_embedded_ingest_starts(tmp_path) -> None:
    from hostmond.agent.shipping.runtime import EmbeddedShipper

    kd = tmp_path / "k"
    i = keys.generate_ingest_keypair(kd)
    cfg = load_cfg(tmp_path, f'ingest_url = "https://ingest.example.com:19436"\ningest_public_key = "{i.public_path}"\n')
    shipper = await make_shipper(cfg, None, EmbeddedIngest())
    assert not isinstance(shipper, EmbeddedShipper)
    assert shipper.ingest_url == "https://ingest.example.com:19436"
    assert shipper.ingest_public_key_path == i.public_path
    assert not (tmp_path / "state" / "ingest").exists()  # no local ingest, no local database
    assert (tmp_path / "state" / "keys" / "agent.key").exists()  # the identity to enroll is created


async def test_embedded_ingest_with_the_mlkem_suite_option(tmp_path) -> None:
    """shipping.suite = "mlkem768-x25519" with no ingest_url: the embedded ingest's key is hybrid and batches land."""
    from hostmond.ingest.query import open_db, query_samples

    cfg = load_cfg(tmp_path, 'suite = "mlkem768-x25519"\n')
    shipper = await make_shipper(cfg, None, EmbeddedIngest())
    await shipper.start()
    try:
        samples = [Sample("hostmon_test_value", "gauge", float(j), {"j": str(j)}) for j in range(7)]
        shipper.submit(Collection("test", 1767225600.0, samples, []))
        assert await shipper.wait_sent(10)
    finally:
        await shipper.stop()
    state = tmp_path / "state"
    assert keys.load_public_key(state / "ingest" / "ingest.pub").alg == "mlkem768-x25519"
    assert shipper.sent_batches >= 1 and not any(shipper.rejected.values())
    conn = open_db(str(state / "ingest" / "ingest.db"))
    try:
        rows = list(query_samples(conn, "acme", "hostmon_test_value"))
    finally:
        conn.close()
    assert sorted(r["value"] for r in rows) == [float(j) for j in range(7)]
    assert all(r["labels"]["tenant_id"] == "acme" for r in rows)
