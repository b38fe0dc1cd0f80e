"""The endpoint security of both servers: TLS, client certificates, auth, rate limit, self-metrics.

This module holds the decisions and the counters, with no HTTP framework in
it; each server adapts it to its own request type:

- the agent (``hostmond.web.httpserver``, our own small HTTP/1.1 server, no
  aiohttp in the agent process) calls :meth:`WebSecurity.rate_check`,
  :meth:`WebSecurity.rate_refusal` and :meth:`WebSecurity.auth_refusal` itself;
- the ingest (aiohttp) gets them as two middlewares from
  :func:`hostmond.web.aiohttp_security.apply_web_security`.

Setting up::

    sec = make_web_security(cfg.web, server="agent")   # ConfigError when the TLS files do not load
    listener = CappedListener(factory, sec.ssl_context, cfg.web.max_connections, server="agent")
    sec.listener = listener        # connection self-metrics
    await sec.start()              # the TLS/token file watcher; await sec.stop() at the end

and expose ``sec.self_metrics()`` (a list of :class:`hostmond.api.Sample`) with
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
import logging
import os
import ssl
from collections.abc import Iterable
from typing import Any

from hostmond.core import selfmetrics
from hostmond.core.aio import cancel_and_wait
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


# A refusal as the adapters send it: (status, body text, headers; a name may repeat).
Refusal = tuple[int, str, list[tuple[str, str]]]


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
        self.delayed = 0  # 429 answers being held back (see rate_refusal)
        self.delayed_max = DELAYED_REFUSALS_MAX
        self.listener: Any = None  # the server's hostmond.web.listen.CappedListener, once listening

    # -- counting ----------------------------------------------------------

    def count(self, reason: str) -> None:
        if reason not in self.refused:  # never a free-form label value
            reason = "tls_handshake_failed" if reason.startswith("tls_") else "auth_failed"
        self.refused[reason] += 1

    # -- decisions (the adapters call these in this order) -----------------

    def rate_check(self, remote: str | None) -> float | None:
        """None when the client at ``remote`` may go on; else the seconds until its next token (counted)."""
        if self.limiter is None:
            return None
        ok, wait = self.limiter.allow(client_key(remote))
        if ok:
            return None
        self.count("rate_limited")
        return wait

    async def rate_refusal(self, wait: float) -> Refusal:
        """The 429 for a client over its limit, answered late (see below) while fewer than ``delayed_max`` are."""
        if self.delayed < self.delayed_max:
            # Answer late (at most 1 s, or until the next token): a keep-alive client that
            # hammers the server gets at most one refusal per second per connection instead
            # of thousands, which would cost the event loop more than the refusals save.
            self.delayed += 1
            try:
                await asyncio.sleep(min(wait, 1.0))
            finally:
                self.delayed -= 1
        return 429, "too many requests from this address\n", [("Retry-After", retry_after_header(wait))]

    def needs_auth(self, path_open: bool) -> bool:
        """Whether a request must authenticate: auth is configured and its route is not an open path."""
        return self.auth.enabled and not path_open

    def is_open_path(self, route: str | None) -> bool:
        """``route`` is the route the server resolved (None: no route, a 404 or 405): never open then."""
        return route is not None and route in self.open_paths

    async def auth_refusal(self, remote: str | None, authorization: str | None) -> Refusal | None:
        """None when the ``Authorization`` header is accepted; else the refusal (counted)."""
        reason = await self.auth.check(authorization)
        if reason is None:
            return None
        self.count(reason)
        if reason == "auth_failed" and self.limiter is not None:
            self.limiter.penalize(client_key(remote), self.cfg.rate_limit.auth_failure_cost)
        if reason == "auth_overloaded":
            return 429, "too many password checks in progress, retry shortly\n", [("Retry-After", "1")]
        return 401, "authentication required\n", [("WWW-Authenticate", v) for v in self.auth.challenge()]

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context for the listener (hostmond.web.listen); None: plain HTTP."""
        return self.tls.base if self.tls is not None else None

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
            if self.tls is not None or self.cfg.bearer_token_files:  # files to watch: stat them off the loop
                try:
                    await asyncio.to_thread(self._tick)
                except Exception:  # a bug here must not end rotation silently
                    log.exception("web[%s]: checking TLS/token files failed", self.server)
            if self.limiter is not None:
                self.limiter.prune()

    async def start(self) -> None:
        """Start the file watcher (TLS rotation, token files, rate-limiter pruning)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"hostmon-web-{self.server}-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
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


def make_web_security(cfg: WebConfig, *, server: str, own_auth_paths: Iterable[str] = ()) -> WebSecurity:
    """The security layer of one server per ``cfg``.

    ``own_auth_paths`` are routes that authenticate each request themselves (the
    ingest's ``/v1/batches``: the batch signature): the rate limit applies to
    them, HTTP credentials are never asked for. Raises ConfigError when the TLS
    files cannot be loaded at start.
    """
    try:
        sec = WebSecurity(cfg, server, own_auth_paths)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ConfigError(None, "web.tls_server_config", f"cannot load the TLS files: {e}") from None
    if sec.auth.enabled and sec.tls is None:
        log.warning("web[%s]: authentication is on without TLS: credentials cross the network in clear text", server)
    return sec
