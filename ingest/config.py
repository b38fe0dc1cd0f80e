"""The ingest's config file (TOML), validated from dataclasses.

Example::

    listen = "127.0.0.1:19436"
    private_keys = ["/etc/hostmon/ingest.key", "/etc/hostmon/ingest-2025.key"]

    [[agents]]
    name = "web-01"
    public_key = "/etc/hostmon/agents/web-01.pub"   # or the key text itself
    tenants = ["acme", "acme-staging"]

    [limits]
    max_body_bytes = 16777216

    [sqlite]
    path = "/var/lib/hostmon-ingest/ingest.db"

    [remote_write]
    url = "http://127.0.0.1:9090/api/v1/write"

    [web.tls_server_config]              # endpoint security: docs/web-security.md
    cert_file = "tls/tls.crt"
    key_file = "tls/tls.key"
    client_ca_file = "tls/agents-ca.crt"
    client_auth_type = "RequireAndVerifyClientCert"

The ``[web]`` section is the agent's (:class:`hostmond.web.config.WebConfig`):
TLS with certificate rotation, mutual TLS, basic/bearer authentication for
every path but ``open_paths`` and the batch path (a batch carries its own
signature), and a rate limit per client address.

Relative paths are resolved against the directory of the config file. Several
``private_keys`` may be listed at once (key rotation): a batch names the key id
it was sealed to and the ingest picks that key. Every private key file (and
``web.tls_server_config.key_file``) must be readable by its owner only
(``chmod 600``), or the ingest refuses to start.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

from hostmond.core import keys as keymod
from hostmond.core.config import field, load_dataclass
from hostmond.core.errors import ConfigError, KeyFileError
from hostmond.core.validate import (
    check_not_negative,
    check_positive,
    check_url,
    parse_listen,
    validate_tenant_id,
)
from hostmond.web.config import WebConfig

DEFAULT_LISTEN = "127.0.0.1:19436"


def _check_listen(v: str) -> None:
    parse_listen(v)


def _check_workers(v: int) -> None:
    if v < -1:
        raise ValueError("must be -1 (one per CPU), 0 (threads, no worker processes) or a count")


def _check_tenants(v: list[str]) -> None:
    if not v:
        raise ValueError("list at least one tenant id this agent may write")
    for t in v:
        validate_tenant_id(t)


def _check_sync(v: str) -> None:
    if v not in ("full", "normal"):
        raise ValueError("must be 'full' (survives power loss) or 'normal' (survives a process crash only)")


def _check_header_name(v: str) -> None:
    if v and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", v):
        raise ValueError("must be an HTTP header name like X-Scope-OrgID, or empty")


@dataclasses.dataclass
class AgentEntry:
    public_key: str = field("", "The agent's Ed25519 public key: the text of its agent.pub ('hostmon-ed25519 BASE64') or the path of that file.")
    tenants: list[str] = field([], "Tenant ids this agent may write; a batch naming any other tenant is refused (403).", check=_check_tenants)
    name: str = field("", "A name for logs (the agent id is derived from the public key).")

    def validate(self) -> None:
        if not self.public_key:
            raise ValueError("public_key is required (the agent's agent.pub text or file path)")


@dataclasses.dataclass
class LimitsConfig:
    max_body_bytes: int = field(16 * 1024 * 1024, "Largest request body accepted, in bytes; larger is refused with 413 before it is read.", check=check_positive)
    max_decompressed_bytes: int = field(64 * 1024 * 1024, "Largest decompressed batch, in bytes; a batch that inflates past it (a zstd bomb) is refused with 413.", check=check_positive)
    max_records: int = field(200_000, "Most samples plus events in one batch; more is refused with 413.", check=check_positive)
    max_batch_age_seconds: float = field(7 * 86400.0, "Oldest batch creation time accepted, in seconds before now; older is refused with 409 too_old (replay protection).", check=check_positive)
    max_clock_skew_seconds: float = field(300.0, "How far in the future a batch's creation time may be (agent clock ahead); further is refused with 425 (the agent retries as time passes).", check=check_not_negative)
    max_inflight: int = field(8, "Batches being decrypted or stored at once (a batch takes a slot only once its whole body has arrived); more are answered 503 with Retry-After, so memory stays bounded.", check=check_positive)
    max_uploads: int = field(32, "Batch bodies being received at once; more are answered 503 with Retry-After. Memory for bodies is at most max_uploads x max_body_bytes.", check=check_positive)
    body_timeout_seconds: float = field(30.0, "Seconds a client may take to send a whole batch body; a slower (or stalled) upload is answered 408 and counted as rejected{reason=\"body_timeout\"}.", check=check_positive)
    max_series_per_agent: int = field(50_000, "Most distinct sample series one agent may have active (seen within series_window_seconds); a batch that would add more is refused with 422 agent_series_limit. 0: no limit.", check=check_not_negative)
    max_series_per_tenant: int = field(500_000, "Most distinct sample series active in one tenant, all agents together; a batch that would add more is refused with 422 tenant_series_limit. 0: no limit.", check=check_not_negative)
    series_window_seconds: float = field(3600.0, "A series counts as active towards the series limits until it has not been seen for this long.", check=check_positive)


@dataclasses.dataclass
class SqliteConfig:
    path: str = field("ingest.db", "SQLite database file (WAL mode); relative to the config file's directory.")
    synchronous: str = field("full", "'full' fsyncs every commit (survives power loss); 'normal' survives a process crash but may lose the last commits on power loss.", check=_check_sync)
    retention_seconds: float = field(30 * 86400.0, "Delete data of batches received longer ago than this; 0 keeps everything.", check=check_not_negative)
    max_bytes: int = field(0, "Delete the oldest batches' data while the database uses more than this many bytes; 0 means no size limit.", check=check_not_negative)
    retention_interval_seconds: float = field(60.0, "Seconds between two retention passes.", check=check_positive)
    wal_max_bytes: int = field(16 * 1024 * 1024, "The write-ahead log is truncated to this size after each checkpoint (SQLite journal_size_limit), so it cannot keep disk space a full disk needs back.", check=check_positive)


@dataclasses.dataclass
class RemoteWriteConfig:
    url: str = field("", "Prometheus remote-write 1.0 endpoint (e.g. http://prometheus:9090/api/v1/write); empty disables it.", check=check_url)
    timeout_seconds: float = field(30.0, "Seconds one remote-write request may take; a timeout answers the agent 503 so it retries.", check=check_positive)
    ca_file: str = field("", "PEM file of CA certificates for an https url; empty uses the system's. Verification is always on.")
    headers: dict[str, str] = field({}, "Extra HTTP headers sent with every request (e.g. Authorization).")
    tenant_header: str = field("", "For multi-tenant receivers (Mimir, Cortex, VictoriaMetrics cluster): send one request per tenant of a batch, with this header (usually X-Scope-OrgID) set to its tenant id. Empty: one request per batch, no tenant header.", check=_check_header_name)


@dataclasses.dataclass
class AuditConfig:
    enabled: bool = field(True, "Keep the audit trail: an append-only, hash-chained log of accepted and refused batches, enrolment and key changes, retention (docs/compliance.md).")
    directory: str = field("", "Directory of the audit log; empty puts it in 'audit' beside the SQLite database; relative to the config file's directory.")
    signing_key: str = field("", "Ed25519 private key (chmod 600) that signs the checkpoints; empty uses DIRECTORY/audit.key, created with audit.pub on first start.")
    checkpoint_interval_seconds: float = field(300.0, "Seconds between two signed checkpoints (also written at segment rotation and shutdown).", check=check_positive)
    segment_max_bytes: int = field(64 * 1024 * 1024, "Start a new audit segment file when the current one passes this size.", check=check_positive)
    retention_seconds: float = field(0.0, "Delete whole audit segments whose last record is older than this, recording each deletion; 0 keeps the audit log forever (independent of sqlite.retention_seconds).", check=check_not_negative)
    fsync: bool = field(True, "fsync every audit record before the batch is answered (false: a power loss may lose the last records).")
    rejected_records_per_minute: int = field(60, "Refused batches recorded per reason and minute; more are counted in one summary record, so a flood of garbage cannot flood the audit log.", check=check_positive)


@dataclasses.dataclass
class IngestConfig:
    listen: str = field(DEFAULT_LISTEN, "Address the ingest listens on; loopback by default, 0.0.0.0:19436 to accept agents from other hosts.", check=_check_listen)
    private_keys: list[str] = field([], "Ingest private key files (one per key id, several during a rotation); each must be chmod 600.")
    decode_workers: int = field(-1, "Worker processes that verify and decrypt batches: -1 one per CPU, 0 none (threads of the ingest process).", check=_check_workers)
    agents: list[AgentEntry] = field([], "Enrolled agents: each public key with the tenants it may write.")
    limits: LimitsConfig = dataclasses.field(default_factory=LimitsConfig)
    sqlite: SqliteConfig = dataclasses.field(default_factory=SqliteConfig)
    remote_write: RemoteWriteConfig = dataclasses.field(default_factory=RemoteWriteConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
    web: WebConfig = dataclasses.field(default_factory=WebConfig)

    source: str = dataclasses.field(default="<defaults>", metadata={"internal": True})


@dataclasses.dataclass(frozen=True)
class Enrollment:
    agent_id: str
    name: str
    public: keymod.PublicKey
    tenants: frozenset[str]


@dataclasses.dataclass
class LoadedKeys:
    """Everything secret the ingest runs with, loaded and checked."""

    private: dict[str, keymod.PrivateKey]  # key id -> key
    agents: dict[str, Enrollment]  # agent id -> enrollment


def _resolve(base: str, p: str) -> str:
    p = os.path.expanduser(p)
    return p if os.path.isabs(p) else os.path.join(base, p)


def load(path: str) -> IngestConfig:
    """Read and validate the config file; raises ConfigError naming file, key and reason."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "config file not found") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "", f"not valid TOML: {e}") from None
    return from_dict(data, path)


