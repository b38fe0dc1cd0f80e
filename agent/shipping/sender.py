"""HTTP(S) client that posts sealed batches to the ingest (contract: docs/shipping.md).

TLS verification stays on (system CA store, or ``ca_file``; the host name is
checked); mutual TLS with ``client_cert``/``client_key``. Every outcome is
classified as ``acked`` (2xx: delete from the spool), ``drop`` (a 4xx that can
never succeed: delete and count) or ``retry`` (connection errors, timeouts, 408,
425, 429, 5xx and anything unexpected: keep and back off).

The client is the standard library's ``http.client`` run in a worker thread (at
most :data:`MAX_CONNECTIONS`), not aiohttp: the agent process imports no aiohttp
(its client stack alone is ~13 MB of RSS). Connections are kept alive and
reused; a reused connection the ingest closed meanwhile is retried once on a new
one (batches are idempotent: the ingest dedupes on agent and sequence number).
``connect_timeout`` bounds the TCP connect and TLS handshake, ``request_timeout``
the whole attempt: when it passes, the attempt is answered ``retry/timeout`` at
once and its socket is shut down, which ends the blocked worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from hostmond.core import keys, wire
from hostmond.core.aio import consume
from hostmond.core.errors import KeyFileError

ACKED = "acked"
RETRY = "retry"
DROP = "drop"

DROP_STATUSES = frozenset({400, 401, 403, 409, 413, 422})
RETRY_REASONS = ("connect", "timeout", "tls", "http_408", "http_425", "http_429", "http_5xx", "http_other")
BATCHES_PATH = "/v1/batches"
MAX_REASON_LEN = 64
MAX_CONNECTIONS = 4  # worker threads, each with at most one connection in use
MAX_BODY = 4096  # bytes of an answer read (the ingest's JSON status); a longer answer closes the connection


@dataclasses.dataclass(frozen=True)
class SendResult:
    outcome: str  # ACKED, DROP or RETRY
    status: int | None = None  # HTTP status, None for connection-level failures
    reason: str = ""  # RETRY: one of RETRY_REASONS; DROP: the ingest's reason token (capped)
    retry_after: float | None = None
    duplicate: bool = False


def classify(status: int) -> tuple[str, str]:
    """(outcome, retry reason) for an HTTP status."""
    if 200 <= status < 300:
        return ACKED, ""
    if status in DROP_STATUSES:
        return DROP, ""
    if status == 429:
        return RETRY, "http_429"
    if status == 408:
        return RETRY, "http_408"
    if status == 425:  # "too early": the batch is dated in the ingest's future (clock skew)
        return RETRY, "http_425"
    if 500 <= status < 600:
        return RETRY, "http_5xx"
    return RETRY, "http_other"


def backoff_delay(attempt: int, first: float, maximum: float, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(maximum, first * 2**attempt)]."""
    ceiling = min(maximum, first * (2.0 ** min(attempt, 62)))
    return (rng or random).uniform(0.0, ceiling)


