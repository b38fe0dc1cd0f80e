"""The [shipping] section: every bad value names the file, the key and the reason."""

from __future__ import annotations

import pytest
from hostmond.agent.config import load_dataclass
from hostmond.agent.shipping.config import ShippingConfig

from hostmond.core.errors import ConfigError


@pytest.mark.parametrize(
    "data, key, reason",
    [
        ({"batch_max_age": -1}, "shipping.batch_max_age", "greater than 0"),
        ({"batch_jitter": 0.9}, "shipping.batch_jitter", "between 0 and 0.5"),
        ({"ingest_url": "ftp://x"}, "shipping.ingest_url", "http:// or https://"),
        ({"ingest_url": "https://x/?a=1", "ingest_public_key": "k"}, "shipping.ingest_url", "query"),
        ({"suite": "rsa"}, "shipping.suite", "x25519"),
        ({"spool_limit_bytes": "big"}, "shipping.spool_limit_bytes", ""),
        ({"ingest_url": "https://ingest:19436"}, "shipping", "ingest_public_key is required"),
        ({"backoff_first": 10.0, "backoff_max": 1.0}, "shipping", "backoff_max must be at least backoff_first"),
        ({"client_cert": "c.pem"}, "shipping", "client_cert and client_key"),
    ],
)
def test_bad_values_name_file_key_and_reason(data, key, reason) -> None:
    with pytest.raises(ConfigError) as ei:
        load_dataclass(data, ShippingConfig, "/etc/hostmon/agent.toml", "shipping")
    assert ei.value.file == "/etc/hostmon/agent.toml" and ei.value.key == key
    assert reason in ei.value.reason


def test_defaults_and_paths_under_the_state_dir() -> None:
    cfg = load_dataclass({"ingest_url": "https://ingest:19436", "ingest_public_key": "/etc/ingest.pub"}, ShippingConfig, "f", "shipping")
    assert cfg.resolved_agent_key("/var/lib/hostmon") == "/var/lib/hostmon/keys/agent.key"
    assert cfg.resolved_spool_dir("/var/lib/hostmon") == "/var/lib/hostmon/spool"
    assert cfg.backoff_first == 0.5 and cfg.backoff_max == 60.0 and cfg.batch_max_records == 10000
