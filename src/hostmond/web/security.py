"""One call secures an aiohttp server: TLS, client certificates, auth, rate limit, self-metrics.

Integration, before the app is frozen (before ``AppRunner.setup()``)::

    ssl_ctx = apply_web_security(app, cfg.web, server="agent")
    listener = CappedListener(runner.server, ssl_ctx, cfg.web.max_connections, server="agent")
    security_of(app).listener = listener   # connection self-metrics
    port = await listener.start(host, port)   # hostmond.web.listen: connection cap, fd limit

and expose ``security_metrics(app)`` (a list of :class:`hostmond.api.Sample`) with
the server's other self-metrics.

Order of checks for a request: TLS handshake (client certificate, inside
``ssl``) -> rate limit per client address -> authentication (skipped for
``open_paths``) -> the handler. Refusals: 429 with ``Retry-After`` (rate limit,
or too many password checks waiting), 401 with ``WWW-Authenticate``
(credentials missing or wrong); handshake refusals just close the connection.
Each refusal is counted in ``hostmon_web_requests_refused_total{server,reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web

from hostmond.core import selfmetrics
from hostmond.core.errors import ConfigError
from hostmond.core.model import COUNTER, GAUGE, MetricSpec, Sample
from hostmond.web.auth import AUTH_REASONS, Authenticator
from hostmond.web.config import WebConfig, read_token_file
from hostmond.web.ratelimit import RateLimiter, client_key, retry_after_header
from hostmond.web.tls import HANDSHAKE_REASONS, TLSManager

log = logging.getLogger("hostmon.web")

# Most 429 answers held back at once; beyond it a refusal is answered at once.
DELAYED_REFUSALS_MAX = 1024

REFUSAL_REASONS = ("rate_limited", *AUTH_REASONS, *HANDSHAKE_REASONS)

METRICS = selfmetrics.declare(
    "web.security",
    MetricSpec(
        "hostmon_web_requests_refused_total",
        COUNTER,
        "Requests and TLS handshakes refused by the endpoint security layer, by reason.",
        ("server", "reason"),
    ),
    MetricSpec(
        "hostmon_web_rate_limited_clients",
        GAUGE,
        "Client addresses whose token bucket is empty right now (their next request would get 429).",
        ("server",),
    ),
    MetricSpec("hostmon_web_rate_limit_clients", GAUGE, "Client addresses the rate limiter currently tracks.", ("server",)),
    MetricSpec("hostmon_web_rate_limit_clients_max", GAUGE, "Most client addresses the rate limiter tracks (rate_limit.max_clients).", ("server",)),
    MetricSpec(
        "hostmon_web_rate_limit_evictions_total",
        COUNTER,
        "Client addresses forgotten by the rate limiter because max_clients were tracked.",
        ("server",),
    ),
    MetricSpec("hostmon_web_rate_limit_delayed", GAUGE, "429 answers being held back (up to 1 s) to slow a client over its limit.", ("server",)),
    MetricSpec(
        "hostmon_web_rate_limit_delayed_max",
        GAUGE,
        "Most 429 answers held back at once; beyond it they are answered at once.",
        ("server",),
    ),
    MetricSpec("hostmon_web_auth_pending", GAUGE, "Password checks (bcrypt) waiting for or running in the worker thread.", ("server",)),
    MetricSpec(
        "hostmon_web_auth_pending_max",
        GAUGE,
        "Most password checks that may wait; beyond it requests are refused with reason auth_overloaded.",
        ("server",),
    ),
    MetricSpec("hostmon_web_connections", GAUGE, "Client connections open now (TLS handshakes included).", ("server",)),
    MetricSpec(
        "hostmon_web_connections_max",
        GAUGE,
        "Most connections open at once: web.max_connections, lowered to fit the open-file limit.",
        ("server",),
    ),
    MetricSpec(
        "hostmon_web_connections_evicted_total",
        COUNTER,
        "Idle connections closed to make room for a new one at the connection limit.",
        ("server",),
    ),
    MetricSpec(
        "hostmon_web_accept_waits_total",
        COUNTER,
        "Times accepting paused because every connection was busy with a request (new ones waited in the backlog).",
        ("server",),
    ),
    MetricSpec(
        "hostmon_web_accept_errors_total",
        COUNTER,
        "accept() failures for lack of file descriptors or memory (logged once a minute at most).",
        ("server",),
    ),
    MetricSpec(
        "hostmon_web_tls_reloads_total",
        COUNTER,
        "Reloads of changed TLS certificate/key/CA files, by result (failure keeps the previous files in force).",
        ("server", "result"),
    ),
    MetricSpec(
        "hostmon_web_tls_cert_not_after_seconds",
        GAUGE,
        "Expiry time of the server certificate in force, as a unix timestamp.",
        ("server",),
        "seconds",
    ),
)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebSecurity:
    """The security state of one server: counters, limiter, authenticator, TLS manager."""

    def __init__(self, cfg: WebConfig, server: str, own_auth_paths: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.server = server
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        # own_auth_paths: routes that authenticate requests themselves (the ingest's batch
        # path checks each batch's signature); HTTP credentials are never asked for there.
        self.open_paths = frozenset(cfg.open_paths) | frozenset(own_auth_paths)
        rl = cfg.rate_limit
        self.limiter = RateLimiter(rl.requests_per_second, rl.burst, rl.max_clients) if rl.enabled else None
        self._token_sig: tuple[tuple[int, int, int] | None, ...] = ()
        tokens = self._read_tokens()
        self.auth = Authenticator(cfg.basic_auth_users, tokens)
        self.tls = TLSManager(cfg.tls_server_config, server, self.count) if cfg.tls_server_config.enabled else None
        self._task: asyncio.Task[None] | None = None
        self.delayed = 0  # 429 answers being held back (see rate_limit_middleware)
        self.delayed_max = DELAYED_REFUSALS_MAX
        self.listener: Any = None  # the server's hostmond.web.listen.CappedListener, once listening

    # -- counting ----------------------------------------------------------

    def count(self, reason: str) -> None:
        if reason not in self.refused:  # never a free-form label value
            reason = "tls_handshake_failed" if reason.startswith("tls_") else "auth_failed"
        self.refused[reason] += 1

    # -- middlewares ---------------------------------------------------------

    @web.middleware
    async def rate_limit_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.limiter is not None:
            ok, wait = self.limiter.allow(client_key(request.remote))
            if not ok:
                self.count("rate_limited")
                if self.delayed < self.delayed_max:
                    # Answer late (at most 1 s, or until the next token): a keep-alive client that
                    # hammers the server gets at most one refusal per second per connection instead
                    # of thousands, which would cost the event loop more than the refusals save.
                    self.delayed += 1
                    try:
                        await asyncio.sleep(min(wait, 1.0))
                    finally:
                        self.delayed -= 1
                return _refusal(429, "too many requests from this address\n", {"Retry-After": retry_after_header(wait)})
        return await handler(request)

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.auth.enabled or self._is_open(request):
            return await handler(request)
        reason = await self.auth.check(request.headers.get("Authorization"))
        if reason is None:
            return await handler(request)
        self.count(reason)
        if reason == "auth_failed" and self.limiter is not None:
            self.limiter.penalize(client_key(request.remote), self.cfg.rate_limit.auth_failure_cost)
        if reason == "auth_overloaded":
            return _refusal(429, "too many password checks in progress, retry shortly\n", {"Retry-After": "1"})
        resp = _refusal(401, "authentication required\n", {})
        for value in self.auth.challenge():
            resp.headers.add("WWW-Authenticate", value)
        return resp

    def _is_open(self, request: web.Request) -> bool:
        # Decide on the route aiohttp resolved, not on the raw path: "/healthz/../metrics"
        # and friends resolve to /metrics. Unknown paths (404) need credentials too.
        resource = request.match_info.route.resource
        if resource is None:
            return False
        return resource.canonical in self.open_paths

    # -- files, timer --------------------------------------------------------

    def _token_signature(self) -> tuple[tuple[int, int, int] | None, ...]:
        out: list[tuple[int, int, int] | None] = []
        for p in self.cfg.bearer_token_files:
            try:
                st = os.stat(p)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def _read_tokens(self) -> list[bytes]:
        self._token_sig = self._token_signature()
        tokens = []
        for p in self.cfg.bearer_token_files:
            try:
                token = read_token_file(p)
            except OSError as e:
                raise ConfigError(None, "web.bearer_token_files", f"{p}: {e.strerror or e}") from None
            if not token:
                raise ConfigError(None, "web.bearer_token_files", f"{p}: the token file is empty")
            tokens.append(token)
        return tokens

    def check_token_files(self) -> None:
        """Re-read bearer token files that changed; a file that is now unusable keeps the old tokens."""
        if not self.cfg.bearer_token_files or self._token_signature() == self._token_sig:
            return
        try:
            tokens = self._read_tokens()
        except ConfigError as e:
            log.error("web[%s]: bearer tokens not reloaded, keeping the previous ones: %s", self.server, e.reason)
            return
        self.auth.set_tokens(tokens)
        log.info("web[%s]: reloaded %d bearer token file(s)", self.server, len(tokens))

    def _tick(self) -> None:
        if self.tls is not None:
            self.tls.check_files()
        self.check_token_files()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_interval)
            try:
                await asyncio.to_thread(self._tick)
            except Exception:  # a bug here must not end rotation silently
                log.exception("web[%s]: checking TLS/token files failed", self.server)
            if self.limiter is not None:
                self.limiter.prune()

    async def on_startup(self, app: web.Application) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"hostmon-web-{self.server}-watch")

    async def on_cleanup(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.auth.close()

    # -- self-metrics --------------------------------------------------------

    def self_metrics(self) -> list[Sample]:
        s = self.server
        out = [
            Sample("hostmon_web_requests_refused_total", COUNTER, float(n), {"server": s, "reason": r})
            for r, n in self.refused.items()
        ]
        lim = self.limiter
        out.append(Sample("hostmon_web_rate_limited_clients", GAUGE, float(lim.limited_clients() if lim else 0), {"server": s}))
        out.append(Sample("hostmon_web_rate_limit_clients", GAUGE, float(lim.tracked() if lim else 0), {"server": s}))
        out.append(Sample("hostmon_web_rate_limit_clients_max", GAUGE, float(lim.max_clients if lim else 0), {"server": s}))
        out.append(Sample("hostmon_web_rate_limit_evictions_total", COUNTER, float(lim.evictions if lim else 0), {"server": s}))
        out.append(Sample("hostmon_web_rate_limit_delayed", GAUGE, float(self.delayed), {"server": s}))
        out.append(Sample("hostmon_web_rate_limit_delayed_max", GAUGE, float(self.delayed_max), {"server": s}))
        out.append(Sample("hostmon_web_auth_pending", GAUGE, float(self.auth.pending), {"server": s}))
        out.append(Sample("hostmon_web_auth_pending_max", GAUGE, float(self.auth.max_pending), {"server": s}))
        if self.listener is not None:
            st = self.listener.stats()
            out.append(Sample("hostmon_web_connections", GAUGE, st["connections"], {"server": s}))
            out.append(Sample("hostmon_web_connections_max", GAUGE, st["connections_max"], {"server": s}))
            out.append(Sample("hostmon_web_connections_evicted_total", COUNTER, st["evicted"], {"server": s}))
            out.append(Sample("hostmon_web_accept_waits_total", COUNTER, st["waits"], {"server": s}))
            out.append(Sample("hostmon_web_accept_errors_total", COUNTER, st["accept_errors"], {"server": s}))
        if self.tls is not None:
            for result, n in self.tls.reloads.items():
                out.append(Sample("hostmon_web_tls_reloads_total", COUNTER, float(n), {"server": s, "result": result}))
            if self.tls.not_after is not None:
                out.append(Sample("hostmon_web_tls_cert_not_after_seconds", GAUGE, self.tls.not_after, {"server": s}))
        return out


WEB_SECURITY_KEY: web.AppKey[WebSecurity] = web.AppKey("hostmon_web_security", WebSecurity)


def _refusal(status: int, text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, text=text, headers=headers)


def apply_web_security(
    app: web.Application, cfg: WebConfig, *, server: str, own_auth_paths: Iterable[str] = ()
) -> ssl.SSLContext | None:
    """Secure ``app`` per ``cfg``; returns the SSL context for the listener (:mod:`hostmond.web.listen`; None: plain HTTP).

    Must be called before the app is frozen. The rate-limit and auth middlewares
    are put first in ``app.middlewares`` (before any the app already has), the
    file watcher starts with the app and stops at its cleanup, and
    :func:`security_metrics` reads the counters. ``own_auth_paths`` are routes
    that authenticate each request themselves (the ingest's ``/v1/batches``:
    the batch signature): the rate limit applies to them, HTTP credentials are
    never asked for. Raises ConfigError or
    ssl.SSLError/OSError when the TLS files cannot be loaded at start.
    """
    if app.frozen:
        raise RuntimeError("apply_web_security() must be called before the aiohttp app is frozen (before runner.setup())")
    try:
        sec = WebSecurity(cfg, server, own_auth_paths)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ConfigError(None, "web.tls_server_config", f"cannot load the TLS files: {e}") from None
    app.middlewares.insert(0, sec.auth_middleware)
    app.middlewares.insert(0, sec.rate_limit_middleware)
    app[WEB_SECURITY_KEY] = sec
    app.on_startup.append(sec.on_startup)
    app.on_cleanup.append(sec.on_cleanup)
    if sec.auth.enabled and sec.tls is None:
        log.warning("web[%s]: authentication is on without TLS: credentials cross the network in clear text", server)
    return sec.tls.base if sec.tls is not None else None


def security_of(app: web.Application) -> WebSecurity | None:
    """The :class:`WebSecurity` registered on ``app`` (an object with ``self_metrics()``), if any."""
    return app.get(WEB_SECURITY_KEY)


def security_metrics(app: web.Application) -> list[Sample]:
    """The security layer's self-metrics for ``app``; [] when apply_web_security was not called."""
    sec = security_of(app)
    return sec.self_metrics() if sec is not None else []


class PrometheusCollector:
    """The security self-metrics as a prometheus_client custom collector (for servers that use a
    ``CollectorRegistry``, like the ingest): ``registry.register(PrometheusCollector(app))``."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._specs = {m.name: m for m in METRICS}

    def describe(self) -> list[object]:
        return []  # no fixed description: families appear once apply_web_security ran

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for s in security_metrics(self._app):
            fam = families.get(s.name)
            if fam is None:
                spec = self._specs[s.name]
                cls = CounterMetricFamily if spec.type == COUNTER else GaugeMetricFamily
                fam = cls(s.name, spec.help, labels=list(spec.labels))
                families[s.name] = fam
            fam.add_metric([s.labels[k] for k in self._specs[s.name].labels], s.value)
        yield from families.values()
