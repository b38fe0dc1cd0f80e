"""Read samples and events back from the ingest's SQLite database.

Used by ``hostmon ingest query``; opens the file read-only (WAL lets it read
while the ingest writes). The series index picks the blocks that hold records
of the tenant (and name) in the time range; their records are then filtered
exactly, so a query never returns another tenant's record.
"""

from __future__ import annotations

import json
import math
import re
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


# Control characters (C0, DEL, C1) and the backslash: a name or label value holding a
# newline must not forge a table row, nor an escape sequence reach the operator's terminal.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escape_text(s: str) -> str:
    """``s`` with control characters and backslashes escaped (``\\n``, ``\\x1b``): one safe line."""
    return _UNSAFE.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), s)


def _fmt_labels(labels: dict[str, str]) -> str:
    parts = (f'{escape_text(k)}="{escape_text(v).replace(chr(34), chr(92) + chr(34))}"' for k, v in sorted(labels.items()) if k != "tenant_id")
    return "{" + ",".join(parts) + "}"


def json_safe(v: Any) -> Any:
    """``v`` with NaN and infinities as the strings ``"NaN"``, ``"+Inf"``, ``"-Inf"`` (as Prometheus'
    HTTP API writes them): JSON has no such numbers, and ``json.dumps`` would write invalid JSON."""
    if type(v) is float and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


def _fmt_value(v: Any) -> str:
    if type(v) is float and not math.isfinite(v):
        return str(json_safe(v))
    return repr(v)


def write_rows(rows: Iterator[dict[str, Any]], events: bool, fmt: str, out: TextIO) -> int:
    """Write rows as JSON lines or an aligned table; returns how many.

    JSON lines are strict JSON (non-finite numbers as strings, see :func:`json_safe`;
    control characters escaped). Table cells have control characters escaped.
    """
    n = 0
    if fmt == "json":
        for r in rows:
            out.write(json.dumps(json_safe(r), sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n")
            n += 1
        return n
    table: list[tuple[str, ...]] = []
    if events:
        table.append(("TIME", "KIND", "LABELS", "FIELDS"))
        for r in rows:
            fields = json.dumps(json_safe(r["fields"]), sort_keys=True, allow_nan=False)  # ensure_ascii: no raw controls
            table.append((f"{r['time']:.3f}", escape_text(r["kind"]), _fmt_labels(r["labels"]), fields))
    else:
        table.append(("TIMESTAMP", "NAME", "LABELS", "VALUE"))
        for r in rows:
            table.append((f"{r['timestamp']:.3f}", escape_text(r["name"]), _fmt_labels(r["labels"]), _fmt_value(r["value"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out.writelines("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + "\n" for row in table)
    return len(table) - 1
