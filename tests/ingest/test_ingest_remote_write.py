"""The remote-write sink against a real Prometheus (``--web.enable-remote-write-receiver``).

Sealed batches go through the real ingest (real socket) into a real Prometheus
on 127.0.0.1, and the series are read back with PromQL, ``tenant_id`` label
included. Missing Prometheus skips locally and FAILS under CI=true.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
from helpers import free_port, prometheus_server, promql, require_tool
from hostmond.ingest import config as cfgmod
from hostmond.ingest.remote_write import (
    _varint,
    build_series,
    encode_sample,
    encode_write_request,
)
from hostmond.ingest.server import IngestServer
from ingest_helpers import db_counts, make_keys, seal, write_config

from hostmond.core import wire


def test_protobuf_encoding_by_hand() -> None:
    assert _varint(0) == b"\x00"
    assert _varint(300) == b"\xac\x02"
    assert _varint(-1) == b"\xff" * 9 + b"\x01"  # int64 -1, ten bytes
    assert encode_sample(1.5, 1000) == b"\x09" + bytes.fromhex("000000000000f83f") + b"\x10\xe8\x07"
    body = encode_write_request([("up", {"job": "x", "tenant_id": "t"}, 1.0, 2.0)])
    # WriteRequest.timeseries (field 1) > TimeSeries.labels sorted by name, then the sample
    assert body.startswith(b"\x0a")
    assert body.index(b"__name__") < body.index(b"job") < body.index(b"tenant_id")
    series = build_series([("m", {"bad-label": "v", "tenant_id": "t"}, 1.0, 1.0), ("m", {"tenant_id": "t", "bad-label": "v"}, 2.0, 0.5)])
    assert list(series) == [(("__name__", "m"), ("bad_label", "v"), ("tenant_id", "t"))]  # sanitised, one series
    assert series[next(iter(series))] == [(1.0, 1000), (2.0, 500)]


def _records(now: float) -> list[dict]:
    recs = []
    for tenant, host in (("acme", "web-1"), ("globex", "db-1")):
        for i in range(3):
            recs.append({"s": "hostmon_rw_test", "k": "gauge", "v": float(i + (100 if tenant == "globex" else 0)),
                         "l": {"tenant_id": tenant, "host": host, "i": str(i)}, "t": now - 5 + i})
    recs.append({"e": "auth_failure", "t": now, "f": {"user": "root"}, "l": {"tenant_id": "acme", "host": "web-1"}})
    return recs


async def _post(url: str, blob: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}) as r:
            return r.status, json.loads(await r.text())


async def test_batches_land_in_a_real_prometheus_with_tenant_ids(tmp_path: Path) -> None:
    require_tool("prometheus")
    keys = make_keys(tmp_path / "keys")
    down_port = free_port()
    (tmp_path / "prom").mkdir()
    with prometheus_server(tmp_path / "prom", [], ["--web.enable-remote-write-receiver"]) as prom:
        cfg_path = write_config(tmp_path, keys, ("acme", "globex"), extra="decode_workers = 0\n[remote_write]\nurl = \"" + prom + "/api/v1/write\"")
        server = IngestServer(cfgmod.load(str(cfg_path)))
        url = await server.start("127.0.0.1", 0)
        try:
            now = time.time()
            status, body = await _post(url, seal(keys, 1, _records(now)))
            assert (status, body) == (200, {"status": "stored"})
            res = promql(prom, 'hostmon_rw_test{tenant_id="acme"}')
            got = sorted((r["metric"]["i"], float(r["value"][1]), r["metric"]["host"]) for r in res)
            assert got == [("0", 0.0, "web-1"), ("1", 1.0, "web-1"), ("2", 2.0, "web-1")]
            res = promql(prom, 'hostmon_rw_test{tenant_id="globex"}')
            assert sorted(float(r["value"][1]) for r in res) == [100.0, 101.0, 102.0]
            assert all(r["metric"]["host"] == "db-1" for r in res)
            # The exact timestamps made it (ms precision): read a range back.
            res = promql(prom, 'hostmon_rw_test{tenant_id="acme",i="2"}[1m]')
            assert [float(v) for _, v in res[0]["values"]] == [2.0]
            assert abs(float(res[0]["values"][0][0]) - (now - 3)) < 0.002
            # Events stay in SQLite; samples are there too.
            assert db_counts(tmp_path / "ingest.db") == {"batches": 1, "blocks": 1, "samples": 6, "events": 1}
            metrics = server.metrics.render().decode()
            assert 'hostmon_ingest_remote_write_requests_total{result="success"} 1.0' in metrics
        finally:
            await server.stop()

    # The receiver is gone: the ingest answers 503 (the agent keeps the batch and retries), stores nothing.
    cfg_path = write_config(tmp_path, keys, ("acme", "globex"), extra=f"decode_workers = 0\n[remote_write]\nurl = \"http://127.0.0.1:{down_port}/api/v1/write\"\ntimeout_seconds = 2")
    server = IngestServer(cfgmod.load(str(cfg_path)))
    url = await server.start("127.0.0.1", 0)
    try:
        status, body = await _post(url, seal(keys, 2, _records(time.time())))
        assert status == 503 and body["reason"] == "remote_write_unavailable"
        assert db_counts(tmp_path / "ingest.db")["batches"] == 1
        assert 'hostmon_ingest_remote_write_requests_total{result="retryable_error"} 1.0' in server.metrics.render().decode()
    finally:
        await server.stop()


async def test_receiver_refusing_for_good_is_counted_and_the_batch_kept(tmp_path: Path) -> None:
    """A 4xx from the receiver (here: samples far too old for its head block) cannot be retried away."""
    require_tool("prometheus")
    keys = make_keys(tmp_path / "keys")
    (tmp_path / "prom").mkdir()
    with prometheus_server(tmp_path / "prom", [], ["--web.enable-remote-write-receiver"]) as prom:
        cfg_path = write_config(
            tmp_path, keys, ("acme",),
            extra="decode_workers = 0\n[remote_write]\nurl = \"" + prom + "/api/v1/write\"",
            limits="max_batch_age_seconds = 864000",
        )
        server = IngestServer(cfgmod.load(str(cfg_path)))
        url = await server.start("127.0.0.1", 0)
        try:
            now = time.time()
            fresh = [{"s": "hostmon_rw_old", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme"}, "t": now}]
            assert (await _post(url, seal(keys, 1, fresh)))[0] == 200
            stale = [{"s": "hostmon_rw_old", "k": "gauge", "v": 2.0, "l": {"tenant_id": "acme"}, "t": now - 86400 * 3}]
            status, body = await _post(url, seal(keys, 2, stale))
            assert (status, body) == (200, {"status": "stored"})
            metrics = server.metrics.render().decode()
            assert 'hostmon_ingest_remote_write_requests_total{result="rejected"} 1.0' in metrics
            assert "hostmon_ingest_remote_write_dropped_samples_total 1.0" in metrics
            assert db_counts(tmp_path / "ingest.db")["samples"] == 2
        finally:
            await server.stop()


@pytest.mark.parametrize("pairs", [[("a", "1")], []])
def test_write_request_has_one_series_per_label_set(pairs: list[tuple[str, str]]) -> None:
    labels = dict(pairs, tenant_id="t")
    body = encode_write_request([("m", labels, 1.0, 1.0), ("m", labels, 2.0, 2.0)])
    assert body.count(b"__name__") == 1
