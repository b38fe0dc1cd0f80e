"""The ingest HTTP server: ``POST /v1/batches``, ``GET /metrics``, ``GET /healthz``, ``GET /readyz``.

Endpoint security comes from the ``[web]`` section (:mod:`hostmond.web`, the
same code and keys as the agent's /metrics): TLS with certificate rotation,
mutual TLS (a refused handshake is counted), a rate limit per client address
(429 with ``Retry-After``, which the agent's sender retries) and basic/bearer
authentication for every path but ``web.open_paths`` and ``/v1/batches`` (a
batch is authenticated by its signature, and the sender sends no HTTP
credentials). The refusals are counted in
``hostmon_web_requests_refused_total{server="ingest",reason}`` on /metrics.
``/healthz`` answers while the process serves; ``/readyz`` answers 200 once the
SQLite sink is open and 503 while it is not (starting, shutting down).

The work on a batch (the checks in order, deduplication, storage, the audit trail
and the counters; its answers and their statuses) is
:class:`hostmond.ingest.core.IngestCore`, described there; this module adds the
listener, the endpoint security and the handlers (a body's content type, size and
upload time are checked here, before the core sees it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web
from hostmond.ingest.config import IngestConfig, LoadedKeys
from hostmond.ingest.core import (  # noqa: F401 - re-exported: the names tests and tools use
    FAULT_ENV,
    INGEST_SPECS,
    STORAGE_PROBE_SECONDS,
    Answer,
    IngestCore,
    IngestMetrics,
    log,
)
from hostmond.ingest.decode import Rejected
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hostmond.core import wire
from hostmond.core.errors import ConfigError
from hostmond.core.validate import parse_listen
from hostmond.web.listen import CappedListener
from hostmond.web.aiohttp_security import PrometheusCollector, apply_web_security, security_of

BATCH_PATH = "/v1/batches"


class _WebSecurityCollector:
    """The endpoint security self-metrics of the ingest's current aiohttp app (none before start)."""

    def __init__(self, server: IngestServer) -> None:
        self._server = server

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[object]:
        app = self._server.web_app
        if app is not None:
            yield from PrometheusCollector(app).collect()


def _json(a: Answer) -> web.Response:
    return web.json_response(a.body, status=a.status, headers=a.headers)


class IngestServer(IngestCore):
    """The ingest over HTTP: an :class:`IngestCore` behind an aiohttp application and our accept loop."""

    def __init__(self, cfg: IngestConfig, keys: LoadedKeys | None = None) -> None:
        super().__init__(cfg, keys)
        self.metrics.registry.register(_WebSecurityCollector(self))  # type: ignore[arg-type]
        self._listener: CappedListener | None = None
        self._runner: web.AppRunner | None = None
        self.web_app: web.Application | None = None
        self.url = ""

    # -- life cycle -------------------------------------------------------------
    def app(self) -> web.Application:
        # Body size is enforced by the handler (413 with a counted reason);
        # aiohttp's own cap is set just above it as a backstop.
        app = web.Application(client_max_size=self.cfg.limits.max_body_bytes + 1)
        app.router.add_post(BATCH_PATH, self.handle_batch)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        app.router.add_get("/readyz", self.handle_ready)
        app.cleanup_ctx.append(self._lifecycle)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        await self.open()
        try:
            yield
        finally:
            await self.close()

    async def start(self, host: str | None = None, port: int | None = None) -> str:
        """Listen (config ``listen`` unless host/port given); returns the base URL."""
        h, p = parse_listen(self.cfg.listen)
        host = h if host is None else host
        port = p if port is None else port
        app = self.app()
        try:
            ssl_ctx = apply_web_security(app, self.cfg.web, server="ingest", own_auth_paths=(BATCH_PATH,))
        except ConfigError as e:  # name the ingest's config file, not "<config>"
            raise ConfigError(self.cfg.source, e.key, e.reason) from None
        self.web_app = app
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # Our own accept loop: a connection cap sized to the fd limit (hostmond.web.listen).
        self._listener = CappedListener(self._runner.server, ssl_ctx, self.cfg.web.max_connections, server="ingest")
        sec = security_of(app)
        if sec is not None:
            sec.listener = self._listener
        try:
            bound = await self._listener.start(host, port)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        scheme = "https" if ssl_ctx else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------
    async def handle_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def handle_ready(self, request: web.Request) -> web.Response:
        return _json(self.readiness())

    async def handle_batch(self, request: web.Request) -> web.Response:
        try:
            blob = await self._receive(request)
        except Rejected as e:
            return _json(self._reject(e))
        return _json(await self.accept(blob))

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.cfg.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise Rejected("body_too_large", f"Content-Length {request.content_length} > {limit}")
        buf = bytearray()
        while True:
            chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            buf += chunk
            if len(buf) > limit:
                raise Rejected("body_too_large", f"more than {limit} bytes")
        return bytes(buf)

    async def _receive(self, request: web.Request) -> bytes:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != wire.CONTENT_TYPE:
            raise Rejected("wrong_content_type", f"expected {wire.CONTENT_TYPE}")
        lim = self.cfg.limits
        # Receiving a body takes an upload slot, bounded in number and in time: a client that
        # never finishes its body (8 stalled uploads stopped every agent before) is answered 408
        # after body_timeout_seconds and holds no inflight slot meanwhile.
        if self._uploads >= lim.max_uploads:
            raise Rejected("busy", "too many batch uploads in progress")
        self._uploads += 1
        self.metrics.uploads.set(self._uploads)
        try:
            try:
                async with asyncio.timeout(lim.body_timeout_seconds):
                    blob = await self._read_body(request)
            except TimeoutError:
                raise Rejected("body_timeout", f"the body did not arrive within {lim.body_timeout_seconds:g} s") from None
        finally:
            self._uploads -= 1
            self.metrics.uploads.set(self._uploads)
        return blob


async def serve(cfg: IngestConfig, stop: asyncio.Event | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the ingest until ``stop`` is set (or SIGTERM/SIGINT)."""
    # Handlers first: a SIGTERM right after the "listening" line must stop cleanly, not kill.
    ev = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, ev.set)
    server = IngestServer(cfg)
    url = await server.start()
    try:
        log.info("ingest listening on %s (%d agents enrolled, %d keys)", url, len(server.keys.agents), len(server.keys.private))
        if on_ready is not None:
            on_ready(url)
        await ev.wait()
    finally:
        await server.stop()
