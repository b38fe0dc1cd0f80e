"""The ingest's endpoint security ([web], the agent's code) with real TLS and the project's real Sender.

Certificates are made at test time with ``cryptography``; the ingest is the real
IngestServer on 127.0.0.1, configured from a TOML file like production. Every
refusal must be refused (nothing stored) AND counted on the ingest's own
/metrics under ``server="ingest"``.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import os
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hostmond.agent.shipping import sender as snd
from hostmond.ingest import config as cfgmod
from hostmond.ingest.server import IngestServer
from ingest_helpers import (
    KeySet,
    db_counts,
    make_keys,
    sample_records,
    seal,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

NOW = dt.datetime.now(dt.UTC)
CLIENT_ERRORS = (aiohttp.ClientError, ssl.SSLError, ConnectionError)


# ---------------------------------------------------------------------------
# a PKI made at test time


@dataclasses.dataclass
class Issued:
    cert: Path
    key: Path
    private: ec.EllipticCurvePrivateKey
    obj: x509.Certificate


def _issue(
    d: Path,
    stem: str,
    cn: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    server: bool = False,
    not_after: dt.datetime | None = None,
    not_before: dt.datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.obj.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private.public_key()), critical=False)  # type: ignore[union-attr]
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]), critical=False
        )
    cert = b.sign(issuer.private if issuer else key, hashes.SHA256())
    (d / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(d / f"{stem}.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    return Issued(d / f"{stem}.crt", d / f"{stem}.key", key, cert)


@dataclasses.dataclass
class PKI:
    ca: Issued
    server: Issued
    server2: Issued  # what a rotation swaps in
    client: Issued
    expired_client: Issued
    wrong_ca: Issued
    wrong_client: Issued  # signed by wrong_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("ingest-pki")
    ca = _issue(d, "ca", "hostmon agents CA", ca=True)
    wrong = _issue(d, "wrong-ca", "somebody else's CA", ca=True)
    return PKI(
        ca=ca,
        server=_issue(d, "ingest", "ingest one", ca, server=True),
        server2=_issue(d, "ingest2", "ingest two", ca, server=True),
        client=_issue(d, "agent", "agent-01", ca),
        expired_client=_issue(
            d, "agent-expired", "agent-expired", ca, not_before=NOW - dt.timedelta(days=20), not_after=NOW - dt.timedelta(days=1)
        ),
        wrong_ca=wrong,
        wrong_client=_issue(d, "intruder", "intruder", wrong),
    )


def client_ctx(pki: PKI, cert: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def mtls_web(pki: PKI, cert: Path | None = None, key: Path | None = None, extra: str = "") -> str:
    """Body of the ingest's [web] table: mutual TLS as docs/web-security.md shows it."""
    return (
        f"{extra}\n[web.tls_server_config]\n"
        f'cert_file = "{cert or pki.server.cert}"\nkey_file = "{key or pki.server.key}"\n'
        f'client_ca_file = "{pki.ca.cert}"\nclient_auth_type = "RequireAndVerifyClientCert"\n'
    )


StartIngest = Callable[[Path, KeySet, str], Awaitable[IngestServer]]


@pytest.fixture
async def start_ingest() -> AsyncIterator[StartIngest]:
    servers: list[IngestServer] = []

    async def start(d: Path, keys: KeySet, web: str) -> IngestServer:
        server = IngestServer(cfgmod.load(str(write_config(d, keys, extra="decode_workers = 0", web=web))))
        servers.append(server)
        await server.start("127.0.0.1", 0)
        return server

    yield start
    for s in servers:
        await s.stop()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def scrape(
    url: str, ctx: ssl.SSLContext | bool = False, headers: dict[str, str] | None = None, source: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it with prometheus_client's parser: {(sample name, sorted labels): value}."""
    connector = aiohttp.TCPConnector(ssl=ctx, local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(connector=connector) as s, s.get(url + "/metrics", headers=headers) as r:
        assert r.status == 200, await r.text()
        text = await r.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for fam in text_string_to_metric_families(text)
        for sample in fam.samples
    }


def refused(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], reason: str) -> float:
    return metrics[("hostmon_web_requests_refused_total", (("reason", reason), ("server", "ingest")))]


