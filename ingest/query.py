"""Read samples and events back from the ingest's SQLite database.

Used by ``hostmon ingest query``; opens the file read-only (WAL lets it read
while the ingest writes).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any, TextIO

from ingest.sqlite_sink import connect_readonly


def query_samples(
    conn: sqlite3.Connection,
    tenant: str,
    name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples of ``tenant`` (optionally one metric name) with ``since <= ts < until``, by time."""
    sql = "SELECT name, labels, value, ts FROM samples WHERE tenant = ?"
    args: list[Any] = [tenant]
    if name is not None:
        sql += " AND name = ?"
        args.append(name)
    if since is not None:
        sql += " AND ts >= ?"
        args.append(since)
    if until is not None:
        sql += " AND ts < ?"
        args.append(until)
    sql += " ORDER BY ts, id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    for n, labels, value, ts in conn.execute(sql, args):
        yield {"tenant_id": tenant, "name": n, "labels": json.loads(labels), "value": value, "timestamp": ts}


def query_events(
    conn: sqlite3.Connection,
    tenant: str,
    kind: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Events of ``tenant`` (optionally one kind) with ``since <= time < until``, by time."""
    sql = "SELECT kind, labels, fields, ts FROM events WHERE tenant = ?"
    args: list[Any] = [tenant]
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    if since is not None:
        sql += " AND ts >= ?"
        args.append(since)
    if until is not None:
        sql += " AND ts < ?"
        args.append(until)
    sql += " ORDER BY ts, id"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    for k, labels, fields, ts in conn.execute(sql, args):
        yield {"tenant_id": tenant, "kind": k, "labels": json.loads(labels), "fields": json.loads(fields), "time": ts}


def open_db(path: str) -> sqlite3.Connection:
    return connect_readonly(path)


def _fmt_labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "tenant_id") + "}"


def write_rows(rows: Iterator[dict[str, Any]], events: bool, fmt: str, out: TextIO) -> int:
    """Write rows as JSON lines or an aligned table; returns how many."""
    n = 0
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n")
            n += 1
        return n
    table: list[tuple[str, ...]] = []
    if events:
        table.append(("TIME", "KIND", "LABELS", "FIELDS"))
        for r in rows:
            table.append((f"{r['time']:.3f}", r["kind"], _fmt_labels(r["labels"]), json.dumps(r["fields"], sort_keys=True)))
    else:
        table.append(("TIMESTAMP", "NAME", "LABELS", "VALUE"))
        for r in rows:
            table.append((f"{r['timestamp']:.3f}", r["name"], _fmt_labels(r["labels"]), repr(r["value"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")
    return len(table) - 1
