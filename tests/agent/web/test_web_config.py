"""The [web] section through the real agent config loader: good configs load, bad ones name file, key, reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

import bcrypt
import pytest
from hostmond.agent import config as config_mod

from hostmond.core.errors import ConfigError
from hostmond.web.config import WebConfig
from hostmond.web.aiohttp_security import WEB_SECURITY_KEY, apply_web_security
from hostmond.web.security import REFUSAL_REASONS, WebSecurity, make_web_security

from .conftest import PKI

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()


def load(tmp_path: Path, text: str) -> config_mod.Config:
    p = tmp_path / "hostmon.toml"
    p.write_text(text)
    return config_mod.load(str(p), {})


def test_defaults_are_open_plain_http_with_a_rate_limit() -> None:
    web = config_mod.load(None, {}).web
    assert isinstance(web, WebConfig)
    assert not web.tls_server_config.enabled and not web.auth_enabled
    assert web.open_paths == ["/healthz", "/readyz"]
    assert web.tls_server_config.min_version == "TLS12"
    assert web.rate_limit.enabled and web.rate_limit.requests_per_second == 10.0 and web.rate_limit.burst == 20


def test_a_full_mutual_tls_config_loads(tmp_path: Path, pki: PKI) -> None:
    token = tmp_path / "t.token"
    token.write_text("abc\n")
    token.chmod(0o600)
    cfg = load(
        tmp_path,
        f"""
[web]
basic_auth_users = {{ prometheus = "{HASH}" }}
bearer_token_files = ["{token}"]
open_paths = ["/healthz"]

[web.tls_server_config]
cert_file = "{pki.server.cert}"
key_file = "{pki.server.key}"
client_ca_file = "{pki.ca.cert}"
client_auth_type = "RequireAndVerifyClientCert"
client_allowed_sans = ["agent-01.example"]
min_version = "TLS13"
cipher_suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_AES_128_GCM_SHA256"]

