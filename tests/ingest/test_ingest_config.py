"""Ingest config: validation errors name file, key and reason; keys are refused when too open; rotation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from hostmond.ingest import config as cfgmod
from hostmond.ingest.server import IngestServer
from ingest_helpers import REPO, KeySet, make_keys, sample_records, seal, write_config

from hostmond.core import keys as keymod
from hostmond.core import wire
from hostmond.core.errors import ConfigError


def _cfg(tmp: Path, text: str) -> Path:
    p = tmp / "ingest.toml"
    p.write_text(text)
    return p


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    p = _cfg(tmp_path, 'private_keys = ["keys/ingest-x25519.key"]\n[[agents]]\npublic_key = "keys/agent.pub"\ntenants = ["acme"]\n')
    cfg = cfgmod.load(str(p))
    assert cfg.listen == "127.0.0.1:19436"  # loopback unless configured
    assert cfg.private_keys == [str(tmp_path / "keys/ingest-x25519.key")]
    assert cfg.sqlite.path == str(tmp_path / "ingest.db")
    assert cfg.sqlite.synchronous == "full"
    loaded = cfgmod.load_keys(cfg)
    assert list(loaded.private) == [k.ingest.key_id]
    assert list(loaded.agents) == [k.agent_id]
    assert loaded.agents[k.agent_id].tenants == frozenset({"acme"})


def test_agent_public_key_given_as_text(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    text = Path(k.agent_pub_path).read_text().strip()
    p = _cfg(tmp_path, f'private_keys = ["{k.ingest_key_path}"]\n[[agents]]\npublic_key = "{text}"\ntenants = ["acme"]\n')
    assert list(cfgmod.load_keys(cfgmod.load(str(p))).agents) == [k.agent_id]


@pytest.mark.parametrize(
    "text,key,reason",
    [
        ('listen = "nowhere"\n', "listen", "HOST:PORT"),
        ("bogus = 1\n", "bogus", "unknown key"),
        ("[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes", "greater than 0"),
        ("[limits]\nmax_records = \"many\"\n", "limits.max_records", "integer"),
        ('[sqlite]\nsynchronous = "off"\n', "sqlite.synchronous", "full"),
        ('[remote_write]\nurl = "ftp://x"\n', "remote_write.url", "http"),
        ('[[agents]]\npublic_key = "x.pub"\ntenants = []\n', "agents[0].tenants", "at least one tenant"),
        ('[[agents]]\npublic_key = "x.pub"\ntenants = ["bad tenant!"]\n', "agents[0].tenants", ""),
        ('[[agents]]\ntenants = ["acme"]\n', "agents[0]", "public_key is required"),
        ("decode_workers = -5\n", "decode_workers", "-1"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    p = _cfg(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        cfgmod.load(str(p))
    assert ei.value.file == str(p)
    assert ei.value.key == key
    assert reason in ei.value.reason


def test_not_toml(tmp_path: Path) -> None:
    p = _cfg(tmp_path, "listen = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfgmod.load(str(p))


def test_key_problems_name_the_key(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    p = _cfg(tmp_path, "[[agents]]\npublic_key = \"keys/agent.pub\"\ntenants = [\"acme\"]\n")
    with pytest.raises(ConfigError, match="private_keys"):
        cfgmod.load_keys(cfgmod.load(str(p)))
    p = _cfg(tmp_path, f'private_keys = ["{tmp_path / "keys" / "agent.key"}"]\n')
    with pytest.raises(ConfigError, match=r"private_keys\[0\].*not accepted"):
        cfgmod.load_keys(cfgmod.load(str(p)))  # an ed25519 agent key is no ingest key
    p = _cfg(tmp_path, f'private_keys = ["{k.ingest_key_path}"]\n[[agents]]\npublic_key = "missing.pub"\ntenants = ["acme"]\n')
    with pytest.raises(ConfigError, match=r"agents\[0\]\.public_key.*not found"):
        cfgmod.load_keys(cfgmod.load(str(p)))
    p = _cfg(tmp_path, f'private_keys = ["{k.ingest_key_path}"]\n' + '[[agents]]\npublic_key = "keys/agent.pub"\ntenants = ["acme"]\n' * 2)
    with pytest.raises(ConfigError, match="enrolled twice"):
        cfgmod.load_keys(cfgmod.load(str(p)))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_ingest_refuses_to_start_with_a_readable_private_key(tmp_path: Path, mode: int) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k)
    os.chmod(k.ingest_key_path, mode)
    r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 2
    assert f"{cfg}: private_keys[0]" in r.stderr
    assert "too open" in r.stderr and "chmod 600" in r.stderr
    assert not (tmp_path / "ingest.db").exists()


def test_check_config_command(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k)
    r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", "check-config", str(cfg)], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "1 agents enrolled, 1 ingest keys" in r.stdout


async def test_key_rotation_accepts_batches_sealed_to_either_key(tmp_path: Path) -> None:
    old = make_keys(tmp_path / "keys")
    new_ingest = keymod.generate_ingest_keypair(tmp_path / "keys", keymod.MLKEM768_X25519, name="ingest-2")
    new = KeySet(old.dir, old.agent, old.agent_pub_path, keymod.load_private_key(new_ingest.private_path), new_ingest.private_path, new_ingest.public_path)
    cfg = write_config(tmp_path, old, private_keys=[old.ingest_key_path, new_ingest.private_path], extra="decode_workers = 0")
    server = IngestServer(cfgmod.load(str(cfg)))
    url = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as s:
            for seq, ks in ((1, old), (2, new)):
                blob = seal(ks, seq, sample_records(3))
                async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                    assert (r.status, await r.json()) == (200, {"status": "stored"})
        assert "hostmon_ingest_private_keys 2.0" in server.metrics.render().decode()
    finally:
        await server.stop()


async def test_busy_ingest_answers_503_with_retry_after(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0", limits="max_inflight = 1")
    server = IngestServer(cfgmod.load(str(cfg)))
    url = await server.start("127.0.0.1", 0)
    try:
        server._inflight = 1  # one batch in work already
        async with aiohttp.ClientSession() as s:
            blob = seal(k, 1, sample_records(3))
            async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert (await r.json())["reason"] == "busy"
            server._inflight = 0
            async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                assert (r.status, await r.json()) == (200, {"status": "stored"})
        text = server.metrics.render().decode()
        assert 'hostmon_ingest_rejected_total{reason="busy"} 1.0' in text
        assert "hostmon_ingest_inflight_limit 1.0" in text
    finally:
        await server.stop()


def test_ingest_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from ingest_helpers import IngestProcess

    k = make_keys(tmp_path / "keys")
    p = IngestProcess(write_config(tmp_path, k, extra="decode_workers = 1"))
    p.start()
    assert p.proc is not None
    t0 = time.monotonic()
    p.proc.terminate()
    assert p.proc.wait(15) == 0
    assert time.monotonic() - t0 < 15
    p.stop()


async def test_sqlite_failure_answers_503_and_commits_nothing(tmp_path: Path) -> None:
    import sqlite3

    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0")
    server = IngestServer(cfgmod.load(str(cfg)))
    url = await server.start("127.0.0.1", 0)
    db = tmp_path / "ingest.db"
    sink = server.sink
    try:
        good = sink._executor.submit(lambda: sink._conn).result()
        ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        sink._executor.submit(setattr, sink, "_conn", ro).result()  # every write now fails inside SQLite
        blob = seal(k, 1, sample_records(3))
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                assert r.status == 503 and (await r.json())["reason"] == "storage_unavailable"
            async with s.get(url + "/readyz") as r:
                assert r.status == 503  # not ready while storage fails
            sink._executor.submit(setattr, sink, "_conn", good).result()
            ro.close()
            from ingest_helpers import db_counts

            assert db_counts(db)["batches"] == 0
            for _ in range(100):  # the storage probe (every second) makes it ready again
                async with s.get(url + "/readyz") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.1)
            assert r.status == 200
            async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                assert (r.status, await r.json()) == (200, {"status": "stored"})
        text = server.metrics.render().decode()
        assert 'hostmon_ingest_rejected_total{reason="storage_unavailable"} 1.0' in text
        assert "process_resident_memory_bytes" in text
    finally:
        await server.stop()


# ---------------------------------------------------------------------------
# [web]: the agent's endpoint security section, file names relative to the config file


def _self_signed(d: Path, stem: str) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(d / f"{stem}.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    return d / f"{stem}.crt", d / f"{stem}.key"


def test_web_defaults_match_the_agent(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = cfgmod.load(str(_cfg(tmp_path, f'private_keys = ["{k.ingest_key_path}"]\n')))
    assert not cfg.web.tls_server_config.enabled  # plain HTTP on 127.0.0.1 unless configured
    assert cfg.web.open_paths == ["/healthz", "/readyz"]
    assert (cfg.web.rate_limit.requests_per_second, cfg.web.rate_limit.burst) == (10.0, 20)
    assert not cfg.web.auth_enabled


def test_web_file_names_are_resolved_against_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k = make_keys(tmp_path / "keys")
    _self_signed(tmp_path / "tls", "ingest")
    (tmp_path / "tls" / "scrape.token").write_text("tok\n")
    os.chmod(tmp_path / "tls" / "scrape.token", 0o600)
    monkeypatch.chdir("/")  # not the config's directory
    p = _cfg(
        tmp_path,
        f'private_keys = ["{k.ingest_key_path}"]\n[web]\nbearer_token_files = ["tls/scrape.token"]\n'
        '[web.tls_server_config]\ncert_file = "tls/ingest.crt"\nkey_file = "tls/ingest.key"\n'
        'client_ca_file = "tls/ingest.crt"\nclient_auth_type = "RequireAndVerifyClientCert"\n',
    )
    t = cfgmod.load(str(p)).web.tls_server_config
    assert (t.cert_file, t.key_file, t.client_ca_file) == (
        str(tmp_path / "tls/ingest.crt"), str(tmp_path / "tls/ingest.key"), str(tmp_path / "tls/ingest.crt")
    )
    assert cfgmod.load(str(p)).web.bearer_token_files == [str(tmp_path / "tls/scrape.token")]


@pytest.mark.parametrize("old", ["tls_cert", "tls_key", "tls_client_ca"])
def test_the_old_tls_keys_say_where_they_moved(tmp_path: Path, old: str) -> None:
    p = _cfg(tmp_path, f'{old} = "x.pem"\n')
    with pytest.raises(ConfigError) as ei:
        cfgmod.load(str(p))
    assert (ei.value.file, ei.value.key) == (str(p), old)
    assert "web.tls_server_config." in ei.value.reason


@pytest.mark.parametrize(
    "web,key,reason",
    [
        ('[web.tls_server_config]\ncert_file = "missing.crt"\nkey_file = "missing.key"\n', "web.tls_server_config.cert_file", "no such file"),
        ('[web.tls_server_config]\nclient_auth_type = "Sometimes"\n', "web.tls_server_config.client_auth_type", "RequireAndVerifyClientCert"),
        ('[web.tls_server_config]\nclient_ca_file = "tls/ingest.crt"\n', "web.tls_server_config", "need TLS"),
        ('[web]\nbasic_auth_users = { prometheus = "plain" }\n', "web.basic_auth_users", "bcrypt"),
        ('[web.rate_limit]\nrequests_per_second = -1\n', "web.rate_limit.requests_per_second", "0 or more"),
        ('[web]\nopen_paths = ["healthz"]\n', "web.open_paths", "absolute"),
    ],
)
def test_bad_web_values_name_file_key_and_reason(tmp_path: Path, web: str, key: str, reason: str) -> None:
    _self_signed(tmp_path / "tls", "ingest")
    p = _cfg(tmp_path, web)
    with pytest.raises(ConfigError) as ei:
        cfgmod.load(str(p))
    assert (ei.value.file, ei.value.key) == (str(p), key)
    assert reason in ei.value.reason


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_ingest_refuses_to_start_with_a_readable_tls_key(tmp_path: Path, mode: int) -> None:
    k = make_keys(tmp_path / "keys")
    crt, key = _self_signed(tmp_path / "tls", "ingest")
    cfg = write_config(tmp_path, k, web=f'[web.tls_server_config]\ncert_file = "{crt}"\nkey_file = "{key}"')
    cfgmod.load_keys(cfgmod.load(str(cfg)))  # 0600: fine
    os.chmod(key, mode)
    for cmd in (["run", "--config", str(cfg)], ["check-config", str(cfg)]):
        r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", *cmd], capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
        assert r.returncode == 2, r.stderr
        assert f"{cfg}: web.tls_server_config.key_file: {key}: permissions" in r.stderr
        assert f"chmod 600 {key}" in r.stderr
    assert not (tmp_path / "ingest.db").exists()


def test_tls_key_opened_up_after_the_config_was_read_is_refused_by_load_keys(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    crt, key = _self_signed(tmp_path / "tls", "ingest")
    cfg = cfgmod.load(str(write_config(tmp_path, k, web=f'[web.tls_server_config]\ncert_file = "{crt}"\nkey_file = "{key}"')))
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match=r"web\.tls_server_config\.key_file.*too open"):
        cfgmod.load_keys(cfg)


def test_the_web_example_in_docs_ingest_md_loads(tmp_path: Path) -> None:
    import re
    import shutil

    text = (REPO / "docs" / "ingest.md").read_text()
    example = next(b for b in re.findall(r"```toml\n(.*?)```", text, re.DOTALL) if "[web.tls_server_config]" in b)
    k = make_keys(tmp_path / "keys")
    shutil.copyfile(k.ingest_key_path, tmp_path / "ingest.key")
    os.chmod(tmp_path / "ingest.key", 0o600)
    _self_signed(tmp_path / "tls", "tls")
    shutil.copyfile(tmp_path / "tls" / "tls.crt", tmp_path / "tls" / "agents-ca.crt")
    cfg = cfgmod.load(str(_cfg(tmp_path, example)))
    assert cfg.web.tls_server_config.client_auth_type == "RequireAndVerifyClientCert"
    assert cfg.web.tls_server_config.key_file == str(tmp_path / "tls" / "tls.key")
    assert list(cfg.web.basic_auth_users) == ["prometheus"]
    assert cfgmod.load_keys(cfg).private


def test_check_config_and_run_refuse_a_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    crt, _ = _self_signed(tmp_path / "tls", "one")
    _, other_key = _self_signed(tmp_path / "tls", "two")
    cfg = write_config(tmp_path, k, web=f'[web.tls_server_config]\ncert_file = "{crt}"\nkey_file = "{other_key}"')
    for cmd in (["check-config", str(cfg)], ["run", "--config", str(cfg)]):
        r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", *cmd], capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
        assert r.returncode == 2, r.stderr
        assert f"{cfg}: web.tls_server_config: the TLS files do not load" in r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "ingest.db").exists()
    good = write_config(tmp_path, k, web=f'[web.tls_server_config]\ncert_file = "{crt}"\nkey_file = "{tmp_path / "tls" / "one.key"}"')
    r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", "check-config", str(good)], capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
    assert r.returncode == 0, r.stderr
    assert "ingest keys; TLS, rate limit 10/s per address" in r.stdout
