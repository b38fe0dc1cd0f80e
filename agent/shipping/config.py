"""The ``[shipping]`` section of the agent config."""

from __future__ import annotations

import dataclasses
import os

from hostmond.core.config import field
from hostmond.core.validate import (
    check_fraction,
    check_not_negative,
    check_positive,
    check_url,
)

SUITE_NAMES = ("x25519", "mlkem768-x25519")


def _suite(v: str) -> None:
    if v and v not in SUITE_NAMES:
        raise ValueError(f"must be empty or one of {', '.join(SUITE_NAMES)}")


@dataclasses.dataclass
class ShippingConfig:
    enabled: bool = field(True, "Ship samples and events to an ingest; with no ingest_url, a local ingest is embedded.")
    ingest_url: str = field(
        "", "URL of the central ingest (https://...); empty starts an embedded ingest on 127.0.0.1.", check=check_url
    )
    ingest_public_key: str = field(
        "", "Path of the ingest's public key file (hostmon keys ingest); required with ingest_url."
    )
    agent_key: str = field("", "Path of the agent's private Ed25519 key; empty means STATE_DIR/keys/agent.key.")
    suite: str = field(
        "",
        "HPKE suite the ingest key must have (x25519 or mlkem768-x25519); empty accepts the key's own suite.",
        check=_suite,
    )
    batch_max_records: int = field(10000, "A batch closes when it holds this many samples and events.", check=check_positive)
    batch_max_age: float = field(10.0, "A batch closes this many seconds after its first record at the latest.", check=check_positive)
    batch_jitter: float = field(0.1, "Random spread of batch_max_age, as a fraction (0 to 0.5), so agents do not send in step.", check=check_fraction)
    buffer_limit_records: int = field(
        200000, "Records held in memory before sealing; beyond this, new collections are dropped and counted.", check=check_positive
    )
    spool_dir: str = field("", "Directory of sealed batches waiting to be sent; empty means STATE_DIR/spool.")
    spool_limit_bytes: int = field(
        268435456, "Most bytes the spool may hold; when full, the oldest batches are dropped and counted.", check=check_positive
    )
    local_history_max_bytes: int = field(
        268435456,
        "With no ingest_url, the embedded ingest keeps at most this many bytes of local history (the oldest is deleted first; README: bytes per day); 0 means no size limit. shipping.enabled = false turns local history off.",
        check=check_not_negative,
    )
    local_history_days: float = field(
        30.0, "With no ingest_url, local history older than this many days is deleted; 0 keeps it until local_history_max_bytes.", check=check_not_negative
    )
    ca_file: str = field("", "PEM file of CA certificates that sign the ingest's TLS certificate; empty uses the system store.")
    client_cert: str = field("", "PEM client certificate for mutual TLS with the ingest; empty sends none.")
    client_key: str = field("", "PEM private key of client_cert (must not be readable by group or others).")
    connect_timeout: float = field(5.0, "Seconds to establish a connection to the ingest.", check=check_positive)
    request_timeout: float = field(30.0, "Seconds one request to the ingest may take in total.", check=check_positive)
    request_timeout_max: float = field(
        300.0,
        "After a request times out the next one may take twice as long, up to this many seconds, "
        "so a slow but working ingest still drains the spool; it shrinks back once requests are quick.",
        check=check_positive,
    )
    quarantine_after: int = field(
        5,
        "A batch that fails this many times in a row with the same answer, while a later batch is accepted, "
        "is moved into SPOOL_DIR/quarantine and counted, so one bad batch never blocks the queue.",
        check=check_positive,
    )
    backoff_first: float = field(0.5, "Largest wait in seconds after the first failed send (waits are random, full jitter).", check=check_positive)
    backoff_max: float = field(60.0, "Largest wait in seconds between two attempts to send.", check=check_positive)

    def validate(self) -> None:
        """Cross-field checks (the config loader calls this)."""
        if self.backoff_max < self.backoff_first:
            raise ValueError("backoff_max must be at least backoff_first")
        if self.ingest_url and not self.ingest_public_key:
            raise ValueError("ingest_public_key is required when ingest_url is set")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key must be set together")
        if self.connect_timeout > self.request_timeout:
            raise ValueError("connect_timeout must not exceed request_timeout")

    def resolved_agent_key(self, state_dir: str) -> str:
        return self.agent_key or os.path.join(state_dir, "keys", "agent.key")

    def resolved_spool_dir(self, state_dir: str) -> str:
        return self.spool_dir or os.path.join(state_dir, "spool")
