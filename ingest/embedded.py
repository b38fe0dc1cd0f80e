"""The embedded ingest: ``hostmon run`` with no ``shipping.ingest_url`` ships to itself.

:func:`start_embedded_ingest` runs the ingest's batch path (:class:`hostmond.ingest.core.IngestCore`,
the same as ``hostmon ingest run`` serves) inside the agent's event loop, with its SQLite database
and its key pair in ``STATE_DIR/ingest/`` (the key pair is created on first start, private key
0600). The agent's public key is enrolled for the given tenants. Batches are sealed, spooled,
verified, decrypted and stored exactly as with a central ingest, so a newcomer sees the whole
path (collect, seal, spool, ship, store) and reads it back with::

    hostmon ingest query --db STATE_DIR/ingest/ingest.db --tenant TENANT

The envelopes are handed over in-process (no listener, no HTTP): the agent is the only writer of
its own ingest, so a socket on loopback bought nothing but cost an HTTP stack in the agent's
memory (about 15 MB of RSS) and a round trip per batch. Decoding runs in threads of the agent
process (no worker processes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hostmond.core import names

log = logging.getLogger("hostmon.ingest.embedded")

ANY_TENANT = "*"


def ingest_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "ingest")


def public_key_path(state_dir: str) -> str:
    """The embedded ingest's public key file (exists once :func:`start_embedded_ingest` returned)."""
    return os.path.join(ingest_dir(state_dir), f"{names.INGEST_KEY_NAME}.pub")


def database_path(state_dir: str) -> str:
    return os.path.join(ingest_dir(state_dir), "ingest.db")


# One batch envelope in, the ingest's answer out: (HTTP status, JSON body, headers).
Deliver = Callable[[bytes], Awaitable[tuple[int, dict[str, Any], "dict[str, str] | None"]]]


async def start_embedded_ingest(
    state_dir: str,
    agent_public_key_path: str,
    tenants: Sequence[str] | None,
    suite: str = names.X25519,
    max_bytes: int = 0,
    retention_seconds: float = 30 * 86400.0,
) -> tuple[Deliver, Callable[[], Awaitable[None]]]:
    """Start a local ingest; returns ``(deliver, stop)``: ``await deliver(envelope)`` answers one batch,
    ``await stop()`` closes the database.

    ``tenants`` are the tenant ids the local agent may write; ``None`` allows any
    (the agent is the only writer of its own embedded ingest). The ingest public key to seal
    to is :func:`public_key_path` (``STATE_DIR/ingest/ingest.pub``).
    Raises KeyFileError / ConfigError like the standalone ingest.
    """
    # Imported here, not at the top: an agent that ships elsewhere (or not at all) never
    # loads the ingest's SQLite sink, decoder and prometheus_client.
    from hostmond.ingest.config import (
        AgentEntry,
        Enrollment,
        IngestConfig,
        LoadedKeys,
        SqliteConfig,
    )
    from hostmond.ingest.core import IngestCore

    from hostmond.core import keys as keymod

    d = ingest_dir(state_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    kf = keymod.ensure_keypair(d, keymod.INGEST_KEY_NAME, suite)
    private = keymod.load_private_key(kf.private_path, keymod.INGEST_ALGORITHMS)
    agent_pub = keymod.load_public_key(agent_public_key_path, (keymod.ED25519,))
    allowed = frozenset(tenants) if tenants is not None else frozenset({ANY_TENANT})
    agent_id = keymod.agent_id_of(agent_pub)

    cfg = IngestConfig(
        private_keys=[kf.private_path],
        agents=[AgentEntry(public_key=agent_public_key_path, tenants=sorted(allowed), name="local agent")],
        sqlite=SqliteConfig(path=database_path(state_dir), max_bytes=max_bytes, retention_seconds=retention_seconds),
        decode_workers=0,
    )
    cfg.source = "<embedded ingest>"
    loaded = LoadedKeys({private.key_id: private}, {agent_id: Enrollment(agent_id, "local agent", agent_pub, allowed)})
    core = IngestCore(cfg, loaded)
    await core.open()

    async def deliver(envelope: bytes) -> tuple[int, dict[str, Any], dict[str, str] | None]:
        a = await core.accept(envelope)
        return a.status, a.body, a.headers

    log.info(
        "embedded ingest started: no shipping.ingest_url is set, so this agent ships to itself (in-process)",
        extra={
            "database": cfg.sqlite.path,
            "ingest_public_key": kf.public_path,
        },
    )
    return deliver, core.close


class EmbeddedIngest:
    """What ``hostmon run`` hands the agent's shipper when no ingest_url is set.

    The agent does not import the ingest: the command (:mod:`hostmond.cli`) passes
    this object to :func:`hostmond.agent.shipping.runtime.make_shipper`, which calls
    :meth:`start` and reads the paths it needs to seal and to log the query hint.
    """

    def database_path(self, state_dir: str) -> str:
        return database_path(state_dir)

    def public_key_path(self, state_dir: str) -> str:
        return public_key_path(state_dir)

    async def start(
        self, state_dir: str, agent_public_key_path: str, suite: str, *, max_bytes: int, retention_seconds: float
    ) -> tuple[Deliver, Callable[[], Awaitable[None]]]:
        """Start it in this process, accepting any tenant of the one local agent, with its history
        bounded by ``max_bytes`` and ``retention_seconds`` (0: no bound); ``(deliver, stop)``."""
        return await start_embedded_ingest(
            state_dir, agent_public_key_path, tenants=None, suite=suite, max_bytes=max_bytes, retention_seconds=retention_seconds
        )

