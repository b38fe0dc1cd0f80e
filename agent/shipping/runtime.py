"""Glue between ``hostmon run`` and the shipper (called by agent/cli.py).

``make_shipper(cfg, agent)`` returns an unstarted :class:`Shipper` (the agent
calls ``start()``/``stop()`` on its consumers). With no ``shipping.ingest_url``
it first starts the embedded ingest handed to it by the command (an
:class:`EmbeddedIngest`: ``hostmond.ingest.embedded.EmbeddedIngest``, passed in by
``hostmond.cli``, so the agent never imports the ingest) in this process and hands
it the sealed batches directly, so the first ``hostmon run`` shows the whole path.

The agent identity at the default path (``STATE_DIR/keys/agent.key``) is created
on first start, like an ssh host key; its agent id is logged so it can be
enrolled at a central ingest. A key given explicitly (``shipping.agent_key``)
is never created: it must exist.

``check_shipping(cfg)`` is what ``hostmon check-config`` runs: it loads the keys
the config names and checks their permissions and types, without starting anything.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hostmond.agent.shipping.sender import Deliver
from hostmond.agent.shipping.shipper import Shipper

from hostmond.core import keys
from hostmond.core.errors import ConfigError, KeyFileError

log = logging.getLogger("hostmon.shipping")

EMBEDDED_DRAIN_SECONDS = 1.0


def agent_public_key_path(private_path: str) -> str:
    stem, ext = os.path.splitext(private_path)
    return (stem if ext == ".key" else private_path) + ".pub"


def ensure_agent_identity(cfg: Any) -> str:
    """The agent key path, creating the identity at the default path on first start."""
    state_dir = cfg.resolved_state_dir()
    path = cfg.shipping.resolved_agent_key(state_dir)
    if cfg.shipping.agent_key:
        return path  # an operator-provided key is loaded (and checked) by the shipper
    if not os.path.lexists(path):
        kf = keys.ensure_keypair(os.path.dirname(path), keys.AGENT_KEY_NAME, keys.ED25519)
        log.info(
            "agent identity created; enroll its public key at the ingest",
            extra={"agent_id": kf.key_id, "public_key": kf.public_path},
        )
    return path


def _ensure_public_file(private_path: str) -> str:
    """The agent's .pub next to its key, written from the private key if missing (public data)."""
    pub_path = agent_public_key_path(private_path)
    if not os.path.exists(pub_path):
        priv = keys.load_private_key(private_path, (keys.ED25519,))
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, priv.public.text(f"agent_id={priv.key_id}").encode("ascii"))
        finally:
            os.close(fd)
    return pub_path


class EmbeddedIngest(Protocol):
    """A local ingest the shipper can start when no ``shipping.ingest_url`` is set."""

    def database_path(self, state_dir: str) -> str: ...

    def public_key_path(self, state_dir: str) -> str: ...

    async def start(
        self, state_dir: str, agent_public_key_path: str, suite: str, *, max_bytes: int, retention_seconds: float
    ) -> tuple[Deliver, Callable[[], Awaitable[None]]]: ...


class EmbeddedShipper(Shipper):
    """A shipper whose stop() also drains to and stops the embedded ingest it ships to."""

    stop_ingest: Callable[[], Awaitable[None]] | None = None

    async def stop(self, drain_timeout: float = EMBEDDED_DRAIN_SECONDS) -> None:
        try:
            await super().stop(drain_timeout=drain_timeout)
        finally:
            if self.stop_ingest is not None:
                stop, self.stop_ingest = self.stop_ingest, None
                await stop()


async def make_shipper(cfg: Any, agent: Any = None, embedded: EmbeddedIngest | None = None) -> Shipper:
    """Build the shipper for ``hostmon run``; starts ``embedded`` when no ingest_url is set."""
    sc = cfg.shipping
    state_dir = cfg.resolved_state_dir()
    agent_key_path = ensure_agent_identity(cfg)
    tenant_ids = [cfg.tenant_id]
    if sc.ingest_url:
        return Shipper(sc, state_dir=state_dir, tenant_ids=tenant_ids, agent_key_path=agent_key_path)
    if embedded is None:
        raise ConfigError(
            getattr(cfg, "source", None), "shipping.ingest_url",
            "is empty and this program has no embedded ingest: set ingest_url, or shipping.enabled = false",
        )
    deliver, stop = await embedded.start(
        state_dir, _ensure_public_file(agent_key_path), sc.suite or keys.X25519,
        max_bytes=sc.local_history_max_bytes, retention_seconds=sc.local_history_days * 86400.0,
    )
    db = embedded.database_path(state_dir)
    log.info(
        "this agent ships to its embedded ingest; read what it stored with the query command",
        extra={"query": f"hostmon ingest query --db {shlex.quote(db)} --tenant {shlex.quote(cfg.tenant_id)}"},
    )
    shipper = EmbeddedShipper(
        sc,
        state_dir=state_dir,
        tenant_ids=tenant_ids,
        agent_key_path=agent_key_path,
        ingest_public_key_path=embedded.public_key_path(state_dir),
        ingest_url="embedded ingest (in-process)",
        local=deliver,
    )
    shipper.stop_ingest = stop
    return shipper


def check_shipping(cfg: Any) -> None:
    """Load every key file the shipping config names; raise KeyFileError/ConfigError on a problem."""
    sc = cfg.shipping
    if not sc.enabled:
        return
    file = getattr(cfg, "source", None)
    state_dir = cfg.resolved_state_dir()
    agent_key = sc.resolved_agent_key(state_dir)
    if sc.agent_key or os.path.lexists(agent_key):
        keys.load_private_key(agent_key, (keys.ED25519,))
    if sc.ingest_url:
        pub = keys.load_public_key(sc.ingest_public_key, keys.INGEST_ALGORITHMS)
        if sc.suite and pub.alg != sc.suite:
            raise ConfigError(file, "shipping.suite", f"is {sc.suite}, but {sc.ingest_public_key} holds a {pub.alg} key")
    for key, path in (("shipping.ca_file", sc.ca_file), ("shipping.client_cert", sc.client_cert)):
        if path and not os.path.isfile(path):
            raise ConfigError(file, key, f"{path}: no such file")
    if sc.client_key:
        try:
            keys.check_private_permissions(sc.client_key)
        except FileNotFoundError:
            raise KeyFileError(f"{sc.client_key}: client key file not found") from None
