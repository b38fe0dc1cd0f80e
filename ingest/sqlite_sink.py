"""The SQLite sink: batches, samples and events in one WAL database file.

Durability: a batch is acknowledged only after ``COMMIT`` returned. The
database runs in WAL mode with ``synchronous=FULL`` by default, so a committed
batch survives a SIGKILL of the process *and* a power loss (the WAL is fsynced
at every commit). ``synchronous=NORMAL`` (config ``sqlite.synchronous``) still
survives a SIGKILL of the process -- the WAL content is in the OS page cache,
which outlives the process -- but a power loss may lose the last commits; use
it only where the ingest host's storage is otherwise protected.

Dedupe: the ``batches`` row (agent id, sequence number, SHA-256 of the
envelope) is written in the *same* transaction as the batch's samples and
events, so "stored" and "remembered as stored" cannot diverge: either both are
on disk or neither is.

All writes go through one writer thread (:class:`SqliteSink` owns it), so the
event loop never waits on SQLite and there is exactly one writer connection.
Readers (``hostmon ingest query``) open their own read-only connection; WAL lets
them read while the ingest writes.

Retention runs periodically on the writer thread: by age (rows of batches
*received* longer ago than ``retention_seconds``; receipt order is rowid order,
so this is a range delete on the primary key) and by size (oldest batches'
rows are deleted until the used pages fit ``max_bytes``; freed pages are
returned to the file system with incremental vacuum). Dedupe records are kept
for ``dedupe_seconds`` (the maximum batch age plus clock skew): a batch older
than that is refused by age, so its record is no longer needed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    created REAL NOT NULL,
    received REAL NOT NULL,
    n_samples INTEGER NOT NULL,
    n_events INTEGER NOT NULL,
    first_sample INTEGER,
    first_event INTEGER,
    UNIQUE (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS batches_received ON batches (received);
CREATE INDEX IF NOT EXISTS batches_created ON batches (created);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_tenant_name_ts ON samples (tenant, name, ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    labels TEXT NOT NULL,
    fields TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant_ts ON events (tenant, ts);
"""

STORED = "stored"
DUPLICATE = "duplicate"
REPLAY = "replay"

SYNCHRONOUS_MODES = ("full", "normal")


@dataclasses.dataclass(slots=True)
class BatchRows:
    """One verified, decoded batch, ready to store.

    ``samples`` rows are ``(tenant, name, labels_json, value, ts)``;
    ``events`` rows are ``(tenant, kind, labels_json, fields_json, ts)``.
    """

    agent_id: str
    seq: int
    hash: bytes
    created: float
    samples: Sequence[tuple[str, str, str, float, float]]
    events: Sequence[tuple[str, str, str, str, float]]


@dataclasses.dataclass(slots=True)
class RetentionResult:
    samples_deleted: int = 0
    events_deleted: int = 0
    batches_forgotten: int = 0
    used_bytes: int = 0


