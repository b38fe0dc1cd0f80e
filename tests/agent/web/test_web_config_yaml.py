"""--web.config.file: exporter-toolkit's web-config.yml read as is means what the TOML [web] section means."""

from __future__ import annotations

import base64
import shutil
import ssl
from pathlib import Path

import bcrypt
import pytest

from hostmond.agent import config as config_mod
from hostmond.core.errors import ConfigError
from hostmond.web.config import WebConfig, load_web_yaml, parse_go_duration

from .conftest import PKI, get, start_server  # noqa: F401 - fixture

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


def _copy_pki(pki: PKI, d: Path) -> None:
    for src, name in ((pki.server.cert, "tls.crt"), (pki.server.key, "tls.key"), (pki.ca.cert, "ca.crt")):
        shutil.copy(src, d / name)
    (d / "tls.key").chmod(0o600)


def test_one_yaml_and_one_toml_meaning_the_same_give_the_same_web_config(pki: PKI, tmp_path: Path) -> None:
    _copy_pki(pki, tmp_path)
    token = tmp_path / "scrape.token"
    token.write_text("tok-123\n")
    token.chmod(0o600)
    yml = tmp_path / "web-config.yml"
    # Written as exporter-toolkit documents it: relative file names are taken from the file's directory,
    # http2 is a no-op here, the rate limit is an interval between requests.
    yml.write_text(
        f"""
tls_server_config:
  cert_file: tls.crt
  key_file: tls.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: ["agent-01.example"]
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: true
basic_auth_users:
  prometheus: {HASH}
rate_limit:
  interval: 250ms
  burst: 7
bearer_token_files: [scrape.token]
"""
    )
    toml = tmp_path / "hostmon.toml"
    toml.write_text(
        f"""
[web]
basic_auth_users = {{ prometheus = "{HASH}" }}
bearer_token_files = ["{token}"]

[web.tls_server_config]
cert_file = "{tmp_path / 'tls.crt'}"
key_file = "{tmp_path / 'tls.key'}"
client_auth_type = "RequireAndVerifyClientCert"
client_ca_file = "{tmp_path / 'ca.crt'}"
client_allowed_sans = ["agent-01.example"]
min_version = "TLS13"
max_version = "TLS13"
cipher_suites = ["TLS_AES_128_GCM_SHA256"]
prefer_server_cipher_suites = false

[web.rate_limit]
requests_per_second = 4.0
burst = 7
"""
    )
    from_toml = config_mod.load(str(toml), {}).web
    from_yaml = load_web_yaml(str(yml))
    assert isinstance(from_yaml, WebConfig)
    assert from_yaml == from_toml
    assert from_yaml != WebConfig(), "not vacuous: the files say something"
    # and through the flag: the YAML replaces the file's [web] whole
    other = tmp_path / "other.toml"
    other.write_text('[web]\nopen_paths = ["/healthz"]\n')
    cfg = config_mod.load(str(other), {}, config_mod.Overrides(web_config_file=str(yml)))
    assert cfg.web == from_toml


def test_minimal_yaml_keeps_hostmon_defaults_for_what_it_does_not_say(tmp_path: Path) -> None:
    yml = tmp_path / "web.yml"
    yml.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")
    web = load_web_yaml(str(yml))
    assert web.basic_auth_users == {"alice": HASH}
    assert web.open_paths == ["/healthz", "/readyz"] and web.rate_limit.enabled and not web.tls_server_config.enabled
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert load_web_yaml(str(empty)) == WebConfig()


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("tls_server_config:\n  curve_preferences: [CurveP256]\n", "tls_server_config.curve_preferences", "not supported"),
        ("http_server_config:\n  headers:\n    X-Frame-Options: deny\n", "http_server_config.headers", "not supported"),
        ("tls_server_config:\n  cert: '-----BEGIN'\n", "tls_server_config.cert", "inline PEM"),
        ("rate_limit:\n  interval: soon\n", "rate_limit.interval", "not a duration"),
        ("basic_auth_users:\n  bob: plaintext\n", "basic_auth_users", "not a bcrypt hash"),
        ("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", "tls_server_config.cert_file", "no such file"),
        ("tls_config: {}\n", "tls_config", "unknown key"),
        ("- a list\n", "", "YAML mapping"),
        ("basic_auth_users: [\n", "", "not valid YAML"),
    ],
)
def test_a_bad_yaml_web_config_names_the_yaml_file_the_key_and_the_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    yml = tmp_path / "web-config.yml"
    yml.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_web_yaml(str(yml))
    e = ei.value
    assert e.file == str(yml) and e.key == key and reason in e.reason, str(e)


def test_go_durations() -> None:
    assert parse_go_duration("1s") == 1.0
    assert parse_go_duration("250ms") == 0.25
    assert parse_go_duration("1m30s") == 90.0
    for bad in ("", "1", "s", "1x", "1s2"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


async def test_the_yaml_config_serves_tls_and_basic_auth(pki: PKI, tmp_path: Path, start_server) -> None:  # noqa: F811
    _copy_pki(pki, tmp_path)
    yml = tmp_path / "web-config.yml"
    yml.write_text(f"tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: '{HASH}'\n")
    srv = await start_server(load_web_yaml(str(yml)))
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    status, _, _ = await get(srv.url("/metrics"), ctx=ctx)
    assert status == 401
    cred = base64.b64encode(b"prometheus:s3cret").decode()
    status, _, body = await get(srv.url("/metrics"), ctx=ctx, headers={"Authorization": f"Basic {cred}"})
    assert status == 200
