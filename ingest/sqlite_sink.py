"""The SQLite sink: batches, samples and events in one WAL database file.

Durability: a batch is acknowledged only after ``COMMIT`` returned. The
database runs in WAL mode with ``synchronous=FULL`` by default, so a committed
batch survives a SIGKILL of the process *and* a power loss (the WAL is fsynced
at every commit). ``synchronous=NORMAL`` (config ``sqlite.synchronous``) still
survives a SIGKILL of the process -- the WAL content is in the OS page cache,
which outlives the process -- but a power loss may lose the last commits; use
it only where the ingest host's storage is otherwise protected.

Dedupe: the ``batches`` row (agent id, instance, sequence number, SHA-256 of
the envelope; the instance tells apart processes sharing one agent identity) is written in the *same* transaction as the batch's samples and
events, so "stored" and "remembered as stored" cannot diverge: either both are
on disk or neither is.

All writes go through one writer thread (:class:`SqliteSink` owns it), so the
event loop never waits on SQLite and there is exactly one writer connection.
Readers (``hostmon ingest query``) open their own read-only connection; WAL lets
them read while the ingest writes.

Layout (like a TSDB's chunks, so a batch costs a handful of rows, not one row
per sample): ``blocks`` holds each stored batch's validated records as one
zstd-compressed msgpack block; ``series_index`` has one row per (batch, tenant,
sample name or event kind) with the count and time range, so a query reads
only the blocks that hold what it asks for and filters their records by
tenant, name and time (see :mod:`hostmond.ingest.query`).

Retention runs periodically on the writer thread: by age (blocks of batches
*received* longer ago than ``retention_seconds``; receipt order is batch id
order, so this is a range delete on the primary key) and by size (the oldest
blocks are deleted until the used pages fit ``max_bytes``; freed pages are
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
from typing import Any

from hostmond.ingest.decode import EVENT, SAMPLE, Decoded

SCHEMA_VERSION = 2

_BATCHES_TABLE = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    instance TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    created REAL NOT NULL,
    received REAL NOT NULL,
    n_samples INTEGER NOT NULL,
    n_events INTEGER NOT NULL,
    UNIQUE (agent_id, instance, seq)
)
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _BATCHES_TABLE + """;
CREATE INDEX IF NOT EXISTS batches_received ON batches (received);
CREATE TABLE IF NOT EXISTS blocks (
    batch INTEGER PRIMARY KEY,
    records BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS series_index (
    batch INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    min_ts REAL NOT NULL,
    max_ts REAL NOT NULL,
    PRIMARY KEY (batch, tenant, kind, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS series_index_lookup ON series_index (tenant, kind, name, max_ts);
"""

STORED = "stored"
DUPLICATE = "duplicate"
REPLAY = "replay"

SYNCHRONOUS_MODES = ("full", "normal")


@dataclasses.dataclass(slots=True)
class RetentionResult:
    blocks_deleted: int = 0
    samples_deleted: int = 0
    events_deleted: int = 0
    batches_forgotten: int = 0
    used_bytes: int = 0


def connect(path: str, synchronous: str = "full", wal_max_bytes: int = 16 * 1024 * 1024) -> sqlite3.Connection:
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
    # After each checkpoint the WAL file is cut back to this size: a WAL that grew while the
    # disk was full does not keep the space the main file needs to take its pages back.
    conn.execute(f"PRAGMA journal_size_limit = {int(wal_max_bytes)}")
    # and checkpoint when it reaches that size (SQLite's default is every 1000 pages, 4 MiB).
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, int(wal_max_bytes) // page_size)}")
    _migrate(conn)
    conn.executescript(_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database written by an older ingest to SCHEMA_VERSION, in one transaction."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return  # a new database
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"database schema version {version} is newer than this ingest's ({SCHEMA_VERSION})")
    if version == 1:
        # 1 -> 2: batches are unique per (agent id, instance, seq); rows of version 1 get instance ''.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("ALTER TABLE batches RENAME TO batches_v1")
            conn.execute("DROP INDEX IF EXISTS batches_received")
            conn.execute(_BATCHES_TABLE)
            conn.execute(
                "INSERT INTO batches (id, agent_id, instance, seq, hash, created, received, n_samples, n_events) "
                "SELECT id, agent_id, '', seq, hash, created, received, n_samples, n_events FROM batches_v1"
            )
            conn.execute("DROP TABLE batches_v1")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def connect_readonly(path: str) -> sqlite3.Connection:
    """A read-only connection (the query command); fails if the file does not exist."""
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Stored batches (dedupe records), blocks, samples and events."""
    out = {
        "batches": int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]),
        "blocks": int(conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]),
        "samples": 0,
        "events": 0,
    }
    for kind, n in conn.execute("SELECT kind, COALESCE(SUM(n), 0) FROM series_index GROUP BY kind"):
        out["samples" if kind == SAMPLE else "events"] = int(n)
    return out


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
        wal_max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.retention_seconds = retention_seconds
        self.max_bytes = max_bytes
        self.dedupe_seconds = dedupe_seconds
        self.wal_max_bytes = wal_max_bytes
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- thread side ---------------------------------------------------------
    def _open_sync(self) -> None:
        self._conn = connect(self.path, self.synchronous, self.wal_max_bytes)

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("sink not open")
        return self._conn

    def _lookup_sync(self, agent_id: str, instance: str, seq: int) -> bytes | None:
        row = self._c().execute(
            "SELECT hash FROM batches WHERE agent_id = ? AND instance = ? AND seq = ?", (agent_id, instance, seq)
        ).fetchone()
        return bytes(row[0]) if row else None

    def _store_sync(self, b: Decoded, received: float) -> str:
        c = self._c()
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute(
                "SELECT hash FROM batches WHERE agent_id = ? AND instance = ? AND seq = ?", (b.agent_id, b.instance, b.seq)
            ).fetchone()
            if row is not None:
                c.execute("ROLLBACK")
                return DUPLICATE if bytes(row[0]) == b.hash else REPLAY
            cur = c.execute(
                "INSERT INTO batches (agent_id, instance, seq, hash, created, received, n_samples, n_events) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (b.agent_id, b.instance, b.seq, b.hash, b.created, received, b.n_samples, b.n_events),
            )
            batch_id = cur.lastrowid
            if b.index:
                c.execute("INSERT INTO blocks (batch, records) VALUES (?, ?)", (batch_id, b.block))
                c.executemany(
                    "INSERT INTO series_index (batch, tenant, kind, name, n, min_ts, max_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(batch_id, r.tenant, r.kind, r.name, r.n, r.min_ts, r.max_ts) for r in b.index],
                )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        return STORED

    def _probe_sync(self) -> None:
        """After a storage error: move the WAL into the main file and truncate it, then write one row.

        Raises sqlite3.Error while the database still cannot take a write. The
        checkpoint comes first so the space freed on the disk goes to the main
        file, not to a WAL that only grows (SQLite's automatic checkpoints are
        passive and never truncate).
        """
        c = self._c()
        busy, _log, _done = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise sqlite3.OperationalError("WAL checkpoint could not complete (database busy)")
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?)", (str(time.time()),))
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _used_bytes_sync(self) -> int:
        c = self._c()
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def _delete_blocks_before_sync(self, batch_id: int) -> tuple[int, int, int]:
        """Delete the blocks (and their index rows) of every batch with id < batch_id.

        Runs inside the caller's transaction; returns (blocks, samples, events) deleted.
        The batches rows stay: they are the dedupe records.
        """
        c = self._c()
        counts = dict(
            c.execute(
                "SELECT kind, COALESCE(SUM(n), 0) FROM series_index WHERE batch < ? GROUP BY kind", (batch_id,)
            ).fetchall()
        )
        nb = c.execute("DELETE FROM blocks WHERE batch < ?", (batch_id,)).rowcount
        c.execute("DELETE FROM series_index WHERE batch < ?", (batch_id,))
        return nb, int(counts.get(SAMPLE, 0)), int(counts.get(EVENT, 0))

    def _retention_sync(self, now: float) -> RetentionResult:
        c = self._c()
        res = RetentionResult()

        def add(r: tuple[int, int, int]) -> None:
            res.blocks_deleted += r[0]
            res.samples_deleted += r[1]
            res.events_deleted += r[2]

        c.execute("BEGIN IMMEDIATE")
        try:
            if self.retention_seconds > 0:
                cut = c.execute(
                    "SELECT COALESCE((SELECT MIN(id) FROM batches WHERE received >= ?), (SELECT COALESCE(MAX(id), 0) + 1 FROM batches))",
                    (now - self.retention_seconds,),
                ).fetchone()[0]
                add(self._delete_blocks_before_sync(cut))
            if self.dedupe_seconds > 0:
                res.batches_forgotten = c.execute(
                    "DELETE FROM batches WHERE created < ? AND received < ? "
                    "AND id < (SELECT COALESCE(MIN(batch), 1 << 62) FROM blocks)",
                    (now - self.dedupe_seconds, now - self.dedupe_seconds),
                ).rowcount
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if self.max_bytes > 0:
            # Delete the oldest tenth of the remaining blocks at a time until the
            # used pages fit. Dedupe rows stay (small, and needed).
            for _ in range(64):
                if self._used_bytes_sync() <= self.max_bytes:
                    break
                lo, n = c.execute("SELECT MIN(batch), COUNT(*) FROM blocks").fetchone()
                if lo is None:
                    break
                cut = c.execute(
                    "SELECT batch FROM blocks ORDER BY batch LIMIT 1 OFFSET ?", (max(1, n // 10),)
                ).fetchone()
                cut_id = cut[0] if cut is not None else lo + 1
                c.execute("BEGIN IMMEDIATE")
                try:
                    add(self._delete_blocks_before_sync(cut_id))
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
                c.execute("PRAGMA incremental_vacuum")
        if res.blocks_deleted or res.batches_forgotten:
            c.execute("PRAGMA incremental_vacuum")
        res.used_bytes = self._used_bytes_sync()
        return res

    def _counts_sync(self) -> dict[str, int]:
        return counts(self._c())

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- loop side -----------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)

    async def lookup(self, agent_id: str, instance: str, seq: int) -> bytes | None:
        """The stored hash of (agent_id, instance, seq), or None."""
        return await self._run(self._lookup_sync, agent_id, instance, seq)  # type: ignore[no-any-return]

    async def store(self, batch: Decoded) -> str:
        """Store atomically with its dedupe record: returns STORED, DUPLICATE or REPLAY (nothing written)."""
        return await self._run(self._store_sync, batch, time.time())  # type: ignore[no-any-return]

    async def retention(self, now: float | None = None) -> RetentionResult:
        return await self._run(self._retention_sync, time.time() if now is None else now)  # type: ignore[no-any-return]

    async def probe(self) -> None:
        """One checkpoint and test write (see _probe_sync); raises sqlite3.Error while storage fails."""
        await self._run(self._probe_sync)

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

    def store_sync(self, batch: Decoded, received: float | None = None) -> str:
        return self._executor.submit(self._store_sync, batch, time.time() if received is None else received).result()  # type: ignore[no-any-return]

    def retention_sync(self, now: float | None = None) -> RetentionResult:
        return self._executor.submit(self._retention_sync, time.time() if now is None else now).result()  # type: ignore[no-any-return]

    def close_sync(self) -> None:
        self._executor.submit(self._close_sync).result()
        self._executor.shutdown(wait=True)
