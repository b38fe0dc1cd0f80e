"""The ingest serving HTTPS (and mutual TLS) to the project's real Sender, verification on."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ingest_helpers import db_counts, make_keys, sample_records, seal, write_config

from agent.shipping import sender as snd
from ingest import config as cfgmod
from ingest.server import IngestServer


def _cert(d: Path, name: str, issuer_key=None, issuer_name=None, ca: bool = False, ip: str | None = None):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(d / f"{name}.key", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    return key, subject, str(d / f"{name}.crt"), str(d / f"{name}.key")


async def test_https_with_mutual_tls_against_the_real_sender(tmp_path: Path) -> None:
    ca_key, ca_name, ca_crt, _ = _cert(tmp_path, "ca", ca=True)
    _, _, srv_crt, srv_key = _cert(tmp_path, "ingest", ca_key, ca_name, ip="127.0.0.1")
    _, _, cli_crt, cli_key = _cert(tmp_path, "agent", ca_key, ca_name)
    keys = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, keys, extra=f'decode_workers = 0\ntls_cert = "{srv_crt}"\ntls_key = "{srv_key}"\ntls_client_ca = "{ca_crt}"')
    server = IngestServer(cfgmod.load(str(cfg)))
    url = await server.start("127.0.0.1", 0)
    assert url.startswith("https://127.0.0.1:")
    try:
        async with snd.Sender(url, ca_file=ca_crt) as s:  # no client certificate: refused in the handshake
            r = await s.send(seal(keys, 1, sample_records(2)), 1)
            assert r.outcome == snd.RETRY
        async with snd.Sender(url) as s:  # does not trust the ingest's CA: verification stays on
            r = await s.send(seal(keys, 1, sample_records(2)), 1)
            assert r.outcome == snd.RETRY and r.reason == "tls"
        assert db_counts(tmp_path / "ingest.db")["batches"] == 0
        async with snd.Sender(url, ca_file=ca_crt, client_cert=cli_crt, client_key=cli_key) as s:
            r = await s.send(seal(keys, 1, sample_records(2)), 1)
            assert (r.outcome, r.status, r.duplicate) == (snd.ACKED, 200, False)
        assert db_counts(tmp_path / "ingest.db")["samples"] == 2
    finally:
        await server.stop()


def test_tls_key_must_be_private(tmp_path: Path) -> None:
    import pytest

    from agent.errors import ConfigError

    _, _, crt, key = _cert(tmp_path, "ingest", ip="127.0.0.1")
    os.chmod(key, 0o644)
    keys = make_keys(tmp_path / "keys")
    cfg = cfgmod.load(str(write_config(tmp_path, keys, extra=f'tls_cert = "{crt}"\ntls_key = "{key}"')))
    with pytest.raises(ConfigError, match="tls_key.*too open"):
        cfgmod.load_keys(cfg)
