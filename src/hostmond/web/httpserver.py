"""A small HTTP/1.1 server for the agent's endpoints, on asyncio.Protocol (no aiohttp in the agent).

The agent serves four GET routes from memory (/metrics, /healthz, /readyz, /).
aiohttp's server and the client stack it imports cost about 15 MB of RSS per
agent, a third of the process; this module is what the agent needs and no more.
Connections come from :class:`hostmond.web.listen.CappedListener` (connection
cap, eviction of idle connections), security from
:class:`hostmond.web.security.WebSecurity` (rate limit, auth, TLS), the same
decisions as the ingest's aiohttp middlewares.

What it speaks
    HTTP/1.1 and HTTP/1.0 requests, GET and HEAD only (any other method: 405
    with ``Allow: GET, HEAD``); routes are exact paths after percent-decoding
    and removing dot segments (``/a/../metrics`` is ``/metrics``), the query is
    ignored; unknown paths 404. Responses always carry ``Content-Length``.
    Keep-alive: HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
    ``Connection: keep-alive``. Pipelined requests are answered in order.

Limits (answered, then the connection is closed)
    - request line longer than :data:`MAX_LINE` (8,190 bytes): 414;
    - a header line longer than :data:`MAX_LINE`, a head (request line and
      headers) over :data:`MAX_HEAD` (32 KiB), or more than :data:`MAX_HEADERS`
      (100) header fields: 431;
    - a request with a body (``Content-Length`` over 0 or any
      ``Transfer-Encoding``): GET/HEAD 413, other methods 405; the body is never
      read;
    - malformed (bad request line, bad header name, space before the colon,
      line folding, a bad or repeated ``Content-Length``): 400;
    - an HTTP version other than 1.0/1.1: 505.

Timeouts (against slowloris and stuck clients)
    - :data:`HEAD_TIMEOUT` (10 s): a request head must be complete within 10 s of
      the connection opening or of its first byte after a keep-alive pause;
      otherwise 408 and close (silently when nothing at all was sent);
    - :data:`KEEPALIVE_TIMEOUT` (75 s): an idle keep-alive connection is closed;
    - :data:`WRITE_TIMEOUT` (30 s): a client that stops reading its response
      (the transport's buffer stays above its high-water mark) is disconnected.
    A connection waiting for a request head is idle for the listener: at the
    connection cap it is the first to be closed for a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from hostmond.core import selfmetrics
from hostmond.core.model import COUNTER, MetricSpec, Sample
from hostmond.web.security import Refusal, WebSecurity

log = logging.getLogger("hostmon.http")

# Why a request was answered with an error and its connection closed (fixed set: label values).
BAD_REQUEST_REASONS = ("malformed", "too_large", "body", "version", "head_timeout")
_BAD_REASON = {400: "malformed", 414: "too_large", 431: "too_large", 413: "body", 405: "body", 505: "version", 408: "head_timeout"}

METRICS = selfmetrics.declare(
    "web.httpserver",
    MetricSpec(
        "hostmon_web_bad_requests_total",
        COUNTER,
        "Requests the agent's HTTP server answered with an error and closed the connection for: malformed (400), "
        "too_large (414/431: request line, header line, head or header count over its limit), body (a request "
        "body, never read), version (505), head_timeout (408: the head did not arrive within 10 s).",
        ("server", "reason"),
    ),
)

MAX_LINE = 8190
MAX_HEAD = 32 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 75.0
WRITE_TIMEOUT = 30.0
ALLOW = "GET, HEAD"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache: list[Any] = [0, b""]


def http_date() -> bytes:
    """The ``Date`` header value, formatted once per second (C-locale names, RFC 9110 IMF-fixdate)."""
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        _date_cache[0] = now
        _date_cache[1] = (
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon]} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        ).encode("ascii")
    return _date_cache[1]


class HTTPError(Exception):
    """A request that cannot be served: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Request:
    """A parsed request head. ``headers``: lower-case names; a repeated header's values joined by ", "."""

    __slots__ = ("headers", "keep_alive", "method", "path", "remote", "target", "version")

    def __init__(self, method: str, target: str, path: str, version: str, headers: dict[str, str], remote: str | None) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.version = version
        self.headers = headers
        self.remote = remote
        conn = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in conn
        else:
            self.keep_alive = "keep-alive" in conn and "close" not in conn


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int = 200, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode("utf-8"), [("Content-Type", content_type)])


Handler = Callable[[Request], Response]


def _unquote(path: str) -> str:
    if "%" not in path:
        return path
    from urllib.parse import unquote

    return unquote(path, errors="strict")


