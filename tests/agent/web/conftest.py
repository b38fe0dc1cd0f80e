"""Real TLS for the web security tests: a PKI made at test time, real servers on 127.0.0.1.

The security layer is shared by two HTTP servers: the ingest's (aiohttp, through
``hostmond.web.aiohttp_security``) and the agent's own (``hostmond.web.httpserver``
behind ``MetricsServer``). ``start_server`` and ``server_in_thread`` start either
(``kind`` "aiohttp" or "agent"): the tests that use ``start_server`` run against both.

The PKI (EC P-256 keys, fast to make) holds two CAs and the certificates the
tests need: a server certificate for 127.0.0.1/localhost, a second one for
rotation, good/expired client certificates, and a client certificate from a CA
the server does not trust. Key files are written 0600, as the config requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostmond.agent.exposition import MetricsServer, MetricStore
from hostmond.core.model import Sample
from hostmond.web.aiohttp_security import apply_web_security, security_of
from hostmond.web.config import WebConfig
from hostmond.web.security import METRICS, WebSecurity

SERVER_KINDS = ("aiohttp", "agent")

NOW = dt.datetime.now(dt.timezone.utc)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclasses.dataclass
class Issued:
    cert: Path
    key: Path
    obj: x509.Certificate
    private: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(dirpath: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cpath = dirpath / f"{stem}.crt"
    kpath = dirpath / f"{stem}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    kpath.chmod(0o600)
    return Issued(cpath, kpath, cert, key)


def make_ca(dirpath: Path, stem: str, cn: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return _write(dirpath, stem, cert, key)


def issue(
    dirpath: Path,
    stem: str,
    ca: Issued,
    cn: str,
    *,
    server: bool,
    sans: list[x509.GeneralName] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.obj.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _write(dirpath, stem, builder.sign(ca.private, hashes.SHA256()), key)


@dataclasses.dataclass
class PKI:
    dir: Path
    ca: Issued
    ca2: Issued  # a second CA (rotation of client_ca_file)
    wrong_ca: Issued
    server: Issued
    server2: Issued  # the certificate a rotation swaps in
    client: Issued
    client_ca2: Issued  # signed by ca2
    expired_client: Issued
    wrong_client: Issued  # signed by wrong_ca


SERVER_SANS: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1"))]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca", "hostmon test CA")
    ca2 = make_ca(d, "ca2", "hostmon test CA 2")
    wrong = make_ca(d, "wrong-ca", "somebody else's CA")
    return PKI(
        dir=d,
        ca=ca,
        ca2=ca2,
        wrong_ca=wrong,
        server=issue(d, "server", ca, "hostmon server one", server=True, sans=SERVER_SANS),
        server2=issue(d, "server2", ca, "hostmon server two", server=True, sans=SERVER_SANS),
        client=issue(
            d,
            "client",
            ca,
            "agent-01",
            server=False,
            sans=[x509.DNSName("agent-01.example"), x509.UniformResourceIdentifier("spiffe://hostmon/agent-01")],
        ),
        client_ca2=issue(d, "client-ca2", ca2, "agent-02", server=False, sans=[x509.DNSName("agent-02.example")]),
        expired_client=issue(
            d,
            "expired-client",
            ca,
            "agent-expired",
            server=False,
            sans=[x509.DNSName("agent-01.example")],
            not_before=NOW - dt.timedelta(days=20),
            not_after=NOW - dt.timedelta(days=1),
        ),
        wrong_client=issue(d, "wrong-client", wrong, "intruder", server=False, sans=[x509.DNSName("agent-01.example")]),
    )


def client_ctx(ca: Path, cert: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def render(samples: list[Sample]) -> str:
    """Minimal text exposition of the security self-metrics (the agent's exposition does the real one)."""
    lines: list[str] = []
    typed: set[str] = set()
    for s in samples:
        if s.name not in typed:
            lines.append(f"# TYPE {s.name} {s.type}")
            typed.add(s.name)
        labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
        lines.append(f"{s.name}{{{labels}}} {s.value}")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass
class Server:
    kind: str  # "aiohttp" (the ingest's adapter) or "agent" (MetricsServer, our own HTTP server)
    sec: WebSecurity
    port: int
    ssl: ssl.SSLContext | None
    stop: Callable[[], Awaitable[None]]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}{path}"

    def refused(self, reason: str) -> float:
        for s in self.sec.self_metrics():
            if s.name == "hostmon_web_requests_refused_total" and s.labels["reason"] == reason:
                return s.value
        raise AssertionError(f"no refusal counter for reason {reason}")


def build_app() -> web.Application:
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        sec = security_of(request.app)
        return web.Response(text=render(sec.self_metrics() if sec else []), content_type="text/plain")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    return app


class LiveStore(MetricStore):
    """Renders at every request (the agent renders once per collection): counters seen at once."""

    def body(self, openmetrics: bool, gz: bool) -> bytes:
        self._dirty = True
        return super().body(openmetrics, gz)


async def start_kind(kind: str, cfg: WebConfig) -> Server:
    """Start a server of ``kind`` on 127.0.0.1 (a free port) on the running loop."""
    if kind == "aiohttp":
        app = build_app()
        ctx = apply_web_security(app, cfg, server="agent")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
        sec = security_of(app)
        assert sec is not None
        return Server(kind, sec, runner.addresses[0][1], ctx, runner.cleanup)
    store = LiveStore({m.name: m for m in METRICS})
    srv = MetricsServer(store, "127.0.0.1", 0, lambda: True, cfg)
    assert srv.security is not None
    store.add_provider(srv.security.self_metrics)
    await srv.start()
    return Server(kind, srv.security, srv.port, srv.ssl_context, srv.stop)


StartServer = Callable[[WebConfig], Awaitable[Server]]


@pytest.fixture(params=SERVER_KINDS)
async def start_server(request: pytest.FixtureRequest) -> AsyncIterator[StartServer]:
    servers: list[Server] = []

    async def start(cfg: WebConfig) -> Server:
        srv = await start_kind(request.param, cfg)
        servers.append(srv)
        return srv

    yield start
    for s in servers:
        await s.stop()


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``cond()`` holds (the server counts on the same loop, a tick after the client sees it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def get(url: str, *, ctx: ssl.SSLContext | bool | None = None, source: str | None = None, **kw: Any) -> tuple[int, dict[str, str], str]:
    connector = aiohttp.TCPConnector(ssl=ctx if ctx is not None else True, local_addr=(source, 0) if source else None)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with s.get(url, **kw) as r:
            return r.status, dict(r.headers), await r.text()


@contextlib.contextmanager
def server_in_thread(cfg: WebConfig, kind: str = "aiohttp") -> Iterator[Server]:
    """A server of ``kind`` on its own event loop in a thread, for tests that block (a real Prometheus)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="web-test-server", daemon=True)
    thread.start()
    srv = asyncio.run_coroutine_threadsafe(start_kind(kind, cfg), loop).result(30)
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