# Keys of earlier versions, replaced by the [web] section shared with the agent.
_MOVED_KEYS = {
    "tls_cert": "web.tls_server_config.cert_file",
    "tls_key": "web.tls_server_config.key_file",
    "tls_client_ca": 'web.tls_server_config.client_ca_file (with client_auth_type = "RequireAndVerifyClientCert")',
}


def _resolve_web_paths(data: dict[str, Any], base: str) -> None:
    """Resolve the file names in the raw ``[web]`` table before it is checked (checks open the files)."""
    web = data.get("web")
    if not isinstance(web, dict):
        return
    tls = web.get("tls_server_config")
    if isinstance(tls, dict):
        for key in ("cert_file", "key_file", "client_ca_file"):
            if isinstance(tls.get(key), str) and tls[key]:
                tls[key] = _resolve(base, tls[key])
    tokens = web.get("bearer_token_files")
    if isinstance(tokens, list):
        web["bearer_token_files"] = [_resolve(base, t) if isinstance(t, str) and t else t for t in tokens]


def from_dict(data: dict[str, Any], file: str) -> IngestConfig:
    for old, new in _MOVED_KEYS.items():
        if old in data:
            raise ConfigError(file, old, f"this key moved to {new} (see docs/web-security.md)")
    base = os.path.dirname(os.path.abspath(file)) if not file.startswith("<") else os.getcwd()
    _resolve_web_paths(data, base)
    cfg: IngestConfig = load_dataclass(data, IngestConfig, file, "")
    cfg.source = file
    cfg.private_keys = [_resolve(base, p) for p in cfg.private_keys]
    cfg.sqlite.path = _resolve(base, cfg.sqlite.path)
    if cfg.remote_write.ca_file:
        cfg.remote_write.ca_file = _resolve(base, cfg.remote_write.ca_file)
    if cfg.audit.directory:
        cfg.audit.directory = _resolve(base, cfg.audit.directory)
    if cfg.audit.signing_key:
        cfg.audit.signing_key = _resolve(base, cfg.audit.signing_key)
    for a in cfg.agents:
        if not a.public_key.lstrip().startswith("hostmon-"):
            a.public_key = _resolve(base, a.public_key)
    return cfg


