"""Helpers shared by the packaging tests: test certificates, and the shipped TOML files' commented settings."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def write_tls_files(directory: Path, mode: int = 0o600) -> dict[str, Path]:
    """A CA (``ca.crt``) and a certificate it signs (``tls.crt``, ``tls.key``), as a TLS Secret holds them.

    The certificate carries both serverAuth and clientAuth, as the packaging's
    one certificate per agent serves /metrics and is the shipping client
    certificate. Every file gets ``mode`` (a Secret volume's defaultMode).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostmon test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostmon")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hostmon-agent")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    out = {}
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(mode)
        out[name] = path
    return out


# Commented settings in the shipped TOML files: "# key = value" and "# [table]".
_COMMENTED = re.compile(r"^# (\[[\w.]+\]|\w+ = .+)$")
_SETTING = re.compile(r"^(\w+) = ")


def commented_settings(text: str) -> list[str]:
    """The commented-out settings of a TOML file, uncommented, in order."""
    return [m.group(1) for line in text.splitlines() if (m := _COMMENTED.match(line))]


def uncomment(text: str) -> str:
    """The TOML text with every commented setting turned on.

    A turned-on key replaces a key of the same name set earlier in the same
    table (``# ingest_url = "https://..."`` under an ``ingest_url = "http://..."``).
    """

    def walk() -> Iterator[tuple[str, str, bool]]:
        table = ""
        for line in text.splitlines():
            m = _COMMENTED.match(line)
            body = m.group(1) if m else line
            if body.startswith("["):
                table = body.strip("[]")
            yield table, body, m is not None

    turned_on = {(t, _SETTING.match(b).group(1)) for t, b, c in walk() if c and _SETTING.match(b)}  # type: ignore[union-attr]
    out = []
    for table, body, was_commented in walk():
        m = _SETTING.match(body)
        if not was_commented and m and (table, m.group(1)) in turned_on:
            continue
        out.append(body)
    return "\n".join(out) + "\n"
