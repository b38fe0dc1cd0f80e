"""The agent's own HTTP/1.1 server (hostmond.web.httpserver) spoken to over raw sockets on 127.0.0.1.

Methods, keep-alive for HTTP/1.0 and 1.1, pipelining, HEAD, limits, malformed
requests, slowloris and content negotiation, against the real ``MetricsServer``.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator

import pytest

from hostmond.agent.exposition import OM_CT, TEXT_CT, MetricsServer, MetricStore
from hostmond.core.model import GAUGE, MetricSpec, Sample
from hostmond.web import httpserver
from hostmond.web.config import RateLimitConfig, WebConfig

SPEC = MetricSpec("demo_value", GAUGE, "A demo gauge.", ("k",))


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    store = MetricStore({SPEC.name: SPEC})
    store.update("demo", [Sample("demo_value", GAUGE, 1.5, {"k": "v"})])
    srv = MetricsServer(store, "127.0.0.1", 0, lambda: True, WebConfig(rate_limit=RateLimitConfig(requests_per_second=0)))
    await srv.start()
    yield srv
    await srv.stop()


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names), body (by Content-Length)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for ln in lines[1:]:
            if ln:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = v.strip()
        n = 0 if head_only else int(headers["content-length"])
        body = await asyncio.wait_for(self.reader.readexactly(n), 10)
        return status, headers, body

    async def closed(self) -> bool:
        """True when the server closed the connection (EOF, or a reset)."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 10) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def connect(srv: MetricsServer) -> Conn:
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    return Conn(r, w)


async def test_get_and_head_are_served_and_other_methods_get_405_with_allow(server: MetricsServer) -> None:
    c = await connect(server)
    await c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await c.response()
    assert status == 200 and headers["content-type"] == TEXT_CT
    assert b'demo_value{k="v"} 1.5\n' in body and int(headers["content-length"]) == len(body)
    await c.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await c.response(head_only=True)
    assert status == 200 and int(headers["content-length"]) == len(body)  # no body follows a HEAD answer
    for method in (b"POST", b"PUT", b"DELETE", b"OPTIONS"):
        await c.send(method + b" /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await c.response()
        assert status == 405 and headers["allow"] == "GET, HEAD"
    for path, want in ((b"/healthz", b"ok\n"), (b"/readyz", b"ready\n"), (b"/?x=1", b"<html>"), (b"/a/../healthz", b"ok\n")):
        await c.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await c.response()
        assert status == 200 and body.startswith(want), path
    await c.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await c.response())[0] == 404
    c.close()


async def test_keep_alive_follows_http_1_1_and_1_0_rules(server: MetricsServer) -> None:
    c = await connect(server)  # HTTP/1.1: kept open until the client says close
    for _ in range(3):
        await c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await c.response()
        assert status == 200 and "connection" not in headers
    await c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = await c.response()
    assert status == 200 and headers["connection"] == "close" and await c.closed()

    c = await connect(server)  # HTTP/1.0: closed unless asked to keep it
    await c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
    status, headers, _ = await c.response()
    assert headers["connection"] == "close" and await c.closed()
    c = await connect(server)
    await c.send(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (await c.response())[1]["connection"] == "keep-alive"
    await c.send(b"GET /readyz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, _, body = await c.response()
    assert status == 200 and body == b"ready\n"
    c.close()


async def test_pipelined_requests_are_answered_in_order(server: MetricsServer) -> None:
    c = await connect(server)
    await c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert [(await c.response())[2] for _ in range(3)] == [b"ok\n", b"ready\n", b"not found\n"]
    assert await c.closed()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1 extra\r\n\r\n", 400),
        (b"G@T /metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", 400),  # space before the colon (smuggling)
        (b"GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /%ff HTTP/1.1\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 413),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-H: 1\r\n" * 101 + b"\r\n", 431),
        (b"GET /metrics HTTP/1.1\r\n" + (b"X-Header: " + b"c" * 8000 + b"\r\n") * 5 + b"\r\n", 431),  # 40 KiB head
    ],
    ids=lambda v: v[:40].decode("latin-1").replace("\r\n", "|") if isinstance(v, bytes) else str(v),
)
async def test_malformed_or_oversized_requests_get_an_error_and_the_connection_closed(
    server: MetricsServer, request_bytes: bytes, status: int
) -> None:
    c = await connect(server)
    await c.send(request_bytes)
    got, headers, _ = await c.response()
    assert got == status and headers["connection"] == "close"
    if status == 405:
        assert headers["allow"] == "GET, HEAD"
    assert await c.closed()
    counted = {s.labels["reason"]: s.value for s in server.http.self_metrics("agent") if s.value}
    assert counted == {httpserver._BAD_REASON[status]: 1.0}


async def test_a_head_larger_than_the_limit_without_an_end_is_refused_before_it_ends(server: MetricsServer) -> None:
    c = await connect(server)
    await c.send(b"GET /metrics HTTP/1.1\r\n" + b"X-H: " + b"d" * 100 + b"\r\n")
    for _ in range(400):  # 40 KiB of headers that never end
        c.writer.write(b"X-Header-Field: " + b"e" * 80 + b"\r\n")
    await c.writer.drain()
    assert (await c.response())[0] == 431 and await c.closed()


async def test_slowloris_gets_408_after_the_head_timeout_and_silent_idle_connections_are_closed(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT", 0.5)
    monkeypatch.setattr(httpserver, "KEEPALIVE_TIMEOUT", 0.8)
    slow = await connect(server)
    t0 = time.monotonic()
    await slow.send(b"GET /metrics HTTP/1.1\r\n")
    for _ in range(2):  # a header line every 0.2 s, and no end of the head
        await asyncio.sleep(0.2)
        await slow.send(b"X-Slow: 1\r\n")
    status, headers, _ = await slow.response()
    assert status == 408 and headers["connection"] == "close" and time.monotonic() - t0 < 3
    assert server.http.bad_requests["head_timeout"] == 1
    silent = await connect(server)
    assert await silent.closed()  # nothing sent: closed without an answer
    kept = await connect(server)
    await kept.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await kept.response())[0] == 200
    t0 = time.monotonic()
    assert await kept.closed()  # the keep-alive timeout
    assert 0.5 < time.monotonic() - t0 < 5


async def test_openmetrics_and_gzip_are_negotiated(server: MetricsServer) -> None:
    c = await connect(server)
    await c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n"
                 b"Accept-Encoding: gzip\r\n\r\n")
    status, headers, body = await c.response()
    assert status == 200 and headers["content-type"] == OM_CT and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body).endswith(b"# EOF\n")
    await c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;q=0\r\nAccept-Encoding: gzip;q=0\r\n\r\n")
    status, headers, body = await c.response()
    assert headers["content-type"] == TEXT_CT and "content-encoding" not in headers and b"demo_value" in body
    c.close()


async def test_a_client_that_never_reads_is_disconnected_after_the_write_timeout(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(httpserver, "WRITE_TIMEOUT", 0.5)
    # a big body, requested many times without reading: the server's send buffer fills up
    server.store.update("demo", [Sample("demo_value", GAUGE, float(i), {"k": f"v{i}"}) for i in range(20000)])
    _r, w = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
    sock = w.get_extra_info("socket")
    import socket as socketmod

    sock.setsockopt(socketmod.SOL_SOCKET, socketmod.SO_RCVBUF, 4096)
    w.transport.pause_reading()
    w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
    await w.drain()
    listener = server._listener
    await asyncio.sleep(0.2)
    assert listener.open == 1
    deadline = time.monotonic() + 10
    while listener.open and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert listener.open == 0  # aborted: the stuck reader no longer holds a connection
    w.close()
