"""The ``[web]`` section: exporter-toolkit's ``web-config.yml`` in meaning, TOML in form.

The same dataclass configures the agent's /metrics server (``[web]`` in the agent
config) and the ingest (``[web]`` in the ingest config). Key names follow
Prometheus exporter-toolkit so a node_exporter user recognises them::

    [web]
    basic_auth_users = { prometheus = "$2y$10$..." }   # bcrypt hashes
    bearer_token_files = ["/etc/hostmon/scrape.token"]
    open_paths = ["/healthz", "/readyz"]

    [web.tls_server_config]
    cert_file = "/etc/hostmon/tls/tls.crt"
    key_file = "/etc/hostmon/tls/tls.key"
    client_ca_file = "/etc/hostmon/tls/ca.crt"
    client_auth_type = "RequireAndVerifyClientCert"

    [web.rate_limit]
    requests_per_second = 10.0
    burst = 20

Differences from exporter-toolkit, on purpose: the rate limit is per client
address (exporter-toolkit's is one bucket for everyone) and is given as requests
per second; inline ``cert``/``key`` PEM text is not accepted (keys belong in
files with owner-only permissions); ``RequestClientCert`` and
``RequireAnyClientCert`` verify a presented certificate against
``client_ca_file`` (Python's ``ssl`` cannot accept an unverified client
certificate), so they behave like ``VerifyClientCertIfGiven`` and
``RequireAndVerifyClientCert``; ``curve_preferences`` and ``http_server_config``
are not supported. ``bearer_token_files`` is hostmon's own addition.

Checks made when the config is loaded (each a :class:`hostmond.core.errors.ConfigError`
naming the file, the key and the reason): every named file exists and is
readable; key and token files are not readable by group or others; bcrypt
hashes parse; cipher suite and TLS version names are known; a client CA is given
whenever client certificates are requested.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import stat

from hostmond.core.config import field, load_dataclass
from hostmond.core.errors import ConfigError
from hostmond.core.validate import check_not_negative, check_positive

CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's (and so exporter-toolkit's) cipher suite names -> OpenSSL's names, for TLS 1.2 and older.
GO_CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites are not configurable in Go either; naming them is accepted and has no effect.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

# $2a$, $2b$, $2y$ (htpasswd -B) and $2x$; cost 04..31; 22 characters of salt + 31 of hash.
_BCRYPT = re.compile(r"^\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


def openssl_cipher_name(name: str) -> str | None:
    """The OpenSSL name for a Go/IANA or OpenSSL cipher suite name; None for a TLS 1.3 suite."""
    if name in TLS13_SUITES:
        return None
    return GO_CIPHER_SUITES.get(name, name)


# ---------------------------------------------------------------------------
# field checks (ValueError -> ConfigError naming file and key)


def check_readable_file(path: str) -> None:
    """The file exists, is a regular file and can be opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except PermissionError:
        raise ValueError(f"{path}: permission denied") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ValueError(f"{path}: permission denied (cannot read it as uid {os.geteuid()})") from None


