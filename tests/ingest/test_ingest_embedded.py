"""The embedded ingest (issue 4, point 7): the agent's own Shipper ships to an ingest in the same process."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.shipping.shipper import Shipper
from hostmond.ingest.embedded import (
    database_path,
    public_key_path,
    start_embedded_ingest,
)
from ingest_helpers import all_samples, db_counts

from hostmond.api import Event, Sample
from hostmond.core import keys as keymod
from hostmond.core.errors import KeyFileError


async def test_agent_ships_to_its_embedded_ingest_and_reads_back(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    agent = keymod.generate_agent_identity(os.path.join(state, "keys"))
    deliver, stop = await start_embedded_ingest(state, agent.public_path, ["acme"])
    try:
        key_file = Path(state) / "ingest" / "ingest.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        shipper = Shipper(ShippingConfig(ingest_public_key=public_key_path(state)), state_dir=state, tenant_ids=["acme"],
                          ingest_url="embedded", local=deliver)
        await shipper.start()
        now = time.time()
        shipper.submit(Collection("cpu", now, [Sample("node_load1", "gauge", 0.5, {"tenant_id": "acme", "host": "h"}, now)],
                                  [Event("auth_failure", now, {"user": "root"}, {"tenant_id": "acme", "host": "h"})]))
        await shipper.flush()
        assert await shipper.wait_sent(20)
        await shipper.stop()
        assert db_counts(database_path(state)) == {"batches": 1, "blocks": 1, "samples": 1, "events": 1}
        assert all_samples(database_path(state)) == [("node_load1", (("host", "h"), ("tenant_id", "acme")), 0.5, now)]
    finally:
        await stop()
    # A restart keeps the key pair (the agent's spooled batches stay decryptable).
    kid = keymod.load_private_key(Path(state) / "ingest" / "ingest.key").key_id
    _deliver2, stop2 = await start_embedded_ingest(state, agent.public_path, ["acme"])
    await stop2()
    assert keymod.load_private_key(Path(state) / "ingest" / "ingest.key").key_id == kid


def _socket_fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


async def test_embedded_ingest_opens_no_socket_and_checks_batches_like_a_central_one(tmp_path: Path) -> None:
    """In-process: no listener at all (nothing to expose), and the same checks: a tampered or foreign
    envelope is refused with the central ingest's status and reason, and nothing is stored."""
    state = str(tmp_path / "state")
    agent = keymod.generate_agent_identity(os.path.join(state, "keys"))
    before = _socket_fds()
    deliver, stop = await start_embedded_ingest(state, agent.public_path, ["acme"])
    try:
        assert _socket_fds() <= before, "the embedded ingest opened a socket"
        status, body, _ = await deliver(b"not an envelope")
        assert 400 <= status < 500 and body["status"] == "rejected", (status, body)
        # a real envelope sealed by another (not enrolled) agent is refused too
        other = keymod.generate_agent_identity(tmp_path / "other")
        shipper = Shipper(ShippingConfig(ingest_public_key=public_key_path(state), agent_key=str(other.private_path)),
                          state_dir=str(tmp_path / "other-state"), tenant_ids=["acme"], ingest_url="embedded", local=deliver)
        await shipper.start()
        now = time.time()
        shipper.submit(Collection("cpu", now, [Sample("node_load1", "gauge", 0.5, {"tenant_id": "acme"}, now)], []))
        await shipper.flush()
        assert not await shipper.wait_sent(3) or shipper.rejected
        await shipper.stop()
        assert sum(shipper.rejected.values()) >= 1, shipper.rejected
        assert db_counts(database_path(state))["batches"] == 0
    finally:
        await stop()


async def test_embedded_ingest_refuses_a_readable_private_key(tmp_path: Path) -> None:
    agent = keymod.generate_agent_identity(tmp_path / "keys")
    _deliver, stop = await start_embedded_ingest(str(tmp_path), agent.public_path, None)
    await stop()
    os.chmod(tmp_path / "ingest" / "ingest.key", 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        await start_embedded_ingest(str(tmp_path), agent.public_path, None)