[web.rate_limit]
requests_per_second = 2.5
burst = 5
""",
    )
    w = cfg.web
    assert w.tls_server_config.client_auth_type == "RequireAndVerifyClientCert"
    assert w.rate_limit.requests_per_second == 2.5 and w.rate_limit.burst == 5
    assert w.bearer_token_files == [str(token)] and "prometheus" in w.basic_auth_users
    # and the security layer builds from it
    sec = WebSecurity(w, "agent")
    assert sec.tls is not None and sec.auth.enabled


def test_environment_overrides_reach_the_web_section() -> None:
    cfg = config_mod.load(None, {"HOSTMON_WEB__OPEN_PATHS": "/healthz,/readyz,/version", "HOSTMON_WEB__RATE_LIMIT__BURST": "7"})
    assert cfg.web.open_paths == ["/healthz", "/readyz", "/version"]
    assert cfg.web.rate_limit.burst == 7


@pytest.mark.parametrize(
    "body, key, reason",
    [
        ('[web]\nbasic_auth_users = { bob = "plaintext" }\n', "web.basic_auth_users", "not a bcrypt hash"),
        ('[web]\nbasic_auth_users = { "a:b" = "HASH" }\n', "web.basic_auth_users", "contain no ':'"),
        ('[web]\nbearer_token_files = ["/nonexistent/token"]\n', "web.bearer_token_files", "no such file"),
        ('[web]\nopen_paths = ["healthz"]\n', "web.open_paths", "must be an absolute URL path"),
        ("[web]\nreload_interval = 0\n", "web.reload_interval", "greater than 0"),
        ("[web.rate_limit]\nrequests_per_second = -1\n", "web.rate_limit.requests_per_second", "0 or more"),
        ("[web.rate_limit]\nburst = 0\n", "web.rate_limit.burst", "greater than 0"),
        ('[web.tls_server_config]\ncert_file = "/nonexistent.crt"\n', "web.tls_server_config.cert_file", "no such file"),
        ('[web.tls_server_config]\nclient_auth_type = "Yes"\n', "web.tls_server_config.client_auth_type", "RequireAndVerifyClientCert"),
        ('[web.tls_server_config]\nmin_version = "SSL3"\n', "web.tls_server_config.min_version", "TLS12"),
        ('[web.tls_server_config]\ncipher_suites = ["TLS_FANCY"]\n', "web.tls_server_config.cipher_suites", "TLS_FANCY"),
        ("[web]\ntls = 1\n", "web.tls", "unknown key"),
        ("[web.tls_server_config]\ncert = 'PEM'\n", "web.tls_server_config.cert", "unknown key"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, body: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, body.replace("HASH", HASH))
    err = ei.value
    assert err.file == str(tmp_path / "hostmon.toml")
    assert err.key == key
    assert reason in err.reason


def test_key_file_readable_by_others_is_refused(tmp_path: Path, pki: PKI) -> None:
    key = tmp_path / "open.key"
    key.write_bytes(pki.server.key.read_bytes())
    key.chmod(0o644)
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, f'[web.tls_server_config]\ncert_file = "{pki.server.cert}"\nkey_file = "{key}"\n')
    assert ei.value.key == "web.tls_server_config.key_file"
    assert "0644" in ei.value.reason and "chmod 600" in ei.value.reason


def test_token_file_readable_by_group_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "t.token"
    token.write_text("abc")
    token.chmod(0o640)
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, f'[web]\nbearer_token_files = ["{token}"]\n')
    assert ei.value.key == "web.bearer_token_files" and "group or others" in ei.value.reason


@pytest.mark.parametrize(
    "tls, reason",
    [
        ('cert_file = "CERT"\n', "cert_file and key_file must be set together"),
        ('cert_file = "CERT"\nkey_file = "KEY"\nclient_auth_type = "RequireAndVerifyClientCert"\n', "needs client_ca_file"),
        ('cert_file = "CERT"\nkey_file = "KEY"\nclient_ca_file = "CA"\n', "client_auth_type is NoClientCert"),
        ('client_auth_type = "RequireAndVerifyClientCert"\nclient_ca_file = "CA"\n', "client certificates need TLS"),
        ('cert_file = "CERT"\nkey_file = "KEY"\nmin_version = "TLS13"\nmax_version = "TLS12"\n', "newer than max_version"),
        (
            'cert_file = "CERT"\nkey_file = "KEY"\nclient_ca_file = "CA"\nclient_auth_type = "VerifyClientCertIfGiven"\n'
            'client_allowed_sans = ["x"]\n',
            "client_allowed_sans needs",
        ),
    ],
)
def test_inconsistent_tls_settings_are_refused(tmp_path: Path, pki: PKI, tls: str, reason: str) -> None:
    tls = tls.replace("CERT", str(pki.server.cert)).replace("KEY", str(pki.server.key)).replace("CA", str(pki.ca.cert))
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, "[web.tls_server_config]\n" + tls)
    assert ei.value.key == "web.tls_server_config"
    assert reason in ei.value.reason


def test_sample_config_documents_the_web_section_and_loads_back(tmp_path: Path) -> None:
    text = config_mod.sample_config({})
    for needle in ("[web]", "[web.tls_server_config]", "[web.rate_limit]", "open_paths", "client_auth_type", "bearer_token_files"):
        assert needle in text
    web_part = text[text.index("[web]") :]
    data = tomllib.loads(web_part)
    assert data["web"]["rate_limit"]["burst"] == 20
    assert config_mod.load_dataclass(data["web"], WebConfig, "sample", "web") == WebConfig()


def test_unloadable_tls_files_at_start_are_a_config_error(tmp_path: Path, pki: PKI) -> None:
    from aiohttp import web

    cfg = WebConfig()
    cfg.tls_server_config.cert_file = str(pki.server.cert)
    cfg.tls_server_config.key_file = str(pki.client.key)  # does not match the certificate
    with pytest.raises(ConfigError) as ei:
        apply_web_security(web.Application(), cfg, server="ingest")
    assert ei.value.key == "web.tls_server_config" and "cannot load the TLS files" in ei.value.reason
    with pytest.raises(ConfigError) as ei:  # the agent's server (no aiohttp) refuses them the same way
        make_web_security(cfg, server="agent")
    assert ei.value.key == "web.tls_server_config" and "cannot load the TLS files" in ei.value.reason


def test_refusal_reasons_are_a_fixed_set_and_all_exported_at_zero() -> None:
    sec = WebSecurity(WebConfig(), "ingest")
    refused = {s.labels["reason"]: s.value for s in sec.self_metrics() if s.name == "hostmon_web_requests_refused_total"}
    assert set(refused) == set(REFUSAL_REASONS) and not any(refused.values())
    sec.count("tls_something_new")  # an unexpected reason never becomes a new label value
    sec.count("whatever")
    assert sec.refused["tls_handshake_failed"] == 1 and sec.refused["auth_failed"] == 1
    assert set(sec.refused) == set(REFUSAL_REASONS)


def test_prometheus_client_collector_exposes_the_same_figures() -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest

    from hostmond.web.aiohttp_security import PrometheusCollector

    app = web.Application()
    apply_web_security(app, WebConfig(), server="ingest")
    sec = app[WEB_SECURITY_KEY]
    sec.count("rate_limited")
    sec.count("rate_limited")
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(app))
    text = generate_latest(registry).decode()
    assert 'hostmon_web_requests_refused_total{reason="rate_limited",server="ingest"} 2.0' in text
    assert "# TYPE hostmon_web_requests_refused_total counter" in text
    assert 'hostmon_web_rate_limit_clients_max{server="ingest"} 10000.0' in text


async def test_accept_failures_between_successful_accepts_are_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Under EMFILE the listener closes an idle connection and accepts one, then fails again: a flapping
    spell. It is counted every time but logged once a minute, not once per 100 ms retry."""
    import errno
    import logging

    from hostmond.web.listen import CappedListener

    lst = CappedListener(lambda: None, None, 10, server="agent")
    caplog.set_level(logging.INFO, logger="hostmon.web")
    emfile = OSError(errno.EMFILE, "Too many open files")
    for _ in range(50):  # fail, then an accept succeeds, and so on
        lst._accept_failed(emfile)
        lst._accept_recovered()
    assert lst.accept_errors == 50
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("cannot accept connections" in m for m in msgs) == 1, msgs
    assert sum("accepting connections again" in m for m in msgs) == 1, "the end of the logged spell only"