def check_secret_file(path: str) -> None:
    """A readable regular file that group and others cannot read (like ssh's rule for keys)."""
    check_readable_file(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise ValueError(
            f"{path}: permissions {mode:04o} let group or others read this secret; run chmod 600 {path}"
            " (in Kubernetes set defaultMode: 0400 on the Secret volume)"
        )


def _check_optional_file(v: str) -> None:
    if v:
        check_readable_file(v)


def _check_optional_secret(v: str) -> None:
    if v:
        check_secret_file(v)


def _check_client_auth(v: str) -> None:
    if v not in CLIENT_AUTH_TYPES:
        raise ValueError(f"{v!r} is not one of {', '.join(CLIENT_AUTH_TYPES)}")


def _check_version(v: str) -> None:
    if v not in TLS_VERSIONS:
        raise ValueError(f"{v!r} is not one of {', '.join(TLS_VERSIONS)}")


def _check_ciphers(v: list[str]) -> None:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name in v:
        openssl = openssl_cipher_name(name)
        if openssl is None:
            continue
        try:
            probe.set_ciphers(openssl)
        except ssl.SSLError:
            raise ValueError(
                f"unknown or unavailable cipher suite {name!r}; use Go/IANA names such as"
                " TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or OpenSSL names such as ECDHE-RSA-AES128-GCM-SHA256"
            ) from None


def _check_users(v: dict[str, str]) -> None:
    for user, hashed in v.items():
        if not user or ":" in user:
            raise ValueError(f"user name {user!r} must be non-empty and contain no ':'")
        if not _BCRYPT.match(hashed):
            raise ValueError(
                f"user {user!r}: the password is not a bcrypt hash ($2y$10$ followed by 53 characters);"
                " make one with: htpasswd -nBC 10 '' | tr -d ':\\n'"
            )


def _check_token_files(v: list[str]) -> None:
    for path in v:
        check_secret_file(path)
        token = read_token_file(path)
        if not token:
            raise ValueError(f"{path}: the token file is empty")


def _check_paths(v: list[str]) -> None:
    for p in v:
        if not p.startswith("/"):
            raise ValueError(f"{p!r} must be an absolute URL path starting with '/'")


def read_token_file(path: str) -> bytes:
    """A bearer token file holds one token; surrounding whitespace (a trailing newline) is ignored."""
    with open(path, "rb") as f:
        return f.read(65536).strip()


# ---------------------------------------------------------------------------
# the sections


@dataclasses.dataclass
class TLSServerConfig:
    """TLS for this server (exporter-toolkit's tls_server_config); without cert_file the server speaks plain HTTP."""

    cert_file: str | None = field(
        None, "PEM certificate (chain) the server presents; setting it with key_file turns TLS on.", check=_check_optional_file
    )
    key_file: str | None = field(
        None, "PEM private key of cert_file; must not be readable by group or others (chmod 600).", check=_check_optional_secret
    )
    client_ca_file: str | None = field(
        None, "PEM bundle of the CAs that sign client certificates (mutual TLS).", check=_check_optional_file
    )
    client_auth_type: str = field(
        "NoClientCert",
        "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert (use the last for mutual TLS).",
        check=_check_client_auth,
    )
    client_allowed_sans: list[str] = field(
        [], "If set, a client certificate must carry one of these subject alternative names (DNS, IP, e-mail or URI)."
    )
    min_version: str = field("TLS12", "Oldest TLS version accepted: TLS10, TLS11, TLS12 or TLS13.", check=_check_version)
    max_version: str = field("TLS13", "Newest TLS version accepted: TLS10, TLS11, TLS12 or TLS13.", check=_check_version)
    cipher_suites: list[str] = field(
        [], "Cipher suites for TLS 1.2 and older (Go/IANA or OpenSSL names); empty keeps OpenSSL's secure defaults.", check=_check_ciphers
    )
    prefer_server_cipher_suites: bool = field(True, "Pick the cipher by the server's order rather than the client's.")

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        if not self.cert_file:
            if self.client_ca_file or self.client_auth_type != "NoClientCert" or self.client_allowed_sans:
                raise ValueError("client certificates need TLS: set cert_file and key_file")
            return
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is newer than max_version {self.max_version}")
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file to verify client certificates")
        if self.client_auth_type == "NoClientCert" and self.client_ca_file:
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert: set client_auth_type ="
                " \"RequireAndVerifyClientCert\" for mutual TLS"
            )
        if self.client_allowed_sans and self.client_auth_type not in ("RequireAnyClientCert", "RequireAndVerifyClientCert"):
            raise ValueError("client_allowed_sans needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert)")


@dataclasses.dataclass
class RateLimitConfig:
    """A token bucket per client address (IPv6 addresses grouped by /64), checked before authentication."""

    requests_per_second: float = field(
        10.0, "Requests per second one client address may make on average; 0 turns the rate limit off.", check=check_not_negative
    )
    burst: int = field(20, "Requests one client address may make at once before it is limited.", check=check_positive)
    max_clients: int = field(
        10000, "Client addresses tracked at once; beyond it the least recently seen is forgotten (counted).", check=check_positive
    )
    auth_failure_cost: int = field(
        10,
        "Extra tokens a failed authentication takes from the client's bucket, so guessing passwords is slower than scraping.",
        check=check_not_negative,
    )

    @property
    def enabled(self) -> bool:
        return self.requests_per_second > 0


@dataclasses.dataclass
class WebConfig:
    """Endpoint security: TLS, client certificates, basic/bearer authentication and a per-client rate limit."""

    basic_auth_users: dict[str, str] = field(
        {}, "User name -> bcrypt hash of the password; when set (or bearer_token_files is), every path but open_paths needs credentials.", check=_check_users
    )
    bearer_token_files: list[str] = field(
        [], "Files holding one accepted bearer token each (chmod 600); re-read when they change.", check=_check_token_files
    )
    open_paths: list[str] = field(
        ["/healthz", "/readyz"], "Paths served without credentials even when authentication is on (probes).", check=_check_paths
    )
    reload_interval: float = field(
        5.0, "Seconds between checks of the certificate, key, CA and token files for changes.", check=check_positive
    )
    max_connections: int = field(
        1024,
        "Most open client connections (TLS handshakes included). At the limit the oldest idle connection is closed "
        "for a new one; when none is idle, new connections wait in the listen backlog. Lowered at start to fit "
        "the process's file-descriptor limit (RLIMIT_NOFILE, LimitNOFILE= in systemd) with a quarter kept for the rest.",
        check=check_positive,
    )
    tls_server_config: TLSServerConfig = dataclasses.field(default_factory=TLSServerConfig)
    rate_limit: RateLimitConfig = dataclasses.field(default_factory=RateLimitConfig)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_users or self.bearer_token_files)


