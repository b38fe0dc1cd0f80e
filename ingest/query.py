"""Read samples and events back from the ingest's SQLite database.

Used by ``hostmon ingest query``; opens the file read-only (WAL lets it read
while the ingest writes). The series index picks the blocks that hold records
of the tenant (and name) in the time range; their records are then filtered
exactly, so a query never returns another tenant's record.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any, TextIO

from hostmond.ingest.decode import EVENT, SAMPLE, read_block
from hostmond.ingest.sqlite_sink import connect_readonly


def _blocks(
    conn: sqlite3.Connection, tenant: str, kind: str, name: str | None, since: float | None, until: float | None
) -> Iterator[tuple[int, bytes]]:
    """(batch id, block) of the blocks whose index says they hold matching records, oldest first."""
    sql = "SELECT DISTINCT i.batch FROM series_index i WHERE i.tenant = ? AND i.kind = ?"
    args: list[Any] = [tenant, kind]
    if name is not None:
        sql += " AND i.name = ?"
        args.append(name)
    if since is not None:
        sql += " AND i.max_ts >= ?"
        args.append(since)
    if until is not None:
        sql += " AND i.min_ts < ?"
        args.append(until)
    sql += " ORDER BY i.batch"
    ids = [r[0] for r in conn.execute(sql, args)]
    for bid in ids:
        row = conn.execute("SELECT records FROM blocks WHERE batch = ?", (bid,)).fetchone()
        if row is not None:  # deleted by retention meanwhile
            yield bid, row[0]


def _matching(
    conn: sqlite3.Connection, tenant: str, kind: str, name: str | None, since: float | None, until: float | None
) -> list[dict[str, Any]]:
    key = "s" if kind == SAMPLE else "e"
    out: list[dict[str, Any]] = []
    for _bid, block in _blocks(conn, tenant, kind, name, since, until):
        for r in read_block(block):
            if key not in r or r["l"].get("tenant_id") != tenant:
                continue
            if name is not None and r[key] != name:
                continue
            t = r["t"]
            if (since is not None and t < since) or (until is not None and t >= until):
                continue
            out.append(r)
    out.sort(key=lambda r: r["t"])  # stable: receipt order among equal times
    return out


def query_samples(
    conn: sqlite3.Connection,
    tenant: str,
    name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples of ``tenant`` (optionally one metric name) with ``since <= ts < until``, by time."""
    rows = _matching(conn, tenant, SAMPLE, name, since, until)
    for r in rows[:limit] if limit is not None else rows:
        yield {"tenant_id": tenant, "name": r["s"], "type": r["k"], "labels": r["l"], "value": r["v"], "timestamp": r["t"]}


def query_events(
    conn: sqlite3.Connection,
    tenant: str,
    kind: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Events of ``tenant`` (optionally one kind) with ``since <= time < until``, by time."""
    rows = _matching(conn, tenant, EVENT, kind, since, until)
    for r in rows[:limit] if limit is not None else rows:
        yield {"tenant_id": tenant, "kind": r["e"], "labels": r["l"], "fields": r["f"], "time": r["t"]}


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
    out.writelines("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in table)
    return len(table) - 1
