"""Benchmark (not a test): honest scrape latency while another address floods with bad passwords.

    python bench/web_flood_bench.py [--scrapes 60] [--flooders 32] [--runs 3] [--server agent|aiohttp]

Starts a test server (TLS + basic auth, bcrypt cost 10, default rate limit) in its own process: the agent's own
HTTP server (hostmond.web.httpserver, the default) or an aiohttp app behind the ingest's middlewares. Then it measures an
honest client on 127.0.0.1 (keep-alive, correct password, cached after its first scrape) three ways, in the same
run: quiet; while a flood process on 127.0.0.2 sends wrong passwords on keep-alive TLS connections as fast as it
can, with the default rate limit; and the same flood with the rate limit off (the peer: what the limiter saves).
Prints medians and p95 over all runs and the ratios to quiet, plus the server's refusal counters.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import bcrypt

# Test-time PKI helpers shared with tests/agent/web (certificates made with cryptography).
HERE = Path(__file__).resolve().parents[1] / "tests" / "agent" / "web"


def _pki(d: Path) -> tuple[Path, Path, Path]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("web_conftest", HERE / "conftest.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["web_conftest"] = mod
    spec.loader.exec_module(mod)
    ca = mod.make_ca(d, "ca", "bench CA")
    srv = mod.issue(d, "server", ca, "bench server", server=True, sans=mod.SERVER_SANS)
    return ca.cert, srv.cert, srv.key


def _serve_agent(cert: str, key: str, hashed: str, rate: float, port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    from hostmond.web.config import RateLimitConfig, TLSServerConfig, WebConfig
    from hostmond.web.httpserver import HTTPServer, Request, Response
    from hostmond.web.listen import CappedListener
    from hostmond.web.security import make_web_security

    async def main() -> None:
        cfg = WebConfig(
            tls_server_config=TLSServerConfig(cert_file=cert, key_file=key),
            basic_auth_users={"prom": hashed},
            rate_limit=RateLimitConfig(requests_per_second=rate),
        )
        sec = make_web_security(cfg, server="agent")
        body = b"up 1\n" * 200

        def metrics(request: Request) -> Response:
            return Response(200, body, [("Content-Type", "text/plain")])

        def counters(request: Request) -> Response:
            data = json.dumps({"refused": sec.refused, "bcrypt_runs": sec.auth.bcrypt_runs}).encode()
            return Response(200, data, [("Content-Type", "application/json")])

        http = HTTPServer({"/metrics": metrics, "/healthz": counters}, sec)
        listener = CappedListener(http.protocol, sec.ssl_context, cfg.max_connections, server="agent")
        port_q.put(await listener.start("127.0.0.1", 0))
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await listener.stop()
        listener.close_connections()

    asyncio.run(main())


def _serve(cert: str, key: str, hashed: str, rate: float, port_q: mp.Queue, stop: mp.Event) -> None:  # type: ignore[type-arg]
    from aiohttp import web

    from hostmond.web.aiohttp_security import apply_web_security, security_of
    from hostmond.web.config import RateLimitConfig, TLSServerConfig, WebConfig

    async def main() -> None:
        app = web.Application()

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text="up 1\n" * 200)

        async def counters(request: web.Request) -> web.Response:
            sec = security_of(request.app)
            assert sec is not None
            return web.json_response({"refused": sec.refused, "bcrypt_runs": sec.auth.bcrypt_runs})

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", counters)
        cfg = WebConfig(
            tls_server_config=TLSServerConfig(cert_file=cert, key_file=key),
            basic_auth_users={"prom": hashed},
            rate_limit=RateLimitConfig(requests_per_second=rate),
        )
        ctx = apply_web_security(app, cfg, server="agent")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
        port_q.put(runner.addresses[0][1])
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    asyncio.run(main())


def _flood(port: int, ca: str, flooders: int, stop: mp.Event) -> None:  # type: ignore[type-arg]
    async def one(ctx: ssl.SSLContext) -> None:
        # keep-alive connections: the flood exercises the rate limit and password checks, not handshakes
        bad = {"Authorization": "Basic " + base64.b64encode(b"prom:guess").decode()}
        conn = aiohttp.TCPConnector(ssl=ctx, local_addr=("127.0.0.2", 0), limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            while not stop.is_set():
                try:
                    async with s.get(f"https://127.0.0.1:{port}/metrics", headers=bad) as r:
                        await r.read()
                except aiohttp.ClientError:
                    await asyncio.sleep(0.01)

    async def main() -> None:
        ctx = ssl.create_default_context(cafile=ca)
        await asyncio.gather(*(one(ctx) for _ in range(flooders)))

    asyncio.run(main())


async def _honest(port: int, ca: str, n: int) -> list[float]:
    ctx = ssl.create_default_context(cafile=ca)
    good = {"Authorization": "Basic " + base64.b64encode(b"prom:honest").decode()}
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, local_addr=("127.0.0.1", 0))) as s:
        for _ in range(n):
            t = time.perf_counter()
            async with s.get(f"https://127.0.0.1:{port}/metrics", headers=good) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"honest scrape answered {r.status}")
            out.append(time.perf_counter() - t)
            await asyncio.sleep(0.15)  # ~6 scrapes/s: within the default 10/s limit
    return out


def _counters(port: int, ca: str) -> dict[str, object]:
    async def main() -> dict[str, object]:
        ctx = ssl.create_default_context(cafile=ca)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, local_addr=("127.0.0.3", 0))) as s:
            async with s.get(f"https://127.0.0.1:{port}/healthz") as r:
                return await r.json()  # type: ignore[no-any-return]

    return asyncio.run(main())


def scenario(
    ca: str, cert: str, key: str, hashed: str, rate: float, flooders: int, scrapes: int, kind: str = "agent"
) -> tuple[list[float], dict[str, object]]:
    stop = mp.Event()
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    target = _serve_agent if kind == "agent" else _serve
    server = mp.Process(target=target, args=(cert, key, hashed, rate, q, stop), daemon=True)
    server.start()
    fl = None
    try:
        port = q.get(timeout=30)
        asyncio.run(_honest(port, ca, 1))  # first scrape pays bcrypt once, as in real life
        if flooders:
            fl = mp.Process(target=_flood, args=(port, ca, flooders, stop), daemon=True)
            fl.start()
            time.sleep(1.0)
        lat = asyncio.run(_honest(port, ca, scrapes))
        counters = _counters(port, ca)
    finally:
        stop.set()
        for p in (fl, server):
            if p is not None:
                p.join(15)
                if p.is_alive():
                    p.kill()
    return lat, counters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scrapes", type=int, default=60)
    ap.add_argument("--flooders", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--server", choices=("agent", "aiohttp"), default="agent",
                    help="the agent's own HTTP server (default) or an aiohttp app with the ingest's middlewares")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="hostmon-bench-"))
    ca, cert, key = (str(p) for p in _pki(d))
    hashed = bcrypt.hashpw(b"honest", bcrypt.gensalt(10)).decode()
    results: dict[str, list[float]] = {"quiet": [], "flood, rate limit on": [], "flood, rate limit off": []}
    last: dict[str, object] = {}
    for _ in range(a.runs):
        for name, rate, fl in (("quiet", 10.0, 0), ("flood, rate limit on", 10.0, a.flooders), ("flood, rate limit off", 0.0, a.flooders)):
            lat, counters = scenario(ca, cert, key, hashed, rate, fl, a.scrapes, a.server)
            results[name].extend(lat)
            last[name] = counters
    quiet = statistics.median(results["quiet"])
    print(f"{a.server} server: honest scrape latency, {a.runs} runs x {a.scrapes} scrapes, {a.flooders} flooding connections")
    for name, lat in results.items():
        med = statistics.median(lat)
        p95 = statistics.quantiles(lat, n=20)[-1]
        print(f"  {name:24s} median {med * 1000:7.2f} ms  p95 {p95 * 1000:7.2f} ms  ratio to quiet {med / quiet:5.2f}")
    for name, c in last.items():
        refused = {k: v for k, v in c["refused"].items() if v}  # type: ignore[union-attr]
        print(f"  server counters ({name}, last run): bcrypt runs {c['bcrypt_runs']}, refused {json.dumps(refused)}")


if __name__ == "__main__":
    main()