def connect(path: str, synchronous: str = "full") -> sqlite3.Connection:
    """Open (creating) the database for writing, WAL mode, schema in place."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, mode=0o700, exist_ok=True)
    fresh = not os.path.exists(path)
    if fresh:
        # The database holds every tenant's data: not readable by others.
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if fresh:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # must precede the first table
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection (the query command); fails if the file does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class SqliteSink:
    """Owns the writer thread and its connection. All public coroutines are loop-safe."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "full",
        retention_seconds: float = 30 * 86400,
        max_bytes: int = 0,
        dedupe_seconds: float = 7 * 86400 + 600,
        store_samples: bool = True,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        self.dedupe_seconds = dedupe_seconds
        self.store_samples = store_samples
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- thread side ---------------------------------------------------------
    def _open_sync(self) -> None:
        self._conn = connect(self.path, self.synchronous)

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("sink not open")
        return self._conn

    def _lookup_sync(self, agent_id: str, seq: int) -> bytes | None:
        row = self._c().execute("SELECT hash FROM batches WHERE agent_id = ? AND seq = ?", (agent_id, seq)).fetchone()
        return bytes(row[0]) if row else None

    def _store_sync(self, b: BatchRows, received: float) -> str:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT hash FROM batches WHERE agent_id = ? AND seq = ?", (b.agent_id, b.seq)).fetchone()
            if row is not None:
                c.execute("ROLLBACK")
                return DUPLICATE if bytes(row[0]) == b.hash else REPLAY
            n_samples = len(b.samples) if self.store_samples else 0
            cur = c.execute(
                "INSERT INTO batches (agent_id, seq, hash, created, received, n_samples, n_events) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (b.agent_id, b.seq, b.hash, b.created, received, n_samples, len(b.events)),
            )
            batch_id = cur.lastrowid
            first_sample = first_event = None
            if n_samples:
                first_sample = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM samples").fetchone()[0]
                c.executemany(
                    "INSERT INTO samples (batch, tenant, name, labels, value, ts) VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch_id, *r) for r in b.samples],
                )
            if b.events:
                first_event = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
                c.executemany(
                    "INSERT INTO events (batch, tenant, kind, labels, fields, ts) VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch_id, *r) for r in b.events],
                )
            if first_sample is not None or first_event is not None:
                c.execute("UPDATE batches SET first_sample = ?, first_event = ? WHERE id = ?", (first_sample, first_event, batch_id))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return STORED

    def _used_bytes_sync(self) -> int:
        c = self._c()
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def _delete_before_batch_sync(self, batch_id: int) -> tuple[int, int]:
        """Delete the samples and events of every batch with id < batch_id (inside a transaction).

        Row ids grow with receipt, so this is a range delete on the primary key:
        everything below the first row of the first later batch that has data.
        The batches rows stay (dedupe) with their data pointers cleared.
        """
        c = self._c()
        s_cut, e_cut = c.execute(
            "SELECT MIN(first_sample), MIN(first_event) FROM batches WHERE id >= ?", (batch_id,)
        ).fetchone()
        if s_cut is None:
            s_cut = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM samples").fetchone()[0]
        if e_cut is None:
            e_cut = c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM events").fetchone()[0]
        ns = c.execute("DELETE FROM samples WHERE id < ?", (s_cut,)).rowcount
        ne = c.execute("DELETE FROM events WHERE id < ?", (e_cut,)).rowcount
        c.execute(
            "UPDATE batches SET first_sample = NULL, first_event = NULL WHERE id < ? "
            "AND (first_sample IS NOT NULL OR first_event IS NOT NULL)",
            (batch_id,),
        )
        return ns, ne

    def _retention_sync(self, now: float) -> RetentionResult:
        c = self._c()
        res = RetentionResult()
        c.execute("BEGIN IMMEDIATE")
        try:
            if self.retention_seconds > 0:
                row = c.execute("SELECT MIN(id) FROM batches WHERE received >= ?", (now - self.retention_seconds,)).fetchone()
                cut = row[0] if row[0] is not None else (c.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM batches").fetchone()[0])
                ns, ne = self._delete_before_batch_sync(cut)
                res.samples_deleted += ns
                res.events_deleted += ne
            if self.dedupe_seconds > 0:
                res.batches_forgotten = c.execute(
                    "DELETE FROM batches WHERE created < ? AND received < ? "
                    "AND first_sample IS NULL AND first_event IS NULL",
                    (now - self.dedupe_seconds, now - self.dedupe_seconds),
                ).rowcount
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if self.max_bytes > 0:
            # Delete the oldest tenth of the stored batches at a time until the
            # used pages fit. Dedupe rows stay (they are small and needed).
            for _ in range(64):
                used = self._used_bytes_sync()
                if used <= self.max_bytes:
                    break
                lo, hi = c.execute(
                    "SELECT MIN(id), MAX(id) FROM batches WHERE first_sample IS NOT NULL OR first_event IS NOT NULL"
                ).fetchone()
                if lo is None:
                    break
                alive = lo
                step = max(1, (hi - alive + 1) // 10)
                c.execute("BEGIN IMMEDIATE")
                try:
                    ns, ne = self._delete_before_batch_sync(alive + step)
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
                res.samples_deleted += ns
                res.events_deleted += ne
                if ns == 0 and ne == 0:
                    break
        if res.samples_deleted or res.events_deleted or res.batches_forgotten:
            c.execute("PRAGMA incremental_vacuum")
        res.used_bytes = self._used_bytes_sync()
        return res

    def _counts_sync(self) -> dict[str, int]:
        c = self._c()
        return {
            t: int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608 - fixed names
            for t in ("batches", "samples", "events")
        }

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- loop side -----------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)

    async def lookup(self, agent_id: str, seq: int) -> bytes | None:
        """The stored hash of (agent_id, seq), or None."""
        return await self._run(self._lookup_sync, agent_id, seq)  # type: ignore[no-any-return]

    async def store(self, batch: BatchRows) -> str:
        """Store atomically with its dedupe record: returns STORED, DUPLICATE or REPLAY (nothing written)."""
        return await self._run(self._store_sync, batch, time.time())  # type: ignore[no-any-return]

    async def retention(self, now: float | None = None) -> RetentionResult:
        return await self._run(self._retention_sync, time.time() if now is None else now)  # type: ignore[no-any-return]

    async def used_bytes(self) -> int:
        return await self._run(self._used_bytes_sync)  # type: ignore[no-any-return]

    async def counts(self) -> dict[str, int]:
        return await self._run(self._counts_sync)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    # For synchronous callers (tests, bench) that own no loop.
    def open_sync(self) -> None:
        self._executor.submit(self._open_sync).result()

    def store_sync(self, batch: BatchRows, received: float | None = None) -> str:
        return self._executor.submit(self._store_sync, batch, time.time() if received is None else received).result()  # type: ignore[no-any-return]

    def retention_sync(self, now: float | None = None) -> RetentionResult:
        return self._executor.submit(self._retention_sync, time.time() if now is None else now).result()  # type: ignore[no-any-return]

    def close_sync(self) -> None:
        self._executor.submit(self._close_sync).result()
        self._executor.shutdown(wait=True)
