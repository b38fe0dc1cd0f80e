"""HTTP(S) client that posts sealed batches to the ingest (contract: docs/shipping.md).

TLS verification stays on (system CA store, or ``ca_file``); mutual TLS with
``client_cert``/``client_key``. Every outcome is classified as ``acked`` (2xx:
delete from the spool), ``drop`` (a 4xx that can never succeed: delete and
count) or ``retry`` (connection errors, timeouts, 408, 425, 429, 5xx and anything
unexpected: keep and back off).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import ssl
import time
from email.utils import parsedate_to_datetime
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from hostmond.core import keys, wire
from hostmond.core.errors import KeyFileError

ACKED = "acked"
RETRY = "retry"
DROP = "drop"

DROP_STATUSES = frozenset({400, 401, 403, 409, 413, 422})
RETRY_REASONS = ("connect", "timeout", "tls", "http_408", "http_425", "http_429", "http_5xx", "http_other")
BATCHES_PATH = "/v1/batches"
MAX_REASON_LEN = 64


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


class Sender:
    """Posts envelopes to ``{ingest_url}/v1/batches``; one aiohttp session per Sender."""

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
        self._ssl: ssl.SSLContext | bool = (
            make_ssl_context(ca_file, client_cert, client_key) if self.url.startswith("https://") else False
        )
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=4)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, headers={"User-Agent": "hostmon-agent"}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def send(self, blob: bytes, seq: int | None = None, timeout: float | None = None) -> SendResult:
        """Post one envelope; ``timeout`` overrides the total request timeout for this attempt."""
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = aiohttp.ClientTimeout(total=timeout, sock_connect=self._timeout.sock_connect)
        headers = {"Content-Type": wire.CONTENT_TYPE}
        if self.agent_id:
            headers["X-Hostmon-Agent-Id"] = self.agent_id
        if seq is not None:
            headers["X-Hostmon-Batch-Seq"] = str(seq)
        try:
            async with self._get_session().post(self.url, data=blob, headers=headers, **kw) as resp:
                body = await resp.content.read(4096)
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorCertificateError:
            return SendResult(RETRY, reason="tls")
        except aiohttp.ClientSSLError:
            return SendResult(RETRY, reason="tls")
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return SendResult(RETRY, reason="timeout")
        except (aiohttp.ClientError, OSError):
            return SendResult(RETRY, reason="connect")
        return answer_result(status, _json(body), retry_after)


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
            if timeout is None:
                status, info, headers = await self.deliver(blob)
            else:
                status, info, headers = await asyncio.wait_for(self.deliver(blob), timeout)
        except TimeoutError:
            return SendResult(RETRY, reason="timeout")
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        return answer_result(status, info, retry_after)

    async def close(self) -> None:
        return None
