"""Basic/bearer authentication and the per-client rate limit, over real HTTP(S) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from hostmond.web.config import RateLimitConfig, TLSServerConfig, WebConfig
from hostmond.web.ratelimit import RateLimiter, client_key
from hostmond.web.aiohttp_security import apply_web_security

from .conftest import PKI, StartServer, client_ctx, get

# cost 4 keeps the tests fast; the flood test uses cost 10 (the usual cost) on purpose
ALICE = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)  # as htpasswd writes it
NO_LIMIT = RateLimitConfig(requests_per_second=0)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def tls_auth_config(pki: PKI, **kw: object) -> WebConfig:
    cfg = WebConfig(
        tls_server_config=TLSServerConfig(cert_file=str(pki.server.cert), key_file=str(pki.server.key)),
        basic_auth_users={"alice": ALICE},
        rate_limit=NO_LIMIT,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


async def test_metrics_needs_credentials_while_healthz_and_readyz_stay_open(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(tls_auth_config(pki))
    ctx = client_ctx(pki.ca.cert)
    assert (await get(srv.url("/healthz"), ctx=ctx))[0] == 200
    assert (await get(srv.url("/readyz"), ctx=ctx))[0] == 200
    status, headers, _ = await get(srv.url("/metrics"), ctx=ctx)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="hostmon"')
    assert srv.refused("auth_missing") == 1
    status, _, body = await get(srv.url("/metrics"), ctx=ctx, headers=basic("alice", "s3cret"))
    assert status == 200 and "hostmon_web_requests_refused_total" in body


async def test_wrong_password_and_unknown_user_are_refused_and_counted(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(tls_auth_config(pki))
    ctx = client_ctx(pki.ca.cert)
    for headers in (basic("alice", "wrong"), basic("mallory", "s3cret"), {"Authorization": "Basic !!notb64"},
                    {"Authorization": "Bearer sometoken"}):
        status, _, _ = await get(srv.url("/metrics"), ctx=ctx, headers=headers)
        assert status == 401
    assert srv.refused("auth_failed") == 4
    assert srv.refused("auth_missing") == 0


async def test_open_paths_are_configurable_and_unknown_paths_need_credentials(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(tls_auth_config(pki, open_paths=["/readyz"]))
    ctx = client_ctx(pki.ca.cert)
    assert (await get(srv.url("/readyz"), ctx=ctx))[0] == 200
    assert (await get(srv.url("/healthz"), ctx=ctx))[0] == 401
    # a 404 is not a way to probe without credentials, and dot segments do not escape to /metrics
    assert (await get(srv.url("/nothing-here"), ctx=ctx))[0] == 401
    assert (await get(srv.url("/readyz/../metrics"), ctx=ctx))[0] == 401
    assert (await get(srv.url("/nothing-here"), ctx=ctx, headers=basic("alice", "s3cret")))[0] == 404


async def test_bearer_token_from_a_file_is_accepted_and_reloaded_when_the_file_changes(
    pki: PKI, start_server: StartServer, tmp_path: Path
) -> None:
    token = tmp_path / "scrape.token"
    token.write_text("first-token\n")
    token.chmod(0o600)
    srv = await start_server(tls_auth_config(pki, basic_auth_users={}, bearer_token_files=[str(token)], reload_interval=0.05))
    ctx = client_ctx(pki.ca.cert)
    status, headers, _ = await get(srv.url("/metrics"), ctx=ctx)
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="hostmon"'
    assert (await get(srv.url("/metrics"), ctx=ctx, headers={"Authorization": "Bearer first-token"}))[0] == 200
    assert (await get(srv.url("/metrics"), ctx=ctx, headers={"Authorization": "Bearer first-tokenX"}))[0] == 401

    tmp = tmp_path / "new"
    tmp.write_text("second-token")
    tmp.chmod(0o600)
    tmp.replace(token)
    for _ in range(200):
        if (await get(srv.url("/metrics"), ctx=ctx, headers={"Authorization": "Bearer second-token"}))[0] == 200:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the new token was never accepted")
    assert (await get(srv.url("/metrics"), ctx=ctx, headers={"Authorization": "Bearer first-token"}))[0] == 401


async def test_successful_password_checks_are_cached_so_bcrypt_runs_once(pki: PKI, start_server: StartServer) -> None:
    srv = await start_server(tls_auth_config(pki))
    ctx = client_ctx(pki.ca.cert)
    for _ in range(5):
        assert (await get(srv.url("/metrics"), ctx=ctx, headers=basic("alice", "s3cret")))[0] == 200
    assert srv.sec.auth.bcrypt_runs == 1
    for _ in range(3):
        assert (await get(srv.url("/metrics"), ctx=ctx, headers=basic("alice", "nope")))[0] == 401
    assert srv.sec.auth.bcrypt_runs == 4  # failures are not cached: each costs bcrypt (and a rate-limit token)


# ---------------------------------------------------------------------------
# rate limit


async def test_a_burst_of_bad_passwords_from_one_address_is_rate_limited_before_bcrypt(start_server: StartServer) -> None:
    """127.0.0.2 floods with wrong passwords; 127.0.0.1 scrapes honestly and is served every time.

    All 100 guesses arrive before any bcrypt answer, so the burst (not the failure penalty) bounds them.
    """
    hashed = bcrypt.hashpw(b"honest", bcrypt.gensalt(10)).decode()
    guesses = burst = 5
    srv = await start_server(
        WebConfig(basic_auth_users={"prom": hashed}, rate_limit=RateLimitConfig(requests_per_second=0.001, burst=burst))
    )
    # the honest scraper's first scrape pays bcrypt once
    assert (await get(srv.url("/metrics"), source="127.0.0.1", headers=basic("prom", "honest")))[0] == 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)) as flood:

        async def attack() -> tuple[int, str | None]:
            async with flood.get(srv.url("/metrics"), headers=basic("prom", "guess")) as r:
                return r.status, r.headers.get("Retry-After")

        most_delayed = 0

        async def watch() -> None:
            nonlocal most_delayed
            while True:
                most_delayed = max(most_delayed, srv.sec.delayed)
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        attacks = [asyncio.create_task(attack()) for _ in range(100)]
        honest = [
            (await get(srv.url("/metrics"), source="127.0.0.1", headers=basic("prom", "honest")))[0] for _ in range(3)
        ]
        results = await asyncio.gather(*attacks)
        watcher.cancel()

    assert honest == [200, 200, 200]
    statuses = [s for s, _ in results]
    assert statuses.count(401) == guesses and statuses.count(429) == 100 - guesses
    assert all(ra is not None and int(ra) >= 1 for s, ra in results if s == 429)
    # only the guesses the bucket allowed reached bcrypt; the honest scrapes after the first were cache hits
    assert srv.sec.auth.bcrypt_runs == 1 + guesses
    assert srv.refused("rate_limited") == 100 - guesses
    assert srv.refused("auth_failed") == guesses
    metrics = {s.name: s.value for s in srv.sec.self_metrics() if "reason" not in s.labels}
    assert metrics["hostmon_web_rate_limited_clients"] == 1  # 127.0.0.2 only
    assert metrics["hostmon_web_rate_limit_clients"] == 2
    # the 429s were held back (bounded), and all were released
    assert most_delayed > 1 and metrics["hostmon_web_rate_limit_delayed"] == 0
    assert metrics["hostmon_web_rate_limit_delayed_max"] == 1024


@pytest.mark.parametrize("delayed_max", [0, 1024])
async def test_refusals_are_held_back_only_up_to_the_bound(start_server: StartServer, delayed_max: int) -> None:
    srv = await start_server(WebConfig(rate_limit=RateLimitConfig(requests_per_second=0.001, burst=1)))
    srv.sec.delayed_max = delayed_max
    assert (await get(srv.url("/healthz")))[0] == 200
    seen: list[int] = []
    refused = [asyncio.create_task(get(srv.url("/healthz"))) for _ in range(3)]
    while not all(t.done() for t in refused):
        seen.append(srv.sec.delayed)
        await asyncio.sleep(0.01)
    assert [t.result()[0] for t in refused] == [429, 429, 429]
    assert max(seen) == min(delayed_max, 3)
    assert srv.refused("rate_limited") == 3


async def test_each_failed_password_costs_extra_tokens_so_guessing_is_slower_than_scraping(start_server: StartServer) -> None:
    srv = await start_server(
        WebConfig(basic_auth_users={"alice": ALICE}, rate_limit=RateLimitConfig(requests_per_second=1, burst=20, auth_failure_cost=10))
    )
    # 20 tokens: a guess takes 1 + 10, so the third guess in a row is refused before bcrypt
    statuses = [(await get(srv.url("/metrics"), source="127.0.0.2", headers=basic("alice", f"g{i}")))[0] for i in range(3)]
    assert statuses == [401, 401, 429]
    assert srv.sec.auth.bcrypt_runs == 2
    # the same number of honest scrapes from another address is untouched
    honest = [(await get(srv.url("/metrics"), source="127.0.0.1", headers=basic("alice", "s3cret")))[0] for _ in range(3)]
    assert honest == [200, 200, 200]


async def test_honest_cached_scrape_is_served_while_password_checks_are_queued(start_server: StartServer) -> None:
    """With the bcrypt queue full, an honest scrape does not wait behind it, and overflow is refused (429)."""
    hashed = bcrypt.hashpw(b"honest", bcrypt.gensalt(10)).decode()
    srv = await start_server(WebConfig(basic_auth_users={"prom": hashed}, rate_limit=NO_LIMIT))
    srv.sec.auth.max_pending = 4
    assert (await get(srv.url("/metrics"), headers=basic("prom", "honest")))[0] == 200  # cached from now on

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=0)) as flood:

        async def attack(i: int) -> int:
            async with flood.get(srv.url("/metrics"), headers=basic("prom", f"guess{i}")) as r:
                return r.status

        attacks = [asyncio.create_task(attack(i)) for i in range(20)]
        while srv.sec.auth.pending < srv.sec.auth.max_pending:
            await asyncio.sleep(0.005)
        status = (await get(srv.url("/metrics"), headers=basic("prom", "honest")))[0]
        pending_when_served = srv.sec.auth.pending
        results = await asyncio.gather(*attacks)

    assert status == 200
    assert pending_when_served > 0  # served while bad guesses still waited for bcrypt
    assert results.count(429) == srv.refused("auth_overloaded") > 0
    assert results.count(401) + results.count(429) == 20
    assert srv.sec.auth.pending == 0


async def test_rate_limit_applies_to_open_paths_too_and_refills(start_server: StartServer) -> None:
    srv = await start_server(WebConfig(rate_limit=RateLimitConfig(requests_per_second=20, burst=2)))
    statuses = [(await get(srv.url("/healthz")))[0] for _ in range(3)]
    assert statuses[:2] == [200, 200] and statuses[2] == 429
    await asyncio.sleep(0.2)  # 4 tokens' worth at 20/s; the bucket holds at most 2
    assert (await get(srv.url("/healthz")))[0] == 200


def test_rate_limiter_forgets_the_least_recently_seen_client_when_full() -> None:
    now = [0.0]
    rl = RateLimiter(rate=1.0, burst=2, max_clients=2, clock=lambda: now[0])
    assert rl.allow("a")[0] and rl.allow("a")[0]
    ok, wait = rl.allow("a")
    assert not ok and wait == pytest.approx(1.0)
    assert rl.allow("b")[0]
    assert rl.limited_clients() == 1
    rl.allow("c")  # evicts "a", the least recently seen
    assert rl.evictions == 1 and rl.tracked() == 2
    assert rl.allow("a")[0]  # "a" starts again with a full bucket (evicting "b")
    now[0] = 10.0
    rl.prune()
    assert rl.tracked() == 0


def test_rate_limiter_penalty_is_a_bounded_debt() -> None:
    now = [0.0]
    rl = RateLimiter(rate=1.0, burst=4, max_clients=10, clock=lambda: now[0])
    assert rl.allow("a")[0]
    rl.penalize("a", 100)  # debt never exceeds one burst
    ok, wait = rl.allow("a")
    assert not ok and wait == pytest.approx(5.0)  # from -4 tokens back to 1
    now[0] = 5.0
    assert rl.allow("a")[0]
    rl.penalize("unknown", 5)  # a client never seen is not created by a penalty
    assert rl.tracked() == 1


def test_client_key_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    assert client_key("127.0.0.2") == "127.0.0.2"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key(None) == "local"


def test_apply_web_security_puts_its_middlewares_first_and_refuses_a_frozen_app() -> None:
    @web.middleware
    async def own(request: web.Request, handler):  # type: ignore[no-untyped-def]
        return await handler(request)

    app = web.Application(middlewares=[own])
    assert apply_web_security(app, WebConfig(), server="agent") is None
    names = [getattr(m, "__name__", "") for m in app.middlewares]
    assert names == ["rate_limit_middleware", "auth_middleware", "own"]
    frozen = web.Application()
    frozen.freeze()
    with pytest.raises(RuntimeError, match="before the aiohttp app is frozen"):
        apply_web_security(frozen, WebConfig(), server="agent")
