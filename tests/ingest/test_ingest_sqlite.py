"""SQLite sink and query: atomic store + dedupe, durability settings, retention by age and size, queries."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostmond.ingest.decode import Decoder, DecoderSpec
from hostmond.ingest.query import open_db, query_events, query_samples
from hostmond.ingest.sqlite_sink import DUPLICATE, REPLAY, STORED, SqliteSink, counts
from ingest_helpers import REPO, make_keys, seal


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    k = make_keys(tmp_path_factory.mktemp("keys"))
    spec = DecoderSpec(
        private_keys=((k.ingest.alg, k.ingest.raw),),
        agents=(("a", k.agent.public.raw, ("acme", "globex")),),
        max_body_bytes=1 << 24, max_decompressed_bytes=1 << 26, max_records=100_000,
        max_batch_age_seconds=10 * 86400, max_clock_skew_seconds=300,
    )
    return k, Decoder(spec)


def batch(codec, seq: int, recs: list[dict], created: float | None = None):  # type: ignore[no-untyped-def]
    k, dec = codec
    return dec.decode(seal(k, seq, recs, created=created))


def s(name: str, v: float, t: float, tenant: str = "acme", **labels: str) -> dict:
    return {"s": name, "k": "gauge", "v": v, "l": {"tenant_id": tenant, **labels}, "t": t}


def e(kind: str, t: float, tenant: str = "acme", **fields: object) -> dict:
    return {"e": kind, "t": t, "f": fields, "l": {"tenant_id": tenant}}


def test_store_is_atomic_with_its_dedupe_record(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    sink = SqliteSink(str(tmp_path / "db.sqlite"))
    sink.open_sync()
    try:
        b1 = batch(codec, 1, [s("m", 1, 100.0), e("login", 100.0, user="x")])
        assert sink.store_sync(b1) == STORED
        assert sink.store_sync(b1) == DUPLICATE
        assert sink.store_sync(batch(codec, 1, [s("m", 2, 100.0)])) == REPLAY
        conn = open_db(str(tmp_path / "db.sqlite"))
        assert counts(conn) == {"batches": 1, "blocks": 1, "samples": 1, "events": 1}
        # A failure inside the transaction leaves neither data nor dedupe record.
        b2 = batch(codec, 2, [s("m", 3, 101.0)])
        b2.index.append(b2.index[0])  # a duplicate primary key makes the index insert fail mid-transaction
        with pytest.raises(sqlite3.IntegrityError):
            sink.store_sync(b2)
        assert counts(conn) == {"batches": 1, "blocks": 1, "samples": 1, "events": 1}
        assert sink.store_sync(batch(codec, 2, [s("m", 3, 101.0)])) == STORED
        conn.close()
    finally:
        sink.close_sync()


def test_database_is_wal_fsynced_and_private(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    sink = SqliteSink(str(path))
    sink.open_sync()
    try:
        c = sink._executor.submit(lambda: (sink._c().execute("PRAGMA journal_mode").fetchone()[0], sink._c().execute("PRAGMA synchronous").fetchone()[0])).result()
        assert c == ("wal", 2)  # 2 = FULL
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        sink.close_sync()
    sink = SqliteSink(str(path), synchronous="normal")
    sink.open_sync()
    try:
        assert sink._executor.submit(lambda: sink._c().execute("PRAGMA synchronous").fetchone()[0]).result() == 1
    finally:
        sink.close_sync()


def test_retention_by_age_deletes_old_batches_and_keeps_dedupe_records(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    sink = SqliteSink(str(tmp_path / "db.sqlite"), retention_seconds=3600, dedupe_seconds=86400)
    sink.open_sync()
    try:
        old = batch(codec, 1, [s("m", 1, now - 7200), e("x", now - 7200)])
        sink.store_sync(old, received=now - 7200)
        sink.store_sync(batch(codec, 2, [s("m", 2, now - 7000)]), received=now - 7000)
        keep = batch(codec, 3, [s("m", 3, now)])
        sink.store_sync(keep, received=now)
        res = sink.retention_sync(now)
        assert (res.blocks_deleted, res.samples_deleted, res.events_deleted) == (2, 2, 1)
        conn = open_db(str(tmp_path / "db.sqlite"))
        assert counts(conn) == {"batches": 3, "blocks": 1, "samples": 1, "events": 0}
        assert [r["value"] for r in query_samples(conn, "acme")] == [3.0]
        # the dedupe record outlives the data: a retry of batch 1 is still a duplicate, not stored again
        assert sink.store_sync(old) == DUPLICATE
        assert counts(conn)["samples"] == 1
        # ... and is forgotten once older than the replay window (batches older than that are refused by age)
        res = sink.retention_sync(now + 2 * 86400)
        assert res.batches_forgotten == 3 and res.blocks_deleted == 1
        assert counts(conn) == {"batches": 0, "blocks": 0, "samples": 0, "events": 0}
        conn.close()
    finally:
        sink.close_sync()


def test_retention_by_size_drops_the_oldest_blocks_first(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    sink = SqliteSink(str(tmp_path / "db.sqlite"), retention_seconds=0, max_bytes=0)
    sink.open_sync()
    try:
        for seq in range(1, 41):
            recs = [s("m", float(seq * 1000 + i), now + seq, i=str(i), pad=os.urandom(40).hex()) for i in range(100)]
            sink.store_sync(batch(codec, seq, recs))
        full = sink.retention_sync(now).used_bytes
        sink.max_bytes = full // 2
        res = sink.retention_sync(now)
        assert res.used_bytes <= full // 2
        assert 0 < res.blocks_deleted < 40
        conn = open_db(str(tmp_path / "db.sqlite"))
        kept = sorted({int(r["value"]) // 1000 for r in query_samples(conn, "acme")})
        assert kept == list(range(res.blocks_deleted + 1, 41))  # exactly the newest survive
        assert counts(conn)["samples"] == len(kept) * 100
        conn.close()
    finally:
        sink.close_sync()


def test_queries_filter_by_tenant_name_and_time(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    sink = SqliteSink(str(tmp_path / "db.sqlite"))
    sink.open_sync()
    t = time.time() - 100
    try:
        sink.store_sync(batch(codec, 1, [s("a", 1, t), s("b", 2, t + 1), s("a", 3, t + 2, tenant="globex"), e("login", t + 1, user="u")]))
        sink.store_sync(batch(codec, 2, [s("a", 4, t + 3), s("a", 5, t + 10), e("login", t + 20, tenant="globex", user="v")]))
    finally:
        sink.close_sync()
    conn = open_db(str(tmp_path / "db.sqlite"))
    assert [r["value"] for r in query_samples(conn, "acme")] == [1, 2, 4, 5]
    assert [r["value"] for r in query_samples(conn, "acme", "a")] == [1, 4, 5]
    assert [r["value"] for r in query_samples(conn, "acme", "a", since=t + 1, until=t + 10)] == [4]
    assert [r["value"] for r in query_samples(conn, "globex")] == [3]  # never another tenant's samples
    assert all(r["labels"]["tenant_id"] == "globex" for r in query_samples(conn, "globex"))
    assert [r["fields"] for r in query_events(conn, "acme")] == [{"user": "u"}]
    assert [r["fields"] for r in query_events(conn, "globex", "login")] == [{"user": "v"}]
    assert list(query_samples(conn, "nobody")) == []
    assert [r["value"] for r in query_samples(conn, "acme", limit=2)] == [1, 2]
    conn.close()

    # The command line, both formats.
    db = str(tmp_path / "db.sqlite")
    run = lambda *a: subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", "query", "--db", db, *a], capture_output=True, text=True, timeout=30, cwd=REPO)
    r = run("--tenant", "acme", "--name", "a", "--format", "json", "--since", str(t + 1))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["name"], x["value"], x["tenant_id"]) for x in rows] == [("a", 4, "acme"), ("a", 5, "acme")]
    r = run("--tenant", "acme", "--events", "--format", "json")
    assert r.returncode == 0
    assert [(x["kind"], x["fields"]) for x in map(json.loads, r.stdout.splitlines())] == [("login", {"user": "u"})]
    r = run("--tenant", "acme", "--events")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["TIME", "KIND", "LABELS", "FIELDS"]
    assert len(r.stdout.splitlines()) == 2 and "login" in r.stdout
    r = run("--tenant", "acme", "--since", "1h")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["TIMESTAMP", "NAME", "LABELS", "VALUE"]
    assert len(r.stdout.splitlines()) == 5
    r = subprocess.run([sys.executable, "-m", "hostmond.ingest.cli", "query", "--db", str(tmp_path / "none.db"), "--tenant", "acme"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert r.returncode == 1 and "no such database" in r.stderr


def test_blocks_hold_the_agents_own_validated_payload(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    k, dec = codec
    recs = [s("m", 1.5, 10.0, x="1")]
    d = dec.decode(seal(k, 9, recs, created=time.time()))
    assert d.n_samples == 1 and d.index[0].name == "m" and (d.index[0].min_ts, d.index[0].max_ts) == (10.0, 10.0)
    from hostmond.ingest.decode import read_block

    assert read_block(d.block) == recs


async def test_the_server_runs_retention_periodically(tmp_path: Path) -> None:
    import aiohttp
    from hostmond.ingest import config as cfgmod
    from hostmond.ingest.server import IngestServer
    from ingest_helpers import db_counts, sample_records, write_config

    from hostmond.core import wire

    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0", sqlite="retention_seconds = 0.5\nretention_interval_seconds = 0.2")
    server = IngestServer(cfgmod.load(str(cfg)))
    url = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as sess:
            async with sess.post(url + "/v1/batches", data=seal(k, 1, sample_records(4)), headers={"Content-Type": wire.CONTENT_TYPE}) as r:
                assert r.status == 200
        assert db_counts(tmp_path / "ingest.db")["samples"] == 4
        for _ in range(50):
            await asyncio.sleep(0.1)
            if db_counts(tmp_path / "ingest.db")["samples"] == 0:
                break
        assert db_counts(tmp_path / "ingest.db") == {"batches": 1, "blocks": 0, "samples": 0, "events": 0}
        assert 'hostmon_ingest_retention_deleted_total{kind="samples"} 4.0' in server.metrics.render().decode()
    finally:
        await server.stop()


def test_a_version_1_database_is_migrated_and_keeps_its_dedupe_records(tmp_path: Path, codec) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE batches (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL,
            created REAL NOT NULL, received REAL NOT NULL, n_samples INTEGER NOT NULL, n_events INTEGER NOT NULL,
            UNIQUE (agent_id, seq));
        CREATE INDEX batches_received ON batches (received);
        """
    )
    first = batch(codec, 7, [s("a", 1.0, time.time())])
    old.execute("INSERT INTO batches VALUES (1, ?, 7, ?, 1.0, 2.0, 1, 0)", (first.agent_id, first.hash))
    old.commit()
    old.close()

    sink = SqliteSink(str(path))
    sink.open_sync()
    try:
        # the old row is still the dedupe record of (agent, "", 7) ...
        assert sink.store_sync(first) == DUPLICATE
        assert sink.store_sync(batch(codec, 7, [s("c", 3.0, time.time())])) == REPLAY
        # ... and the new uniqueness lets another instance of the same agent use seq 7
        twin = batch(codec, 7, [s("b", 2.0, time.time())])
        twin.instance = "0123456789abcdef"
        assert sink.store_sync(twin) == STORED
    finally:
        sink.close_sync()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    assert conn.execute("SELECT instance, seq FROM batches ORDER BY id").fetchall() == [("", 7), ("0123456789abcdef", 7)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'batches_received'").fetchone() is not None
    conn.close()