async def eventually_refused(url: str, ctx: ssl.SSLContext, reason: str, want: float, timeout: float = 10.0) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        m = await scrape(url, ctx)
        if refused(m, reason) == want or loop.time() > deadline:
            assert refused(m, reason) == want, f"{reason}: {refused(m, reason)} != {want}"
            return m
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------
# mutual TLS with the real Sender


async def test_real_sender_ships_through_mutual_tls(pki: PKI, tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    server = await start_ingest(tmp_path, keys, mtls_web(pki))
    assert server.url.startswith("https://127.0.0.1:")
    async with snd.Sender(server.url, ca_file=str(pki.ca.cert), client_cert=str(pki.client.cert), client_key=str(pki.client.key)) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert (r.outcome, r.status, r.duplicate) == (snd.ACKED, 200, False)
    assert db_counts(tmp_path / "ingest.db")["samples"] == 2
    m = await scrape(server.url, client_ctx(pki, pki.client))
    assert m[("hostmon_ingest_batches_total", (("result", "stored"),))] == 1
    assert all(refused(m, r) == 0 for r in ("tls_client_cert_missing", "tls_client_cert_untrusted", "rate_limited"))
    assert m[("hostmon_web_tls_cert_not_after_seconds", (("server", "ingest"),))] == pki.server.obj.not_valid_after_utc.timestamp()


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        (None, "tls_client_cert_missing"),
        ("wrong_client", "tls_client_cert_untrusted"),
        ("expired_client", "tls_client_cert_expired"),
    ],
)
async def test_sender_without_a_valid_client_certificate_is_refused_and_counted(
    pki: PKI, tmp_path: Path, start_ingest: StartIngest, client: str | None, reason: str
) -> None:
    keys = make_keys(tmp_path / "keys")
    server = await start_ingest(tmp_path, keys, mtls_web(pki))
    cert: Issued | None = getattr(pki, client) if client else None
    kw = {"client_cert": str(cert.cert), "client_key": str(cert.key)} if cert else {}
    async with snd.Sender(server.url, ca_file=str(pki.ca.cert), **kw) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert r.outcome == snd.RETRY and r.status is None  # refused in the handshake; the agent keeps the batch
    assert db_counts(tmp_path / "ingest.db")["batches"] == 0
    m = await eventually_refused(server.url, client_ctx(pki, pki.client), reason, 1)
    others = {"tls_client_cert_missing", "tls_client_cert_untrusted", "tls_client_cert_expired"} - {reason}
    assert all(refused(m, o) == 0 for o in others)


