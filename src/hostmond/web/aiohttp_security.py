"""The endpoint security layer (:mod:`hostmond.web.security`) as aiohttp middlewares: the ingest's adapter.

Integration, before the app is frozen (before ``AppRunner.setup()``)::

    ssl_ctx = apply_web_security(app, cfg.web, server="ingest")
    listener = CappedListener(runner.server, ssl_ctx, cfg.web.max_connections, server="ingest")
    security_of(app).listener = listener   # connection self-metrics
    port = await listener.start(host, port)   # hostmond.web.listen: connection cap, fd limit

and expose ``security_metrics(app)`` with the server's other self-metrics. The
agent does not use aiohttp (its process stays small): its own server
(:mod:`hostmond.web.httpserver`) calls the same decisions.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator

from aiohttp import web

from hostmond.core.model import COUNTER, Sample
from hostmond.web.config import WebConfig
from hostmond.web.security import METRICS, Refusal, WebSecurity, make_web_security

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WEB_SECURITY_KEY: web.AppKey[WebSecurity] = web.AppKey("hostmon_web_security", WebSecurity)


def _response(refusal: Refusal) -> web.Response:
    status, text, headers = refusal
    resp = web.Response(status=status, text=text)
    for name, value in headers:
        resp.headers.add(name, value)
    return resp


def _is_open(sec: WebSecurity, request: web.Request) -> bool:
    # Decide on the route aiohttp resolved, not on the raw path: "/healthz/../metrics"
    # and friends resolve to /metrics. Unknown paths (404) need credentials too.
    resource = request.match_info.route.resource
    return sec.is_open_path(resource.canonical if resource is not None else None)


def middlewares(sec: WebSecurity) -> tuple[Callable[..., Awaitable[web.StreamResponse]], ...]:
    """The rate-limit and auth middlewares of ``sec``, in the order they must run."""

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = sec.rate_check(request.remote)
        if wait is not None:
            return _response(await sec.rate_refusal(wait))
        return await handler(request)

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if sec.needs_auth(_is_open(sec, request)):
            refusal = await sec.auth_refusal(request.remote, request.headers.get("Authorization"))
            if refusal is not None:
                return _response(refusal)
        return await handler(request)

    return rate_limit_middleware, auth_middleware


def apply_web_security(
    app: web.Application, cfg: WebConfig, *, server: str, own_auth_paths: Iterable[str] = ()
) -> ssl.SSLContext | None:
    """Secure ``app`` per ``cfg``; returns the SSL context for the listener (:mod:`hostmond.web.listen`; None: plain HTTP).

    Must be called before the app is frozen. The rate-limit and auth middlewares
    are put first in ``app.middlewares`` (before any the app already has), the
    file watcher starts with the app and stops at its cleanup, and
    :func:`security_metrics` reads the counters. ``own_auth_paths``: see
    :func:`hostmond.web.security.make_web_security`. Raises ConfigError when the
    TLS files cannot be loaded at start.
    """
    if app.frozen:
        raise RuntimeError("apply_web_security() must be called before the aiohttp app is frozen (before runner.setup())")
    sec = make_web_security(cfg, server=server, own_auth_paths=own_auth_paths)
    rate_mw, auth_mw = middlewares(sec)
    app.middlewares.insert(0, auth_mw)
    app.middlewares.insert(0, rate_mw)
    app[WEB_SECURITY_KEY] = sec

    async def on_startup(app: web.Application) -> None:
        await sec.start()

    async def on_cleanup(app: web.Application) -> None:
        await sec.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return sec.ssl_context


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
