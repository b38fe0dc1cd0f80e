"""``hostmon ingest run|query``: the reference ingest's command line.

    hostmon ingest run --config FILE [--listen HOST:PORT]
    hostmon ingest check-config FILE
    hostmon ingest query --db PATH --tenant T [--name N] [--since T] [--until T]
                         [--events [--kind K]] [--limit N] [--format json|table]
    hostmon ingest audit verify (--config FILE | --dir DIR --public-key FILE...)
    hostmon ingest audit show (--config FILE | --dir DIR) [--type T] [--last N] [--format json|table]

``--since``/``--until`` take unix seconds, an ISO 8601 time, or a duration
back from now (``15m``, ``2h``, ``7d``). Also runnable as ``python -m hostmond.ingest.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
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
    trail = "audit trail off"
    if cfg.audit.enabled:
        from hostmond.ingest import audit

        directory, key_path = audit.paths(cfg)
        if os.path.lexists(key_path):
            audit.load_signing_key(key_path, create=False)  # too open, malformed: refused here as at start
        trail = f"audit trail in {directory}"
    print(f"{args.file}: ok ({len(keys.agents)} agents enrolled, {len(keys.private)} ingest keys; {web}; {trail})")
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


def _audit_location(args: argparse.Namespace) -> tuple[str, list[str]]:
    """(audit directory, trusted public key files) from --config or --dir/--public-key."""
    from hostmond.ingest import audit
    from hostmond.ingest import config as cfgmod

    if args.config:
        cfg = cfgmod.load(args.config)
        directory, key = audit.paths(cfg)
        pub = key[:-4] + ".pub" if key.endswith(".key") else key
        keys = list(getattr(args, "public_key", None) or []) or [pub if os.path.exists(pub) else key]
        return (args.dir or directory), keys
    if not args.dir:
        raise ConfigError("--dir", "", "give --config FILE (the ingest's) or --dir DIR")
    return args.dir, list(getattr(args, "public_key", None) or [])


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from hostmond.ingest import audit

    directory, key_files = _audit_location(args)
    if not key_files:
        print("hostmon ingest audit verify: give --public-key FILE (the audit key's .pub): a key named in the log itself is never trusted", file=sys.stderr)
        return 2
    try:
        keys = audit.load_public_keys(key_files)
    except (OSError, ValueError) as e:
        print(f"hostmon ingest audit verify: {e}", file=sys.stderr)
        return 2
    res = audit.verify(directory, keys)
    if res.bad is not None:
        print(f"FAILED: first bad record: {res.bad}")
        print(f"  {res.records} records verified before it, {res.checkpoints} signed checkpoints")
        return 1
    print(f"OK: {res.records} records (seq {res.first_seq}..{res.last_seq}) in {res.segments} segments, "
          f"{res.checkpoints} signed checkpoints; {res.unsigned_tail} records after the last checkpoint")
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    import json

    from hostmond.ingest import audit

    directory, _ = _audit_location(args)
    if not audit.list_segments(directory):
        print(f"hostmon ingest audit show: {directory}: no audit log here", file=sys.stderr)
        return 1
    rows = [r for r in audit.read_records(directory) if not args.type or r.get("type") in args.type]
    if args.last:
        rows = rows[-args.last:]
    for r in rows:
        if args.format == "json":
            print(json.dumps(r, sort_keys=True))
        else:
            when = dt.datetime.fromtimestamp(float(r.get("t", 0)), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            data = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(r.get("data", {}).items()))
            print(f"{r.get('seq', '?'):>8} {when} {r.get('type', '?'):<26} {data}")
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

    a = sub.add_parser("audit", help="the ingest's audit trail: verify the hash chain and signatures, or print it")
    asub = a.add_subparsers(dest="audit_command", required=True)
    for name, func, text in (
        ("verify", cmd_audit_verify, "check the chain, the signed checkpoints and the head; name the first bad record (exit 1)"),
        ("show", cmd_audit_show, "print the audit records"),
    ):
        ap = asub.add_parser(name, help=text)
        ap.add_argument("--config", "-c", help="the ingest's TOML config (finds the audit directory and key)")
        ap.add_argument("--dir", help="the audit directory (overrides the config's)")
        if name == "verify":
            ap.add_argument("--public-key", action="append", help="trusted audit public key file (repeatable; default: the config's audit.pub)")
        else:
            ap.add_argument("--type", action="append", help="only records of this type (repeatable)")
            ap.add_argument("--last", type=int, help="only the last N records")
            ap.add_argument("--format", choices=("json", "table"), default="table")
        ap.set_defaults(func=func)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hostmond.ingest.cli")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(["ingest", *argv])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
