"""The agent's commands of ``hostmon`` (the parser itself is :mod:`hostmond.cli`).

    hostmon run [--config FILE] [--listen HOST:PORT]   run the daemon
    hostmon check-config FILE                          validate a config; non-zero exit with the reason
    hostmon collect --once [--format prom|json]        print one collection and exit
    hostmon config sample                              print the sample config (every key at its default)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

from hostmond.agent import config as config_mod
from hostmond.agent.sdnotify import Notifier, run_watchdog

from hostmond import __version__
from hostmond.core import logs
from hostmond.core.errors import ConfigError, HostmonError

log = logging.getLogger("hostmon.cli")

DEFAULT_CONFIG_ENV = "HOSTMON_CONFIG"


def _config_path(arg: str | None) -> str | None:
    return arg or os.environ.get(DEFAULT_CONFIG_ENV) or None


def _env(listen: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if listen:
        env["HOSTMON_LISTEN"] = listen
    return env


def _load_or_exit(path: str | None, listen: str | None = None) -> config_mod.Config:
    env = _env(listen)
    try:
        return config_mod.load(path, env)
    except ConfigError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread its own malloc arena (64 MB reserved, touched pages stay resident);
    the collector threads need no such scaling. Same effect as MALLOC_ARENA_MAX=2."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def cmd_run(args: argparse.Namespace) -> int:
    from hostmond.agent.runtime import Agent, hung_threads

    limit_malloc_arenas()

    path = _config_path(args.config)
    cfg = _load_or_exit(path, args.listen)
    logs.setup(cfg.log_level)
    log.info("starting", extra={"version": __version__, "config": cfg.source, "tenant_id": cfg.tenant_id})

    async def main() -> None:
        consumers: list[Any] = []
        agent = Agent(cfg, path, consumers, environ=_env(args.listen))
        agent.notifier = Notifier.from_env()
        shipper = await _make_shipper(cfg, agent, args.embedded)
        if shipper is not None:
            agent.consumers.append(shipper)
        if agent.notifier is not None:
            agent.add_task(run_watchdog(agent.notifier, agent.healthy), "watchdog")
        await agent.run_forever()

    try:
        asyncio.run(main())
    except HostmonError as e:
        log.error("cannot start", extra={"error": str(e)})
        return 1
    except OSError as e:
        log.error("cannot start", extra={"error": str(e)})
        return 1
    if hung_threads():
        # A collector thread stuck in the kernel (dead NFS) cannot be joined; don't hang the exit.
        log.warning("exiting with collector threads still blocked", extra={"threads": hung_threads()})
        logging.shutdown()
        os._exit(0)
    return 0


async def _make_shipper(cfg: config_mod.Config, agent: Any, embedded: Any) -> Any:
    """The shipper (and, with no ingest_url, the embedded ingest), unless shipping is off."""
    if not cfg.shipping.enabled:
        return None
    from hostmond.agent.shipping.runtime import make_shipper

    return await make_shipper(cfg, agent, embedded)


def cmd_check_config(args: argparse.Namespace) -> int:
    from hostmond.agent.registry import discover
    from hostmond.agent.runtime import build_collectors

    cfg = _load_or_exit(args.file)
    classes, plugin_errors = discover()
    _, errs = build_collectors(cfg, classes, persist_state=False)
    bad = 0
    for e in plugin_errors + errs:
        if "no collector named" in e.reason:
            print(f"hostmon: warning: {e}", file=sys.stderr)
        else:
            print(f"hostmon: config error: {e}", file=sys.stderr)
            bad += 1
    from hostmond.agent.shipping.runtime import check_shipping

    try:
        check_shipping(cfg)
    except HostmonError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        bad += 1
    if bad:
        return 2
    print(f"{args.file}: OK")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hostmond.agent.runtime import Agent

    cfg = _load_or_exit(_config_path(args.config))
    logs.setup(cfg.log_level if args.verbose else "error")
    if not args.once:
        print("hostmon: collect needs --once", file=sys.stderr)
        return 2

    async def main() -> tuple[Agent, list[Any], list[Any]]:
        agent = Agent(cfg, None, [])
        samples, events = await agent.collect_once(only=args.collector or None)
        for e in agent.plugin_errors:
            print(f"hostmon: warning: {e}", file=sys.stderr)
        return agent, samples, events

    agent, samples, events = asyncio.run(main())
    if args.format == "json":
        out = {
            "samples": [s.to_dict() for s in samples],
            "events": [e.to_dict() for e in events],
        }
        json.dump(out, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(agent.store.renderer.render(samples).decode())
    return 0


def cmd_config_sample(args: argparse.Namespace) -> int:
    from hostmond.agent.registry import discover

    classes, _ = discover()
    sys.stdout.write(config_mod.sample_config(classes))
    return 0


def register(sub: Any, embedded: Any = None) -> None:
    """Add the agent's commands to the ``hostmon`` parser (:mod:`hostmond.cli`).

    ``embedded`` is the embedded ingest ``hostmon run`` ships to when no
    ``shipping.ingest_url`` is set (see :func:`hostmond.agent.shipping.runtime.make_shipper`).
    """
    r = sub.add_parser("run", help="run the agent daemon")
    r.add_argument("--config", "-c", help=f"TOML config file (default: ${DEFAULT_CONFIG_ENV}, else built-in defaults)")
    r.add_argument("--listen", help="HOST:PORT for /metrics (overrides http.listen)")
    r.set_defaults(func=cmd_run, embedded=embedded)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    o = sub.add_parser("collect", help="run the collectors once and print the result")
    o.add_argument("--once", action="store_true", help="collect once and exit (required)")
    o.add_argument("--format", choices=("prom", "json"), default="prom")
    o.add_argument("--config", "-c")
    o.add_argument("--collector", action="append", help="only this collector (repeatable)")
    o.add_argument("--verbose", "-v", action="store_true", help="log to stderr at the configured level")
    o.set_defaults(func=cmd_collect)

    cf = sub.add_parser("config", help="config helpers")
    cfs = cf.add_subparsers(dest="config_command", required=True)
    s = cfs.add_parser("sample", help="print the sample config")
    s.set_defaults(func=cmd_config_sample)