# ---------------------------------------------------------------------------
# exporter-toolkit's web-config.yml, read as is (hostmon run --web.config.file)

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (``1s``, ``250ms``, ``1m30s``) in seconds; raises ValueError."""
    s = str(text).strip()
    pos, total = 0, 0.0
    for m in _GO_DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"{text!r} is not a duration such as 1s, 250ms or 1m30s")
    return total


_FILE_KEYS = ("cert_file", "key_file", "client_ca_file")


def web_yaml_to_table(doc: object, base_dir: str) -> dict[str, object]:
    """Map an exporter-toolkit ``web-config.yml`` document onto the ``[web]`` table.

    Same keys, with these translations: relative file names are taken from the
    YAML file's directory (as exporter-toolkit does); ``rate_limit.interval`` (a Go
    duration between two requests) becomes ``requests_per_second``;
    ``http_server_config.http2`` is accepted and has no effect (the server speaks
    HTTP/1.1). Refused with a reason: inline ``cert``/``key``/``client_ca``
    PEM text, ``curve_preferences`` and ``http_server_config.headers``.
    Raises ValueError(key, reason) pairs as ``(key, reason)`` tuples in args.
    """
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError("", "the file must hold a YAML mapping (tls_server_config, basic_auth_users, ...)")
    table: dict[str, object] = dict(doc)
    tls = table.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            raise ValueError("tls_server_config", "expected a mapping")
        tls = dict(tls)
        for inline in ("cert", "key", "client_ca"):
            if tls.get(inline):
                raise ValueError(
                    f"tls_server_config.{inline}",
                    f"inline PEM text is not accepted; put it in a file (chmod 600 for a key) and name it with {inline}_file",
                )
            tls.pop(inline, None)
        if tls.get("curve_preferences"):
            raise ValueError("tls_server_config.curve_preferences", "not supported (OpenSSL's default curves are used); remove it")
        tls.pop("curve_preferences", None)
        for k in _FILE_KEYS:
            v = tls.get(k)
            if isinstance(v, str) and v and not os.path.isabs(v):
                tls[k] = os.path.join(base_dir, v)
        table["tls_server_config"] = tls
    http = table.pop("http_server_config", None)
    if http is not None:
        if not isinstance(http, dict):
            raise ValueError("http_server_config", "expected a mapping")
        unknown = set(http) - {"http2", "headers"}
        if unknown:
            raise ValueError(f"http_server_config.{sorted(unknown)[0]}", "unknown key (valid keys here: headers, http2)")
        if http.get("headers"):
            raise ValueError("http_server_config.headers", "custom response headers are not supported; remove them")
    rl = table.get("rate_limit")
    if isinstance(rl, dict) and "interval" in rl:
        rl = dict(rl)
        try:
            interval = parse_go_duration(rl.pop("interval"))
        except ValueError as e:
            raise ValueError("rate_limit.interval", str(e)) from None
        rl["requests_per_second"] = 0.0 if interval == 0 else 1.0 / interval
        table["rate_limit"] = rl
    files = table.get("bearer_token_files")
    if isinstance(files, list):
        table["bearer_token_files"] = [os.path.join(base_dir, f) if isinstance(f, str) and not os.path.isabs(f) else f for f in files]
    return table


def load_web_yaml(path: str) -> WebConfig:
    """Read exporter-toolkit's ``web-config.yml`` (``--web.config.file``) into a :class:`WebConfig`.

    Errors are :class:`hostmond.core.errors.ConfigError` naming the YAML file, the key and the reason.
    """
    import yaml  # a dependency; imported here so that an agent without --web.config.file never loads it
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, "", "is a directory, not a YAML file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(path, "", f"not valid YAML: {e}") from None
    try:
        table = web_yaml_to_table(doc, os.path.dirname(os.path.abspath(path)))
    except ValueError as e:
        key, reason = e.args if len(e.args) == 2 else ("", str(e))
        raise ConfigError(path, key, reason) from None
    return load_dataclass(table, WebConfig, path)
