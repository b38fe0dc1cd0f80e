"""``hostmon ingest run|query``: the reference ingest's command line.

    hostmon ingest run --config FILE [--listen HOST:PORT]
    hostmon ingest check-config FILE
    hostmon ingest query --db PATH --tenant T [--name N] [--since T] [--until T]
                         [--events [--kind K]] [--limit N] [--format json|table]

``--since``/``--until`` take unix seconds, an ISO 8601 time, or a duration
back from now (``15m``, ``2h``, ``7d``). Also runnable as ``python -m hostmond.ingest.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import sys
import time
from typing import Any

from hostmond.core.command import run_command
from hostmond.core.errors import ConfigError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds, ISO 8601 (naive means UTC), or a duration back from now (``15m``)."""
    t = text.strip()
    m = _DURATION.match(t)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(t)  # 3.11 reads a trailing Z too
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not unix seconds, an ISO 8601 time or a duration like 15m") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


def cmd_run(args: argparse.Namespace) -> int:
    from hostmond.ingest import config as cfgmod
    from hostmond.ingest.server import serve

    from hostmond.core import logs

    cfg = cfgmod.load(args.config)
    if args.listen:
        from hostmond.core.validate import parse_listen

        try:
            parse_listen(args.listen)
        except ValueError as e:
            raise ConfigError("--listen", "listen", str(e)) from None
        cfg.listen = args.listen
    logs.setup(args.log_level)
    cfgmod.load_keys(cfg)  # refuse to start on a bad or too-open key before listening
    cfgmod.check_web(cfg)  # and on TLS files that do not load

    def ready(url: str) -> None:
        # One line on stdout that scripts (and tests) can wait for.
        print(f"hostmon ingest listening on {url}", flush=True)

    asyncio.run(serve(cfg, on_ready=ready))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from hostmond.ingest import config as cfgmod

    cfg = cfgmod.load(args.file)
    keys = cfgmod.load_keys(cfg)
    web = cfgmod.check_web(cfg)
    print(f"{args.file}: ok ({len(keys.agents)} agents enrolled, {len(keys.private)} ingest keys; {web})")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import sqlite3  # not at import: every `hostmon` start registers this module's commands

    from hostmond.ingest.query import open_db, query_events, query_samples, write_rows

    try:
        conn = open_db(args.db)
    except FileNotFoundError:
        print(f"hostmon ingest query: {args.db}: no such database", file=sys.stderr)
        return 1
    except sqlite3.Error as e:
        print(f"hostmon ingest query: {args.db}: {e}", file=sys.stderr)
        return 1
    try:
        rows: Any
        if args.events:
            rows = query_events(conn, args.tenant, args.kind, args.since, args.until, args.limit)
        else:
            rows = query_samples(conn, args.tenant, args.name, args.since, args.until, args.limit)
        write_rows(rows, args.events, args.format, sys.stdout)
    except sqlite3.Error as e:
        print(f"hostmon ingest query: {args.db}: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


def register(subparsers: Any) -> None:
    """Add ``ingest run|check-config|query`` to the ``hostmon`` command's subparsers."""
    ing = subparsers.add_parser("ingest", help="the reference ingest (receive, verify, store batches)")
    sub = ing.add_subparsers(dest="ingest_command", required=True)

    r = sub.add_parser("run", help="run the ingest server")
    r.add_argument("--config", "-c", required=True, help="ingest TOML config file")
    r.add_argument("--listen", help="HOST:PORT (overrides listen in the config)")
    r.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate an ingest config and its key files")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    q = sub.add_parser("query", help="read samples or events back from the ingest's SQLite database")
    q.add_argument("--db", required=True, help="the ingest's SQLite file (sqlite.path)")
    q.add_argument("--tenant", required=True, help="tenant id")
    q.add_argument("--name", help="metric name (samples)")
    q.add_argument("--kind", help="event kind (with --events)")
    q.add_argument("--since", type=parse_time, help="from this time (unix seconds, ISO 8601, or 15m/2h/7d ago)")
    q.add_argument("--until", type=parse_time, help="before this time (same forms)")
    q.add_argument("--events", action="store_true", help="events instead of samples")
    q.add_argument("--limit", type=int, help="at most this many rows")
    q.add_argument("--format", choices=("json", "table"), default="table")
    q.set_defaults(func=cmd_query)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hostmond.ingest.cli")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(["ingest", *argv])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
