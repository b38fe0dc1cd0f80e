"""Prometheus remote-write 1.0 sink: protobuf ``WriteRequest``, snappy block compression.

The message is small enough to encode by hand (proto3 wire format)::

    message WriteRequest { repeated TimeSeries timeseries = 1; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }   // ms since epoch

Labels are sorted by name and include ``__name__`` and ``tenant_id``; samples of
one series are sorted by time. The body is snappy *block* compressed
(``cramjam.snappy.compress_raw``) and sent with ``Content-Encoding: snappy``,
``Content-Type: application/x-protobuf`` and
``X-Prometheus-Remote-Write-Version: 0.1.0``.

Label names that are not Prometheus names are sanitised (``tenant-id`` ->
``tenant_id``); a sample whose label names collide after that is refused by the
ingest before it gets here (422 ``label_collision``), so one label can never
overwrite another, the tenant's least of all. With ``tenant_header`` set (for
Mimir, Cortex, VictoriaMetrics cluster), each batch is sent as one request per
tenant, that header (``X-Scope-OrgID``) carrying the tenant id.

A batch counts as written only after the receiver answered 2xx. A 5xx, a 429, a
timeout or a connection error is *retryable*: the ingest answers the agent 503
and the agent sends the batch again later (receivers accept an identical
sample again, so a retry after a partial success is harmless). Any other 4xx
means the receiver will never take these samples (out of bounds, bad labels):
retrying cannot help, so the samples are counted as dropped and logged, and the
batch is stored in SQLite as usual.
"""

from __future__ import annotations

import re
import ssl
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

# aiohttp and cramjam are imported where they are used: the batch decoder imports this module
# for sanitize_label_name on every batch, and the agent's embedded ingest (no remote write) must
# not load an HTTP client and a compression library for that (~15 MB of RSS).

_LABEL_OK = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC_OK = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_BAD = re.compile(r"[^a-zA-Z0-9_]")
_BAD_METRIC = re.compile(r"[^a-zA-Z0-9_:]")

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "hostmon-ingest/0.1",
}


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def encode_label(name: str, value: str) -> bytes:
    return _len_field(0x0A, name.encode()) + _len_field(0x12, value.encode())


def encode_sample(value: float, timestamp_ms: int) -> bytes:
    return b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)


def encode_timeseries(labels: Iterable[tuple[str, str]], samples: Iterable[tuple[float, int]]) -> bytes:
    parts = [_len_field(0x0A, encode_label(n, v)) for n, v in labels]
    parts.extend(_len_field(0x12, encode_sample(v, t)) for v, t in samples)
    return b"".join(parts)


def sanitize_label_name(name: str) -> str:
    if _LABEL_OK.match(name):
        return name
    fixed = _BAD.sub("_", name)
    return fixed if fixed and not fixed[0].isdigit() else "_" + fixed


def sanitize_metric_name(name: str) -> str:
    if _METRIC_OK.match(name):
        return name
    fixed = _BAD_METRIC.sub("_", name)
    return fixed if fixed and not fixed[0].isdigit() else "_" + fixed


def build_series(
    samples: Iterable[tuple[str, Mapping[str, str], float, float]],
) -> dict[tuple[tuple[str, str], ...], list[tuple[float, int]]]:
    """Group ``(name, labels, value, ts_seconds)`` into series keyed by their sorted labels."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, int]]] = {}
    for name, labels, value, ts in samples:
        pairs = {sanitize_label_name(k): v for k, v in labels.items()}
        if len(pairs) != len(labels) or "__name__" in pairs:
            # "tenant-id" would overwrite "tenant_id": the ingest refuses such a batch (422
            # label_collision, ingest.decode.check_records) before it gets here.
            raise ValueError(f"labels of {name!r} collide after sanitising: {sorted(labels)!r}")
        pairs["__name__"] = sanitize_metric_name(name)
        key = tuple(sorted(pairs.items()))
        series.setdefault(key, []).append((float(value), round(ts * 1000)))
    return series


def encode_write_request(samples: Iterable[tuple[str, Mapping[str, str], float, float]]) -> bytes:
    """The uncompressed protobuf ``WriteRequest`` for these samples."""
    out = []
    for key, points in build_series(samples).items():
        points.sort(key=lambda p: p[1])
        out.append(_len_field(0x0A, encode_timeseries(key, points)))
    return b"".join(out)


def compress(body: bytes) -> bytes:
    """Snappy block format (not the framed format), as remote write requires."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(body))


class RemoteWriteError(Exception):
    """A remote-write request failed. ``retryable`` says whether sending again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class RemoteWriteSink:
    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 30.0,
        ca_file: str = "",
        headers: Mapping[str, str] | None = None,
        tenant_header: str = "",
    ) -> None:
        import aiohttp

        self.url = url
        self.tenant_header = tenant_header
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.ca_file = ca_file
        self.headers = {**(headers or {}), **HEADERS}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        import aiohttp

        ssl_ctx: Any = None
        if self.url.startswith("https://"):
            ssl_ctx = ssl.create_default_context(cafile=self.ca_file or None)  # verification stays on
        self._session = aiohttp.ClientSession(
            timeout=self.timeout, connector=aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else True)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, samples: list[tuple[str, Mapping[str, str], float, float]]) -> int:
        """Send the samples; returns the HTTP status (2xx). Raises RemoteWriteError."""
        if not samples:
            return 204
        return await self.write_body(compress(encode_write_request(samples)))

    async def write_body(self, body: bytes, tenant: str = "") -> int:
        """Send an already encoded and compressed WriteRequest. Raises RemoteWriteError.

        With a ``tenant_header`` and a ``tenant``, the request carries that header set to the
        tenant (Mimir/Cortex ``X-Scope-OrgID``); the body must hold that tenant's series only.
        """
        import aiohttp

        if self._session is None:
            raise RuntimeError("remote write sink not started")
        headers = self.headers
        if self.tenant_header and tenant:
            headers = {**headers, self.tenant_header: tenant}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                text = (await resp.content.read(512)).decode("utf-8", "replace").strip()
                if 200 <= resp.status < 300:
                    return resp.status
                retryable = resp.status >= 500 or resp.status == 429
                raise RemoteWriteError(f"receiver answered {resp.status}: {text}", retryable=retryable, status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise RemoteWriteError(f"{type(e).__name__}: {e}", retryable=True) from None