def load_keys(cfg: IngestConfig) -> LoadedKeys:
    """Load the private keys and enrolled agents; raises ConfigError (file, key, reason).

    A private key that group or others can read is refused (KeyFileError's
    message says which file and the chmod to run).
    """
    file = cfg.source
    if not cfg.private_keys:
        raise ConfigError(file, "private_keys", "list at least one ingest private key file (create one with `hostmon keys ingest`)")
    private: dict[str, keymod.PrivateKey] = {}
    for i, p in enumerate(cfg.private_keys):
        try:
            k = keymod.load_private_key(p, keymod.INGEST_ALGORITHMS)
        except KeyFileError as e:
            raise ConfigError(file, f"private_keys[{i}]", str(e)) from None
        private[k.key_id] = k
    tls_key = cfg.web.tls_server_config.key_file
    if tls_key:
        # Checked when the config was read too; checked again here because the file may
        # have changed since (check-config, then run).
        try:
            keymod.check_private_permissions(tls_key)
        except (KeyFileError, OSError) as e:
            raise ConfigError(file, "web.tls_server_config.key_file", str(e)) from None
    agents: dict[str, Enrollment] = {}
    for i, a in enumerate(cfg.agents):
        key = f"agents[{i}].public_key"
        try:
            if a.public_key.lstrip().startswith("hostmon-"):
                pub = keymod.parse_public_key(a.public_key, (keymod.ED25519,))
            else:
                pub = keymod.load_public_key(a.public_key, (keymod.ED25519,))
        except (KeyFileError, ValueError) as e:
            raise ConfigError(file, key, str(e)) from None
        aid = keymod.agent_id_of(pub)
        if aid in agents:
            raise ConfigError(file, key, f"agent {aid} is enrolled twice (also agents[{list(agents).index(aid)}])")
        agents[aid] = Enrollment(aid, a.name or aid, pub, frozenset(a.tenants))
    return LoadedKeys(private, agents)


def check_web(cfg: IngestConfig) -> str:
    """Load the TLS files of ``[web]`` once (certificate and key match, CA parses); a short summary.

    Raises ConfigError naming ``web.tls_server_config`` when they do not load,
    so ``check-config`` and ``run`` say so before anything listens.
    """
    import ssl

    from hostmond.web.tls import build_context

    tls = cfg.web.tls_server_config
    parts = []
    if tls.enabled:
        try:
            build_context(tls)
        except (OSError, ValueError, ssl.SSLError) as e:
            raise ConfigError(cfg.source, "web.tls_server_config", f"the TLS files do not load: {e}") from None
        parts.append("TLS" if tls.client_auth_type == "NoClientCert" else f"TLS, client certificates {tls.client_auth_type}")
    else:
        parts.append("plain HTTP")
    if cfg.web.auth_enabled:
        parts.append("authentication on")
    rl = cfg.web.rate_limit
    parts.append(f"rate limit {rl.requests_per_second:g}/s per address" if rl.enabled else "no rate limit")
    return ", ".join(parts)