async def test_plain_http_to_the_ingest_tls_port_is_refused_and_counted(pki: PKI, tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    server = await start_ingest(tmp_path, keys, mtls_web(pki))
    plain = server.url.replace("https://", "http://")
    async with snd.Sender(plain) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert r.outcome == snd.RETRY and r.status is None
    assert db_counts(tmp_path / "ingest.db")["batches"] == 0
    await eventually_refused(server.url, client_ctx(pki, pki.client), "tls_plain_http", 1)


async def test_sender_that_does_not_trust_the_ingest_certificate_refuses_it(pki: PKI, tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    server = await start_ingest(tmp_path, keys, mtls_web(pki))
    # the system store does not hold the test CA: verification stays on, nothing is sent
    async with snd.Sender(server.url, client_cert=str(pki.client.cert), client_key=str(pki.client.key)) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert (r.outcome, r.reason) == (snd.RETRY, "tls")
    assert db_counts(tmp_path / "ingest.db")["batches"] == 0


# ---------------------------------------------------------------------------
# rate limit


async def test_rate_limit_answers_429_with_retry_after_which_the_sender_retries(
    pki: PKI, tmp_path: Path, start_ingest: StartIngest
) -> None:
    keys = make_keys(tmp_path / "keys")
    web = mtls_web(pki, extra="[web.rate_limit]\nrequests_per_second = 1.0\nburst = 2")
    server = await start_ingest(tmp_path, keys, web)
    async with snd.Sender(server.url, ca_file=str(pki.ca.cert), client_cert=str(pki.client.cert), client_key=str(pki.client.key)) as s:
        results = [await s.send(seal(keys, seq, sample_records(1, seq=seq)), seq) for seq in (1, 2, 3)]
        assert [r.outcome for r in results] == [snd.ACKED, snd.ACKED, snd.RETRY]
        limited = results[2]
        assert (limited.status, limited.reason) == (429, "http_429")
        assert limited.retry_after is not None and limited.retry_after >= 1
        # the shipper waits at least Retry-After before the next attempt, then the same bytes go through
        assert snd.retry_wait(0, 0.5, 60.0, limited.retry_after) >= limited.retry_after
        await asyncio.sleep(limited.retry_after)
        again = await s.send(seal(keys, 3, sample_records(1, seq=3)), 3)
    assert (again.outcome, again.status) == (snd.ACKED, 200)
    assert db_counts(tmp_path / "ingest.db")["batches"] == 3
    # scrape from another address: its bucket is its own (127.0.0.1's may be empty again)
    m = await scrape(server.url, client_ctx(pki, pki.client), source="127.0.0.2")
    assert refused(m, "rate_limited") == 1
    assert m[("hostmon_web_rate_limit_clients", (("server", "ingest"),))] == 2


# ---------------------------------------------------------------------------
# authentication: /metrics needs credentials, probes and the batch path do not


async def test_metrics_behind_basic_auth_while_probes_and_batches_stay_open(tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = f'basic_auth_users = {{ prometheus = "{hashed}" }}\n[web.rate_limit]\nrequests_per_second = 0'
    server = await start_ingest(tmp_path, keys, web)
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(server.url + path) as r:
                assert r.status == 200, path
        async with http.get(server.url + "/metrics") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
            assert "hostmon_ingest" not in await r.text()
        async with http.get(server.url + "/metrics", headers=basic("prometheus", "wrong")) as r:
            assert r.status == 401
    # the agent sends no HTTP credentials: its batches are authenticated by their signature
    async with snd.Sender(server.url) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert (r.outcome, r.status) == (snd.ACKED, 200)
    m = await scrape(server.url, headers=basic("prometheus", "s3cret"))
    assert refused(m, "auth_missing") == 1
    assert refused(m, "auth_failed") == 1
    assert m[("hostmon_ingest_batches_total", (("result", "stored"),))] == 1


async def test_readyz_is_503_until_the_sink_is_open(tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = IngestServer(cfgmod.load(str(write_config(tmp_path / "a", keys, extra="decode_workers = 0"))))
    before = await server.handle_ready(None)  # type: ignore[arg-type]
    assert before.status == 503
    started = await start_ingest(tmp_path / "b", keys, "")
    async with aiohttp.ClientSession() as http, http.get(started.url + "/readyz") as r:
        assert r.status == 200


# ---------------------------------------------------------------------------
# certificate rotation


def replace_file(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o600)
    os.replace(tmp, dst)


async def presented_cn(url: str, pki: PKI) -> str:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port), ssl=client_ctx(pki, pki.client))
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


async def test_ingest_certificate_rotation_without_restart(pki: PKI, tmp_path: Path, start_ingest: StartIngest) -> None:
    keys = make_keys(tmp_path / "keys")
    tls = tmp_path / "tls"
    tls.mkdir()
    cert, key = tls / "tls.crt", tls / "tls.key"
    replace_file(pki.server.cert, cert)
    replace_file(pki.server.key, key)
    server = await start_ingest(tmp_path, keys, mtls_web(pki, cert, key, extra="reload_interval = 0.05"))
    assert await presented_cn(server.url, pki) == "CN=ingest one"

    replace_file(pki.server2.key, key)
    replace_file(pki.server2.cert, cert)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await scrape(server.url, client_ctx(pki, pki.client)))[
        ("hostmon_web_tls_reloads_total", (("result", "success"), ("server", "ingest")))
    ] < 1:
        assert loop.time() < deadline, "the ingest did not reload its certificate"
        await asyncio.sleep(0.05)
    assert await presented_cn(server.url, pki) == "CN=ingest two"
    async with snd.Sender(server.url, ca_file=str(pki.ca.cert), client_cert=str(pki.client.cert), client_key=str(pki.client.key)) as s:
        r = await s.send(seal(keys, 1, sample_records(2)), 1)
    assert r.outcome == snd.ACKED
