"""The accept loop of both servers: a cap on open connections, sized to the fd limit.

asyncio's own accept loop (``loop.create_server``, which aiohttp's ``TCPSite``
uses, and which the agent's own server would use) accepts until the process runs out of file descriptors. Then every
``accept()`` fails with ``EMFILE``: asyncio logs "socket.accept() out of system
resource" with a traceback up to a hundred times per wake-up and schedules as
many retries, so 1,100 idle connections produced 220k tracebacks (120 MB of
log) in 40 s, honest requests timed out and the agent's collectors failed to
open their files. This module replaces that loop:

- at most ``web.max_connections`` connections are open at once (TLS handshakes
  included), lowered at start to fit the file-descriptor limit with a quarter
  of it kept for everything else (SQLite, collectors, worker pipes);
- at the cap, the oldest *idle* connection (no request being handled: a
  keep-alive, a client that never sent a request, a slowloris still sending
  headers) is closed for the new one and counted; when every connection is
  busy with a request, nothing more is accepted until one closes: new clients
  wait in the kernel's listen backlog instead of costing descriptors;
- should ``accept()`` fail anyway (another part of the process used the
  descriptors), it is logged once, with a summary a minute while it lasts and
  one line when accepting works again, and the loop waits a little.

At start the soft ``RLIMIT_NOFILE`` is raised to the hard limit (as Go programs
do), so systemd's default soft limit of 1024 does not cap a server that
``LimitNOFILE=`` allows more.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import resource
import socket
import ssl
import time
from typing import Any

from hostmond.core.aio import cancel_and_wait

log = logging.getLogger("hostmon.web")

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKLOG = 128
MIN_CONNECTIONS = 8
HANDSHAKE_TIMEOUT = 10.0


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most 2**20); returns (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    want = min(want, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    return int(soft if soft != resource.RLIM_INFINITY else 1 << 20), int(hard if hard != resource.RLIM_INFINITY else 1 << 20)


def connection_limit(configured: int, nofile: int) -> int:
    """``configured``, lowered to leave a quarter (at least 32) of ``nofile`` descriptors for the rest."""
    usable = nofile - max(32, nofile // 4)
    return max(MIN_CONNECTIONS, min(configured, usable))


class ListenerProtocol(asyncio.Protocol):
    """What the listener needs of a protocol that is not aiohttp's: the transport, whether a
    request is being handled (``busy``: not evicted at the cap), and a call to ``on_lost``
    (set by the listener) from ``connection_lost``."""

    transport: asyncio.BaseTransport | None = None
    busy: bool = False
    on_lost: Any = None


class _Conn:
    __slots__ = ("handler", "listener", "released")

    def __init__(self, listener: CappedListener) -> None:
        self.listener = listener
        self.handler: Any = None
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.listener._released(self)


class CappedListener:
    """Listen on ``host:port`` and hand accepted connections to a protocol factory.

    The factory is either an aiohttp ``web.Server`` (the ingest; after
    ``await runner.setup()``)::

        listener = CappedListener(runner.server, ssl_ctx, max_connections, server="ingest")
        port = await listener.start(host, port)
        ...
        await listener.stop()   # before runner.cleanup()

    or any callable making :class:`asyncio.Protocol` objects that follow the
    small contract of :class:`ListenerProtocol` (the agent's own server,
    :mod:`hostmond.web.httpserver`); ``close_connections()`` then closes the
    ones still open after ``stop()``.
    """

    def __init__(self, protocol_factory: Any, ssl_context: ssl.SSLContext | None, max_connections: int, *, server: str) -> None:
        self.factory = protocol_factory
        self.ssl = ssl_context
        self.server = server
        self.configured = max_connections
        self.limit = max_connections
        self.open = 0
        self.evicted = 0  # idle connections closed to make room (the "dropped" counter)
        self.waits = 0  # times accepting paused: every connection was busy
        self.accept_errors = 0  # accept() failures for lack of descriptors or memory
        self._conns: dict[Any, _Conn] = {}  # handler -> record, oldest first
        self._freed = asyncio.Event()
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._failing_since: float | None = None
        self._failed_logged = float("-inf")
        self._spell_logged = False  # the current spell of accept() failures was logged (so is its end)
        # aiohttp's web.Server is told of every lost connection (chained onto below); our own
        # protocols call on_lost instead.
        self._aiohttp = callable(getattr(protocol_factory, "connection_lost", None))
        if self._aiohttp:
            self._hook(protocol_factory)

    # -- bookkeeping -------------------------------------------------------------

    def _hook(self, server: Any) -> None:
        orig = server.connection_lost

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            orig(handler, exc)
            self._lost(handler)

        server.connection_lost = connection_lost

    def _lost(self, handler: Any) -> None:
        rec = self._conns.pop(handler, None)
        if rec is not None:
            rec.release()

    def _released(self, rec: _Conn) -> None:
        self.open -= 1
        if rec.handler is not None:
            self._conns.pop(rec.handler, None)
        self._freed.set()

    def _evict_idle(self) -> bool:
        """Close the oldest connection that is not handling a request; False when all are busy."""
        for handler, rec in self._conns.items():
            transport = getattr(handler, "transport", None)
            busy = getattr(handler, "_request_in_progress", False) if self._aiohttp else handler.busy
            if transport is None or busy:
                continue
            transport.abort()  # at once: a TLS close_notify would keep the descriptor
            self.evicted += 1
            rec.release()
            return True
        return False

    # -- life cycle --------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Bind and start accepting; returns the bound port (for port 0)."""
        soft, _hard = raise_nofile_limit()
        self.limit = connection_limit(self.configured, soft)
        if self.limit < self.configured:
            log.warning(
                "web[%s]: max_connections lowered from %d to %d to fit the open-file limit %d (raise LimitNOFILE= to allow more)",
                self.server, self.configured, self.limit, soft,
            )
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        bound = port
        try:
            for family, type_, proto, _canon, addr in infos:
                if (family, addr) in seen:
                    continue
                seen.add((family, addr))
                sock = socket.socket(family, type_, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if bound:
                    addr = (addr[0], bound, *addr[2:])
                sock.bind(addr)
                bound = sock.getsockname()[1]
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        for sock in self._sockets:
            self._tasks.append(loop.create_task(self._accept_loop(sock), name=f"hostmon-web-{self.server}-accept"))
        return int(bound)

    def _close_sockets(self) -> None:
        for s in self._sockets:
            s.close()
        self._sockets.clear()

    def close_connections(self) -> None:
        """Close every open connection at once (for protocols other than aiohttp's, after ``stop()``)."""
        for handler in list(self._conns):
            transport = getattr(handler, "transport", None)
            if transport is not None:
                transport.abort()

    async def stop(self) -> None:
        """Stop accepting (open connections are left to ``runner.cleanup()`` or ``close_connections()``)."""
        for t in [*self._tasks, *self._pending]:
            t.cancel()
        for t in [*self._tasks, *self._pending]:
            await cancel_and_wait(t)
        self._tasks.clear()
        self._close_sockets()

    # -- accepting ---------------------------------------------------------------

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            paused = False
            while self.open >= self.limit:
                # At the cap: only when a new connection is actually waiting, make room for it
                # by closing the oldest idle one; when every connection is busy, wait until one
                # closes or (checked every half second) finishes its request and becomes idle.
                await self._readable(sock)
                if self.open < self.limit or self._evict_idle():
                    break
                if not paused:
                    paused = True
                    self.waits += 1
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # not wait_for: see hostmond.core.aio
                        await self._freed.wait()
            try:
                try:
                    conn, _addr = sock.accept()
                except (BlockingIOError, InterruptedError):
                    conn, _addr = await loop.sock_accept(sock)
            except OSError as e:
                if e.errno in RESOURCE_ERRNOS:
                    self._accept_failed(e)
                    self._evict_idle()
                    await asyncio.sleep(0.1)
                    continue
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the client gave up before we accepted
                # Anything else: never let the accept loop die (the server would stop serving).
                self._accept_failed(e)
                await asyncio.sleep(0.1)
                continue
            if self._failing_since is not None:
                self._accept_recovered()
            self.open += 1
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._connect(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            await asyncio.sleep(0)  # let the new connection start before accepting the next one

    async def _readable(self, sock: socket.socket) -> None:
        """Wait until a connection is pending on the listening socket (without accepting it)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(sock.fileno(), ready)
        try:
            await fut
        finally:
            loop.remove_reader(sock.fileno())

    def _accept_recovered(self) -> None:
        if self._spell_logged and self._failing_since is not None:
            log.info(
                "web[%s]: accepting connections again after %.0f s (%d accept() failures, counted)",
                self.server, time.monotonic() - self._failing_since, self.accept_errors,
            )
        self._failing_since = None
        self._spell_logged = False

    def _accept_failed(self, e: OSError) -> None:
        self.accept_errors += 1
        now = time.monotonic()
        if self._failing_since is None and now - self._failed_logged >= 60:
            # the first failure of a spell, and none logged in the last minute: accepts that succeed
            # in between (idle connections closed for them) do not make every failure a new spell
            self._failing_since = now
            self._failed_logged = now
            self._spell_logged = True
            log.error(
                "web[%s]: cannot accept connections: %s (%d open, limit %d); closing idle connections and retrying, "
                "logged once a minute while it lasts",
                self.server, e.strerror or e, self.open, self.limit,
            )
        elif self._failing_since is None:
            self._failing_since = now  # a new spell within the minute: counted, not logged
        elif now - self._failed_logged >= 60:
            self._failed_logged = now
            log.error("web[%s]: still cannot accept connections: %s (%d failures so far)", self.server, e.strerror or e, self.accept_errors)

    async def _connect(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        rec = _Conn(self)

        def factory() -> Any:
            handler = self.factory()
            rec.handler = handler
            self._conns[handler] = rec
            if not self._aiohttp:
                handler.on_lost = functools.partial(self._lost, handler)
            return handler

        try:
            await loop.connect_accepted_socket(
                factory, conn, ssl=self.ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl is not None else None
            )
        except BaseException:  # noqa: BLE001 - handshake failed or timed out, client gone, shutting down
            conn.close()
            rec.release()
            if rec.handler is not None:
                self._conns.pop(rec.handler, None)
            return

    # -- self-metrics ----------------------------------------------------------

    def stats(self) -> dict[str, float]:
        return {
            "connections": float(self.open),
            "connections_max": float(self.limit),
            "evicted": float(self.evicted),
            "waits": float(self.waits),
            "accept_errors": float(self.accept_errors),
        }
