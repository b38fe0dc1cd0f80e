"""The sender against a real aiohttp server on 127.0.0.1: retry classes, Retry-After, TLS, backoff bounds."""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import ssl

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hostmond.agent.shipping import sender as snd

from hostmond.core import wire
from hostmond.core.errors import KeyFileError


class ScriptedIngest:
    """Answers each POST with the next (status, body, headers) of a script; records requests."""

    def __init__(self, script: list[tuple[int, dict | str | None, dict[str, str]]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path, dict(request.headers), body))
        status, payload, headers = self.script.pop(0) if self.script else (200, {"status": "stored"}, {})
        if isinstance(payload, dict):
            return web.json_response(payload, status=status, headers=headers)
        return web.Response(status=status, text=payload or "", headers=headers)


async def serve(handler: ScriptedIngest, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/v1/batches", handler.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def test_status_classes_against_a_real_server() -> None:
    script = [
        (200, {"status": "stored"}, {}),
        (201, {"status": "stored"}, {}),
        (200, {"status": "duplicate"}, {}),
        (400, {"status": "rejected", "reason": "bad_record"}, {}),
        (401, {"status": "rejected", "reason": "bad_signature"}, {}),
        (403, {"status": "rejected", "reason": "tenant_not_allowed"}, {}),
        (409, {"status": "rejected", "reason": "replay"}, {}),
        (413, "too big", {}),
        (429, None, {"Retry-After": "7"}),
        (503, None, {}),
        (500, None, {}),
        (408, None, {}),
        (404, None, {}),
        (425, None, {}),
        (400, {"status": "rejected", "reason": "<script>" * 50}, {}),
    ]
    ingest = ScriptedIngest(script)
    runner, port = await serve(ingest)
    try:
        async with snd.Sender(f"http://127.0.0.1:{port}/", agent_id="a1") as s:
            results = [await s.send(b"envelope-%d" % i, seq=i) for i in range(len(script))]
    finally:
        await runner.cleanup()
    got = [(r.outcome, r.status, r.reason, r.duplicate) for r in results]
    assert got == [
        ("acked", 200, "", False),
        ("acked", 201, "", False),
        ("acked", 200, "", True),
        ("drop", 400, "bad_record", False),
        ("drop", 401, "bad_signature", False),
        ("drop", 403, "tenant_not_allowed", False),
        ("drop", 409, "replay", False),
        ("drop", 413, "unspecified", False),
        ("retry", 429, "http_429", False),
        ("retry", 503, "http_5xx", False),
        ("retry", 500, "http_5xx", False),
        ("retry", 408, "http_408", False),
        ("retry", 404, "http_other", False),
        ("retry", 425, "http_425", False),
        ("drop", 400, "unspecified", False),  # hostile reason text is not passed on
    ]
    assert results[8].retry_after == 7.0
    path, headers, body = ingest.requests[3]
    assert path == "/v1/batches" and body == b"envelope-3"
    assert headers["Content-Type"] == wire.CONTENT_TYPE == "application/vnd.hostmon.batch"
    assert headers["X-Hostmon-Agent-Id"] == "a1" and headers["X-Hostmon-Batch-Seq"] == "3"


async def test_connection_refused_and_timeouts_are_retried(unused_tcp_port) -> None:
    async with snd.Sender(f"http://127.0.0.1:{unused_tcp_port}") as s:
        r = await s.send(b"x")
    assert (r.outcome, r.status, r.reason) == ("retry", None, "connect")

    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/batches", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with snd.Sender(f"http://127.0.0.1:{runner.addresses[0][1]}", connect_timeout=0.2, request_timeout=0.3) as s:
            r = await s.send(b"x")
    finally:
        await runner.cleanup()
    assert (r.outcome, r.reason) == ("retry", "timeout")


def test_backoff_is_full_jitter_between_zero_and_the_capped_exponential() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        ceiling = min(60.0, 0.5 * 2**attempt)
        waits = [snd.backoff_delay(attempt, 0.5, 60.0, rng) for _ in range(400)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.8 * ceiling and min(waits) < 0.2 * ceiling  # spread over the whole range
    assert snd.backoff_delay(10_000, 0.5, 60.0, rng) <= 60.0  # no overflow on long outages
    # Retry-After raises the wait, the maximum caps it
    assert snd.retry_wait(0, 0.5, 60.0, retry_after=7.0, rng=rng) == 7.0
    assert snd.retry_wait(0, 0.5, 60.0, retry_after=3600.0, rng=rng) == 60.0


def test_retry_after_parsing() -> None:
    assert snd.parse_retry_after("120") == 120.0
    assert snd.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert snd.parse_retry_after("soon") is None and snd.parse_retry_after(None) is None


# -- TLS ------------------------------------------------------------------------------


def _cert(tmp_path, name: str, issuer_key=None, issuer_name=None, ca: bool = False, san_ip: str | None = None):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san_ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    cert_path = tmp_path / f"{name}.crt"
    key_path = tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.close(fd)
    return key, subject, str(cert_path), str(key_path)


async def test_tls_is_verified_custom_ca_works_and_mutual_tls_is_supported(tmp_path) -> None:
    ca_key, ca_name, ca_crt, _ = _cert(tmp_path, "test-ca", ca=True)
    _, _, srv_crt, srv_key = _cert(tmp_path, "ingest", ca_key, ca_name, san_ip="127.0.0.1")
    _, _, cli_crt, cli_key = _cert(tmp_path, "agent", ca_key, ca_name)
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(srv_crt, srv_key)
    sctx.load_verify_locations(ca_crt)
    sctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    ingest = ScriptedIngest([])
    runner, port = await serve(ingest, sctx)
    url = f"https://127.0.0.1:{port}"
    try:
        async with snd.Sender(url) as s:  # system CA store does not know our CA
            assert (await s.send(b"x")).reason == "tls"
        async with snd.Sender(url, ca_file=ca_crt) as s:  # server trusted, but no client certificate
            r = await s.send(b"x")
            assert r.outcome == "retry" and r.reason in ("tls", "connect")
        async with snd.Sender(url, ca_file=ca_crt, client_cert=cli_crt, client_key=cli_key) as s:
            assert (await s.send(b"x")).outcome == "acked"
    finally:
        await runner.cleanup()
    assert len(ingest.requests) == 1
    os.chmod(cli_key, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        snd.Sender(url, ca_file=ca_crt, client_cert=cli_crt, client_key=cli_key)