def normalise_path(target: str) -> str:
    """The route path of a request target: query dropped, percent-decoded, dot segments removed (RFC 3986 5.2.4)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        if path.startswith(("http://", "https://")):  # absolute form: keep only the path
            rest = path.split("://", 1)[1]
            slash = rest.find("/")
            path = rest[slash:] if slash >= 0 else "/"
        else:
            raise HTTPError(400, "bad request target\n")
    try:
        path = _unquote(path)
    except UnicodeDecodeError:
        raise HTTPError(400, "bad percent-encoding in the path\n") from None
    if "/." in path:
        out: list[str] = []
        segments = path.split("/")[1:]
        for i, seg in enumerate(segments):
            last = i == len(segments) - 1
            if seg == "..":
                if out:
                    out.pop()
                if last:
                    out.append("")
            elif seg == ".":
                if last:
                    out.append("")
            else:
                out.append(seg)
        path = "/" + "/".join(out)
    return path


def parse_head(head: bytes, remote: str | None) -> Request:
    """Parse a request head (without the final empty line); raises :class:`HTTPError`."""
    lines = head.split(b"\r\n")
    line = lines[0]
    if len(line) > MAX_LINE:
        raise HTTPError(414, "request line too long\n")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HTTPError(400, "malformed request line\n")
    method_b, target_b, version_b = parts
    if not set(method_b) <= _TOKEN:
        raise HTTPError(400, "malformed method\n")
    if not version_b.startswith(b"HTTP/") or len(version_b) != 8 or version_b[6:7] != b"." or not (
        version_b[5:6].isdigit() and version_b[7:8].isdigit()
    ):
        raise HTTPError(400, "malformed HTTP version\n")
    if version_b not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are served\n")
    try:
        target = target_b.decode("ascii")
    except UnicodeDecodeError:
        raise HTTPError(400, "non-ASCII request target\n") from None
    if any(c <= " " or c == "\x7f" for c in target):
        raise HTTPError(400, "bad request target\n")
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPError(431, f"more than {MAX_HEADERS} header fields\n")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        if len(raw) > MAX_LINE:
            raise HTTPError(431, "header line too long\n")
        if raw[:1] in (b" ", b"\t"):
            raise HTTPError(400, "obsolete header line folding\n")
        name_b, sep, value_b = raw.partition(b":")
        if not sep or not name_b or not set(name_b) <= _TOKEN:
            raise HTTPError(400, "malformed header field\n")
        if b"\0" in value_b or b"\r" in value_b or b"\n" in value_b:
            raise HTTPError(400, "malformed header value\n")
        name = name_b.decode("ascii").lower()
        value = value_b.strip(b" \t").decode("latin-1")
        old = headers.get(name)
        if old is None:
            headers[name] = value
        elif name == "content-length":
            raise HTTPError(400, "repeated Content-Length\n")
        else:
            headers[name] = old + ", " + value
    return Request(method_b.decode("ascii"), target, normalise_path(target), version_b.decode("ascii"), headers, remote)


class HTTPServer:
    """Routes (exact paths) to synchronous handlers, behind the security layer; see the module docstring.

    ``protocol`` is the factory to give :class:`hostmond.web.listen.CappedListener`.
    """

    def __init__(self, routes: Mapping[str, Handler], security: WebSecurity | None = None) -> None:
        self.routes = dict(routes)
        self.security = security
        self.errors = 0  # handler exceptions (answered 500)
        self.bad_requests: dict[str, int] = dict.fromkeys(BAD_REQUEST_REASONS, 0)

    def self_metrics(self, server: str) -> list[Sample]:
        return [
            Sample("hostmon_web_bad_requests_total", COUNTER, float(n), {"server": server, "reason": r})
            for r, n in self.bad_requests.items()
        ]

    def protocol(self) -> HTTPProtocol:
        return HTTPProtocol(self)

    def respond(self, req: Request) -> Response:
        """Route and run the handler (after security); HEAD is answered by the GET handler."""
        handler = self.routes.get(req.path)
        if req.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", [("Content-Type", "text/plain; charset=utf-8"), ("Allow", ALLOW)])
        if handler is None:
            return Response.text(404, "not found\n")
        try:
            return handler(req)
        except Exception:  # noqa: BLE001 - a handler bug answers 500, the server goes on
            self.errors += 1
            log.exception("handler for %s failed", req.path)
            return Response.text(500, "internal error\n")

    def route_of(self, req: Request) -> str | None:
        """The route a request resolved to (None for 404 and 405), for open-path decisions."""
        if req.method not in ("GET", "HEAD"):
            return None
        return req.path if req.path in self.routes else None


class HTTPProtocol(asyncio.Protocol):
    """One connection. State: waiting for a head (idle), handling a request (busy), or writing paused."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a request is being handled (the listener does not evict it)
        self.on_lost: Callable[[], None] | None = None  # set by CappedListener
        self._buf = bytearray()
        self._remote: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._write_paused = False
        self._reading_paused = False
        self._eof = False
        self._tls = False
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) and peer else None
        self._tls = transport.get_extra_info("sslcontext") is not None
        self._arm(HEAD_TIMEOUT, self._head_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closing = True
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        self.transport = None
        self._buf.clear()
        cb, self.on_lost = self.on_lost, None
        if cb is not None:
            cb()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        if self.busy or self._write_paused:
            if len(self._buf) > MAX_HEAD and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        self._process()

    def eof_received(self) -> bool | None:
        self._eof = True
        # keep the socket open for the answer when a request is being handled or waiting
        # (not possible over TLS, which has no half-close)
        return not self._tls and bool(self.busy or self._write_paused)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._arm(WRITE_TIMEOUT, self._write_timeout)

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._closing:
            self._arm(KEEPALIVE_TIMEOUT, self._idle_timeout)
            self._waiting_first_byte = True
            self._process()

    # -- timers ------------------------------------------------------------------

    _waiting_first_byte = False

    def _arm(self, delay: float, cb: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, cb)
        self._waiting_first_byte = False

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self.busy or self.transport is None:
            return
        if self._buf:
            self._fail(HTTPError(408, "request head not received in time\n"))
        else:
            self._close()

    def _idle_timeout(self) -> None:
        self._timer = None
        if not self.busy and not self._buf:
            self._close()

    def _write_timeout(self) -> None:
        self._timer = None
        if self._write_paused and self.transport is not None:
            self._closing = True
            self.transport.abort()

    # -- requests ------------------------------------------------------------------

    def _process(self) -> None:
        """Handle every complete request in the buffer, in order, until one needs to wait."""
        while not self._closing and not self.busy and not self._write_paused and self.transport is not None:
            buf = self._buf
            while buf[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request line
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if buf and self._waiting_first_byte:
                    # the first bytes after a keep-alive pause: the head must now arrive within HEAD_TIMEOUT
                    self._arm(HEAD_TIMEOUT, self._head_timeout)
                if len(buf) > MAX_HEAD:
                    self._fail(HTTPError(431, "request head too large\n"))
                elif buf.find(b"\r\n") < 0 and len(buf) > MAX_LINE:
                    self._fail(HTTPError(414, "request line too long\n"))
                elif not buf and self._eof:
                    self._close()
                return
            if end > MAX_HEAD:
                self._fail(HTTPError(431, "request head too large\n"))
                return
            head = bytes(buf[:end])
            del buf[: end + 4]
            try:
                req = parse_head(head, self._remote)
                self._check_body(req)
            except HTTPError as e:
                self._fail(e)
                return
            self._cancel_timer()
            sec = self.server.security
            if sec is not None:
                wait = sec.rate_check(req.remote)
                if wait is not None or sec.needs_auth(sec.is_open_path(self.server.route_of(req))):
                    self.busy = True
                    self._task = self._loop.create_task(self._secured(req, wait))
                    return
            self._send(req, self.server.respond(req))
        if self._reading_paused and not self.busy and not self._write_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _check_body(self, req: Request) -> None:
        te = req.headers.get("transfer-encoding")
        cl = req.headers.get("content-length")
        if cl is not None and (not cl.isdigit() or len(cl) > 18):
            raise HTTPError(400, "bad Content-Length\n")
        if te is not None or (cl is not None and int(cl) > 0):
            if req.method in ("GET", "HEAD"):
                raise HTTPError(413, "request bodies are not accepted\n")
            raise HTTPError(405, "method not allowed\n")

    async def _secured(self, req: Request, wait: float | None) -> None:
        sec = self.server.security
        assert sec is not None
        try:
            refusal: Refusal | None
            if wait is not None:
                refusal = await sec.rate_refusal(wait)
            else:
                refusal = await sec.auth_refusal(req.remote, req.headers.get("authorization"))
            if refusal is None:
                resp = self.server.respond(req)
            else:
                status, text, headers = refusal
                resp = Response(status, text.encode("utf-8"), [("Content-Type", "text/plain; charset=utf-8"), *headers])
        except asyncio.CancelledError:
            return
        except Exception:  # noqa: BLE001
            log.exception("security check failed")
            resp = Response.text(500, "internal error\n")
        finally:
            self.busy = False
            self._task = None
        if self.transport is None or self._closing:
            return
        self._send(req, resp)
        self._process()

    # -- answers -------------------------------------------------------------------

    def _send(self, req: Request | None, resp: Response, close: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        keep = not close and req is not None and req.keep_alive and not self._eof
        version = req.version if req is not None else "HTTP/1.1"
        out = [f"{'HTTP/1.1' if version == 'HTTP/1.1' else 'HTTP/1.0'} {resp.status} {REASONS.get(resp.status, 'Unknown')}\r\n".encode("ascii")]
        out.append(b"Date: " + http_date() + b"\r\n")
        for name, value in resp.headers:
            out.append(f"{name}: {value}\r\n".encode("latin-1"))
        out.append(b"Content-Length: %d\r\n" % len(resp.body))
        if not keep:
            out.append(b"Connection: close\r\n\r\n")
        elif version == "HTTP/1.0":
            out.append(b"Connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")
        if req is None or req.method != "HEAD":
            out.append(resp.body)
        transport.write(b"".join(out))
        if keep:
            if not self._write_paused:
                self._arm(KEEPALIVE_TIMEOUT, self._idle_timeout)
                self._waiting_first_byte = True
        else:
            self._close()

    def _fail(self, e: HTTPError) -> None:
        self.server.bad_requests[_BAD_REASON.get(e.status, "malformed")] += 1
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if e.status == 405:
            headers.append(("Allow", ALLOW))
        self._buf.clear()
        self._send(None, Response(e.status, e.text.encode("utf-8"), headers), close=True)

    def _close(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()  # after the buffered answer is written