def retry_wait(
    attempt: int, first: float, maximum: float, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """The wait before the next attempt: backoff, raised to Retry-After, capped at ``maximum``."""
    wait = backoff_delay(attempt, first, maximum, rng)
    if retry_after is not None:
        wait = max(wait, retry_after)
    return min(wait, maximum)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime  # only for the rare date form

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def make_ssl_context(ca_file: str = "", client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """A verifying client TLS context; optional custom CA file and client certificate."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    # create_default_context already sets CERT_REQUIRED and check_hostname; say it again for readers.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    if client_cert:
        if client_key:
            try:
                keys.check_private_permissions(client_key)
            except FileNotFoundError:
                raise KeyFileError(f"{client_key}: client key file not found") from None
        ctx.load_cert_chain(client_cert, client_key or None)
    return ctx


def _ascii(host: str) -> str | bytes:
    """An ASCII host name as bytes: socket.getaddrinfo and ssl encode a str host with the 'idna' codec,
    which loads encodings.idna, stringprep and unicodedata (~0.5 MB of RSS) for nothing."""
    return host.encode("ascii") if host.isascii() else host


def _create_connection(address: tuple[str, int], timeout: float, source_address: Any = None) -> socket.socket:
    return socket.create_connection((_ascii(address[0]), address[1]), timeout, source_address)  # type: ignore[arg-type]


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP (no proxy tunnel here), then TLS with the host name checked
        self.sock = self._context.wrap_socket(self.sock, server_hostname=_ascii(self.host))  # type: ignore[attr-defined]


class _Timeout(Exception):
    """The attempt passed ``request_timeout`` (raised on the event loop side)."""


class Sender:
    """Posts envelopes to ``{ingest_url}/v1/batches`` with http.client in worker threads."""

    def __init__(
        self,
        ingest_url: str,
        *,
        agent_id: str = "",
        ca_file: str = "",
        client_cert: str = "",
        client_key: str = "",
        connect_timeout: float = 5.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.url = ingest_url.rstrip("/") + BATCHES_PATH
        self.agent_id = agent_id
        u = urlsplit(self.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"ingest_url must be an http:// or https:// URL with a host, not {ingest_url!r}")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self._ssl: ssl.SSLContext | None = make_ssl_context(ca_file, client_cert, client_key) if self._https else None
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._idle: list[http.client.HTTPConnection] = []  # kept-alive connections, most recent last
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    async def __aenter__(self) -> Sender:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- the blocking part (worker thread) ----------------------------------------

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            conn = _HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        conn._create_connection = _create_connection  # type: ignore[attr-defined]
        return conn

    def _post(self, blob: bytes, headers: dict[str, str], deadline: float, holder: list[Any]) -> tuple[int, bytes, str | None]:
        """One attempt; ``holder[0]`` is the connection in use (for the loop to shut down on timeout)."""
        if holder[1] or time.monotonic() >= deadline:
            raise TimeoutError("the attempt timed out before it started")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None
        while True:
            if conn is None:
                conn = self._new_connection(max(0.001, min(self.connect_timeout, deadline - time.monotonic())))
                holder[0] = conn
                conn.connect()  # TCP connect and TLS handshake, bounded by connect_timeout
                if holder[1]:  # given up while connecting: the loop found no socket to shut down then
                    conn.close()
                    raise TimeoutError("the attempt was given up while connecting")
            holder[0] = conn
            assert conn.sock is not None
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                conn.request("POST", self._path, body=blob, headers=headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not reused or holder[1]:  # a fresh connection failing is an answer; so is a timeout
                    raise
                conn, reused = None, False  # the ingest had closed the kept-alive connection: once more
                continue
            except BaseException:
                conn.close()
                raise
            try:
                body = resp.read(MAX_BODY)
                complete = resp.isclosed() or not resp.read(1)
            except BaseException:
                conn.close()
                raise
            status = resp.status
            retry_after = resp.getheader("Retry-After")
            if complete and not resp.will_close and not holder[1] and not self._closed:
                with self._lock:
                    if len(self._idle) < MAX_CONNECTIONS:
                        self._idle.append(conn)
                        conn = None
            if conn is not None:
                conn.close()
            return status, body, retry_after

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="hostmon-sender")
        return self._executor

    # -- the event loop side -------------------------------------------------------

    async def send(self, blob: bytes, seq: int | None = None, timeout: float | None = None) -> SendResult:
        """Post one envelope; ``timeout`` overrides the total request timeout for this attempt."""
        total = self.request_timeout if timeout is None else timeout
        headers = {"Content-Type": wire.CONTENT_TYPE, "User-Agent": "hostmon-agent"}
        if self.agent_id:
            headers["X-Hostmon-Agent-Id"] = self.agent_id
        if seq is not None:
            headers["X-Hostmon-Batch-Seq"] = str(seq)
        holder: list[Any] = [None, False]  # [connection in use, timed out]
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool(), self._post, blob, headers, time.monotonic() + total, holder)
        # asyncio.timeout, not wait_for: 3.11's wait_for can lose the shipper's cancellation (hostmond.core.aio)
        deadline = asyncio.timeout(total)
        try:
            try:
                async with deadline:
                    status, body, retry_after_value = await asyncio.shield(fut)
            except TimeoutError:
                if not deadline.expired():
                    raise  # a socket timeout in the worker
                holder[1] = True
                _shutdown(holder[0])  # ends the worker's blocking call; the connection is not reused
                consume(fut)
                raise _Timeout from None
            except asyncio.CancelledError:  # the shipper stops: do not leave the worker blocked
                holder[1] = True
                _shutdown(holder[0])
                consume(fut)
                raise
        except _Timeout:
            return SendResult(RETRY, reason="timeout")
        except ssl.SSLError:  # includes SSLCertVerificationError; before OSError, its base
            return SendResult(RETRY, reason="tls")
        except TimeoutError:  # socket timeouts in the worker (connect, read)
            return SendResult(RETRY, reason="timeout")
        except (OSError, http.client.HTTPException, ValueError):
            return SendResult(RETRY, reason="connect")
        return answer_result(status, _json(body), parse_retry_after(retry_after_value))


def _shutdown(conn: http.client.HTTPConnection | None) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            # the plain socket's shutdown (SSLSocket.shutdown would drop its SSL object under the worker)
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _json(body: bytes) -> dict[str, Any]:
    try:
        v = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return v if isinstance(v, dict) else {}


def answer_result(status: int, info: dict[str, Any], retry_after: float | None) -> SendResult:
    """The outcome of an ingest's answer (status and JSON body), the same for HTTP and in-process."""
    outcome, why = classify(status)
    if outcome == ACKED:
        return SendResult(ACKED, status, duplicate=info.get("status") == "duplicate")
    if outcome == DROP:
        reason = info.get("reason")
        if not isinstance(reason, str) or not reason.replace("_", "").isalnum():
            reason = "unspecified"
        return SendResult(DROP, status, reason[:MAX_REASON_LEN])
    return SendResult(RETRY, status, why, retry_after)


# An ingest in this process: takes one batch envelope, answers (HTTP status, JSON body, headers).
Deliver = Callable[[bytes], Awaitable[tuple[int, dict[str, Any], dict[str, str] | None]]]


class LocalSender:
    """Hands sealed batches to an ingest running in this process (the embedded ingest).

    The batch is the same signed, encrypted envelope a central ingest gets and goes through
    the same checks and the same durable store; only the socket and the HTTP stack are gone.
    The answers are classified exactly as :class:`Sender` classifies HTTP answers.
    """

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver

    async def send(self, blob: bytes, seq: int | None = None, timeout: float | None = None) -> SendResult:
        try:
            async with asyncio.timeout(timeout):
                status, info, headers = await self.deliver(blob)
        except TimeoutError:
            return SendResult(RETRY, reason="timeout")
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        return answer_result(status, info, retry_after)

    async def close(self) -> None:
        return None
