"""Issue 12, ingest half: hostile clients, poison records and a full disk against the real ingest.

Each test reproduces one finding against real processes on 127.0.0.1 (the
ingest as ``hostmon ingest run``, a real Prometheus with its remote-write
receiver, ``hostmon ingest query``, a real tmpfs) and failed before the fix.
docs/threat-model.md maps each attack class to the test that shows it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import http_get, metric_value, scrape, wait_until
from ingest_helpers import (
    REPO,
    IngestProcess,
    db_counts,
    make_keys,
    sample_records,
    seal,
    write_config,
)

from hostmond.core import wire


def post(url: str, blob: bytes, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url + "/v1/batches", data=blob, headers={"Content-Type": wire.CONTENT_TYPE}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


@contextlib.contextmanager
def ingest(config: Path, **kw: Any) -> Iterator[IngestProcess]:
    p = IngestProcess(config, **kw)
    p.start()
    try:
        yield p
    finally:
        p.stop()


# -- 1: stalled uploads ------------------------------------------------------------------


def test_eight_stalled_uploads_leave_honest_batches_stored_and_are_timed_out_and_counted(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0", limits="max_inflight = 8\nbody_timeout_seconds = 2")
    with ingest(cfg) as p:
        host, port = host_port(p.url)
        stalled = []
        for i in range(8):  # the default max_inflight: before the fix these took every slot
            s = socket.create_connection((host, port), timeout=10)
            head = f"POST /v1/batches HTTP/1.1\r\nHost: {host}\r\nContent-Type: {wire.CONTENT_TYPE}\r\n"
            if i % 2:  # chunked, the last chunk never sent
                s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n10\r\n").encode() + b"0123456789abcdef\r\n")
            else:  # a Content-Length larger than what is sent
                s.sendall((head + "Content-Length: 100000\r\n\r\n").encode() + b"x" * 100)
            stalled.append(s)
        time.sleep(0.3)  # they are all being read now
        # An honest agent is served at once, long before the stalled bodies time out.
        t0 = time.monotonic()
        for seq in (1, 2, 3):
            assert post(p.url, seal(k, seq, sample_records(5, seq=seq)), timeout=5) == (200, {"status": "stored"})
        assert time.monotonic() - t0 < 2  # well inside body_timeout_seconds: no slot was waited for
        assert metric_value(scrape(p.url + "/metrics"), "hostmon_ingest_uploads") == 8
        # Each stalled upload gets 408 once body_timeout_seconds passed, and is counted.
        for s in stalled:
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
            assert b"body_timeout" in answer
            s.close()
        text = scrape(p.url + "/metrics")
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "body_timeout"}) == 8
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "busy"}) == 0
        assert metric_value(text, "hostmon_ingest_uploads") == 0
        assert db_counts(tmp_path / "ingest.db")["batches"] == 3


def test_when_every_connection_is_busy_new_ones_wait_in_the_backlog_and_are_served_after(tmp_path: Path) -> None:
    """At the connection cap with no idle connection to close, accepting pauses (no error, no descriptor spent)."""
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0", limits="body_timeout_seconds = 2",
                       web="max_connections = 8\n[web.rate_limit]\nrequests_per_second = 0")
    with ingest(cfg) as p:
        host, port = host_port(p.url)
        busy = []
        for _ in range(8):  # every slot holds a request in progress (a stalled upload)
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(f"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: {wire.CONTENT_TYPE}\r\nContent-Length: 99\r\n\r\n".encode())
            busy.append(s)
        time.sleep(0.3)
        t0 = time.monotonic()
        # Not refused: it waits in the backlog until body_timeout_seconds frees a slot.
        assert post(p.url, seal(k, 1, sample_records(3)), timeout=15) == (200, {"status": "stored"})
        waited = time.monotonic() - t0
        text = scrape(p.url + "/metrics")
        assert waited > 1.0
        assert metric_value(text, "hostmon_web_connections_max", {"server": "ingest"}) == 8
        assert (metric_value(text, "hostmon_web_accept_waits_total", {"server": "ingest"}) or 0) >= 1
        for s in busy:
            s.close()


# -- 2: idle connections and file descriptors --------------------------------------------

NOFILE = 256  # the server's fd limit in these tests: 1,100 connections are far more than it can hold
IDLE = 1100


def _raise_own_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


@contextlib.contextmanager
def idle_connections(host: str, port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` TCP connections that never send a byte (the kernel completes them as the backlog allows)."""
    _raise_own_fd_limit(n + 256)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, port))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _log_lines(path: Path, needle: str) -> int:
    return sum(1 for line in path.read_text(errors="replace").splitlines() if needle in line)


def test_1100_idle_connections_under_a_low_fd_limit_leave_the_ingest_serving(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0")
    log = tmp_path / "ingest.log"
    with ingest(cfg, log=log, nofile=NOFILE) as p:
        host, port = host_port(p.url)
        with idle_connections(host, port, IDLE):
            time.sleep(1.5)  # the flood is being accepted (and, before the fix, EMFILE logged)
            # Honest clients are served promptly: a probe and a batch.
            t0 = time.monotonic()
            assert http_get(p.url + "/healthz", timeout=10)[0] == 200
            assert post(p.url, seal(k, 1, sample_records(5)), timeout=10) == (200, {"status": "stored"})
            assert time.monotonic() - t0 < 10
            text = scrape(p.url + "/metrics")
        limit = metric_value(text, "hostmon_web_connections_max", {"server": "ingest"})
        assert limit is not None and limit <= NOFILE - 64  # sized to the fd limit, room kept for the rest
        assert (metric_value(text, "hostmon_web_connections_evicted_total", {"server": "ingest"}) or 0) > 0
        assert metric_value(text, "hostmon_web_accept_errors_total", {"server": "ingest"}) == 0
        assert p.proc is not None and p.proc.poll() is None
    # No "accept() out of system resource" storm: at most the one line saying the limit was lowered.
    assert _log_lines(log, "out of system resource") == 0
    assert _log_lines(log, "Too many open files") == 0
    assert log.stat().st_size < 20_000, log.read_text()[-2000:]


def test_agent_metrics_endpoint_and_collectors_survive_1100_idle_connections(tmp_path: Path) -> None:
    from helpers import free_port

    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text("tenant_id = 'acme'\n[runtime]\ninterval = 1\n[shipping]\nenabled = false\n")
    log = tmp_path / "agent.log"

    env = {**os.environ, "HOSTMON_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--",
             sys.executable, "-m", "hostmond.cli", "run", "--config", str(conf), "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_get(url + "/readyz")[0] == 200, timeout=30, what="agent ready")
            before = scrape(url + "/metrics")
            with idle_connections("127.0.0.1", port, IDLE):
                time.sleep(3.5)  # three collection cycles under the flood
                status, _, body = http_get(url + "/metrics", timeout=10)
                assert status == 200
            text = body.decode()
            # Every collector kept succeeding: none ran out of file descriptors.
            for fam in ("hostmon_collector_errors_total",):
                for line in text.splitlines():
                    if line.startswith(fam + "{"):
                        name = line.split('collector="')[1].split('"')[0]
                        assert float(line.rsplit(" ", 1)[1]) == (metric_value(before, fam, {"collector": name}) or 0), line
            assert (metric_value(text, "hostmon_web_connections_evicted_total", {"server": "agent"}) or 0) > 0
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert _log_lines(log, "out of system resource") == 0
    assert _log_lines(log, "Too many open files") == 0
    assert log.stat().st_size < 50_000


# -- 4 (ingest side), 6: poison records, iid ----------------------------------------------


def test_non_finite_or_huge_timestamps_are_422_with_a_reason_and_honest_batches_pass(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 1")
    with ingest(cfg) as p:
        seq = 0
        for t in (float("nan"), float("inf"), float("-inf"), 1e300):
            for kind in ("sample", "event"):
                seq += 1
                rec = sample_records(3)
                if kind == "sample":
                    rec[1]["t"] = t
                else:
                    rec.append({"e": "auth_failure", "t": t, "f": {}, "l": {"tenant_id": "acme"}})
                status, body = post(p.url, seal(k, seq, rec))
                assert (status, body["reason"]) == (422, "bad_timestamp"), (t, kind, body)
                assert "timestamp" in body["detail"]
        # NaN and infinite *values* are valid Prometheus values: stored.
        rec = sample_records(3)
        rec[0]["v"], rec[1]["v"], rec[2]["v"] = float("nan"), float("inf"), float("-inf")
        assert post(p.url, seal(k, 100, rec)) == (200, {"status": "stored"})
        assert post(p.url, seal(k, 101, sample_records(3))) == (200, {"status": "stored"})
        text = scrape(p.url + "/metrics")
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "bad_timestamp"}) == 8
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "storage_unavailable"}) == 0
        assert http_get(p.url + "/readyz")[0] == 200


def test_iid_must_be_16_hex_digits(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0")
    with ingest(cfg) as p:
        for seq, iid in enumerate(("\x1b[2Jevil", "0123456789abcdeg", "0123456789abcdef0", "0123\n56789abcdef"), 1):
            status, body = post(p.url, seal(k, seq, sample_records(2), instance=iid))
            assert (status, body["reason"]) == (400, "bad_header"), iid
        assert post(p.url, seal(k, 9, sample_records(2), instance="0123456789abcdef")) == (200, {"status": "stored"})


def _query(db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hostmond.cli", "ingest", "query", "--db", str(db), "--tenant", "acme", *args],
        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=True,
    )


def test_query_table_escapes_control_characters_and_json_is_strict(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0")
    t = time.time()
    recs = [
        {"s": "evil\n1.000  forged_row  {}  1.0", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme", "x": "\x1b[2J\x1b]0;pwned\x07"}, "t": t},
        {"s": "good", "k": "gauge", "v": float("nan"), "l": {"tenant_id": "acme", "q": 'a"b\\c'}, "t": t + 1},
        {"s": "good", "k": "gauge", "v": float("inf"), "l": {"tenant_id": "acme"}, "t": t + 2},
        {"s": "good", "k": "gauge", "v": float("-inf"), "l": {"tenant_id": "acme"}, "t": t + 3},
        {"e": "auth\rfailure", "t": t, "f": {"score": float("nan"), "who": "\x9b31m"}, "l": {"tenant_id": "acme"}},
    ]
    with ingest(cfg) as p:
        assert post(p.url, seal(k, 1, recs)) == (200, {"status": "stored"})
    db = tmp_path / "ingest.db"
    table = _query(db).stdout.decode()
    lines = table.splitlines()
    assert len(lines) == 1 + 4, table  # the header and one line per sample: no forged row
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in table.replace("\n", "")), repr(table)
    assert "evil\\n1.000" in table and "\\x1b[2J" in table and 'q="a\\"b\\\\c"' in table
    assert [line.split()[-1] for line in lines[2:]] == ["NaN", "+Inf", "-Inf"]
    ev = _query(db, "--events").stdout.decode()
    assert len(ev.splitlines()) == 2 and "auth\\rfailure" in ev and "\x9b" not in ev

    def strict(text: str) -> list[Any]:
        def no_constants(c: str) -> Any:
            raise ValueError(f"not JSON: {c}")

        return [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]

    rows = strict(_query(db, "--format", "json").stdout.decode())
    assert [r["value"] for r in rows] == [1.0, "NaN", "+Inf", "-Inf"]
    assert rows[0]["name"].startswith("evil\n")  # JSON keeps the data exact, escaped
    events = strict(_query(db, "--format", "json", "--events").stdout.decode())
    assert events[0]["fields"] == {"score": "NaN", "who": "\x9b31m"}


# -- 5: series limits --------------------------------------------------------------------


def _series(n: int, start: int = 0, host: str = "h1", t: float | None = None) -> list[dict[str, Any]]:
    t = time.time() if t is None else t
    return [{"s": "m", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme", "host": host, "i": str(i)}, "t": t} for i in range(start, start + n)]


def test_series_limits_per_agent_and_per_tenant_refuse_with_422_and_count(tmp_path: Path) -> None:
    a = make_keys(tmp_path / "keys", agent_name="a")
    b = make_keys(tmp_path / "keys", agent_name="b")
    cfg = write_config(tmp_path, [a, b], extra="decode_workers = 0", limits="max_series_per_agent = 100\nmax_series_per_tenant = 150")
    with ingest(cfg) as p:
        assert post(p.url, seal(a, 1, _series(100)))[0] == 200
        status, body = post(p.url, seal(a, 2, _series(2, start=99)))  # one known, one new
        assert (status, body["reason"]) == (422, "agent_series_limit")
        assert "max_series_per_agent" in body["detail"]
        # Its known series keep flowing (several samples each).
        assert post(p.url, seal(a, 3, _series(100) + _series(50, t=time.time() + 1)))[0] == 200
        # Another agent of the same tenant: the tenant limit.
        assert post(p.url, seal(b, 1, _series(50, host="h2")))[0] == 200
        status, body = post(p.url, seal(b, 2, _series(1, host="h3")))
        assert (status, body["reason"]) == (422, "tenant_series_limit")
        text = scrape(p.url + "/metrics")
        assert metric_value(text, "hostmon_ingest_active_series") == 150
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "agent_series_limit"}) == 1
        assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "tenant_series_limit"}) == 1
    assert db_counts(tmp_path / "ingest.db")["samples"] == 100 + 150 + 50


def test_a_batch_of_100000_new_series_is_refused_by_the_default_limit(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, k, extra="decode_workers = 0")
    with ingest(cfg) as p:
        status, body = post(p.url, seal(k, 1, _series(100_000)), timeout=60)
        assert (status, body["reason"]) == (422, "agent_series_limit")
        assert db_counts(tmp_path / "ingest.db")["samples"] == 0


# -- F2: a full disk ---------------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[Path]:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True, check=False)
    if r.returncode != 0:
        msg = f"cannot mount a tmpfs (needs root): {r.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> Path:
    """Fill the file system to the last block."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_full_disk_makes_the_ingest_not_ready_logs_once_and_recovers_when_space_is_freed(tmp_path: Path) -> None:
    k = make_keys(tmp_path / "keys")
    with small_filesystem(tmp_path / "disk", "2m") as disk:
        db = disk / "ingest.db"
        cfg = write_config(tmp_path, k, extra="decode_workers = 0", db=db, sqlite="wal_max_bytes = 65536")
        log = tmp_path / "ingest.log"
        with ingest(cfg, log=log) as p:
            assert post(p.url, seal(k, 1, sample_records(50)))[0] == 200
            filler = _fill(disk)
            statuses = [post(p.url, seal(k, seq, sample_records(2000, seq=seq)))[0] for seq in range(2, 12)]
            assert statuses[-1] == 503 and 200 not in statuses[-5:], statuses
            assert http_get(p.url + "/readyz")[0] == 503
            body = json.loads(http_get(p.url + "/readyz")[2])
            assert body["reason"] == "storage_unavailable"
            assert metric_value(scrape(p.url + "/metrics"), "hostmon_ingest_storage_ok") == 0
            filler.unlink()  # space is back
            wait_until(lambda: http_get(p.url + "/readyz")[0] == 200, timeout=15, what="ready again")
            # Every refused batch is accepted now (the agent's retries).
            for seq in range(2, 12):
                assert post(p.url, seal(k, seq, sample_records(2000, seq=seq)))[0] == 200, seq
            wal = Path(str(db) + "-wal")
            assert not wal.exists() or wal.stat().st_size < 512 * 1024  # bounded by wal_max_bytes + a batch
        assert db_counts(db)["batches"] == 11
    text = log.read_text()
    assert _log_lines(log, "cannot store batches (") == 1, text
    assert _log_lines(log, "storage recovered") == 1, text


# -- 3: cross-tenant write through remote write -------------------------------------------


def _rw_records(t: float) -> list[dict[str, Any]]:
    return [
        {"s": "hostmon_rw_hard", "k": "gauge", "v": float(i), "l": {"tenant_id": tenant, "i": str(i)}, "t": t}
        for tenant in ("acme", "globex") for i in range(3)
    ]


def test_remote_write_refuses_labels_that_collide_after_sanitising_and_sends_one_request_per_tenant(tmp_path: Path) -> None:
    from helpers import prometheus_server, promql, require_tool

    require_tool("prometheus")
    k = make_keys(tmp_path / "keys")
    (tmp_path / "prom").mkdir()
    with prometheus_server(tmp_path / "prom", [], ["--web.enable-remote-write-receiver"]) as prom:
        cfg = write_config(
            tmp_path, k, ("acme", "globex"),
            extra=f'decode_workers = 1\n[remote_write]\nurl = "{prom}/api/v1/write"\ntenant_header = "X-Scope-OrgID"',
        )
        with ingest(cfg) as p:
            t = time.time()
            # An agent enrolled for acme and globex tries to make an acme sample read as globex.
            for seq, evil in enumerate(("tenant-id", "tenant.id", "__name__"), 1):
                rec = [{"s": "hostmon_rw_evil", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme", evil: "globex"}, "t": t}]
                status, body = post(p.url, seal(k, seq, rec))
                assert (status, body["reason"]) == (422, "label_collision"), (evil, body)
                assert "tenant_id" in body["detail"] or "__name__" in body["detail"]
            # A NaN timestamp with remote write on: 422, not a 500 from the encoder.
            rec = _rw_records(t)
            rec[0]["t"] = float("nan")
            status, body = post(p.url, seal(k, 10, rec))
            assert (status, body["reason"]) == (422, "bad_timestamp")
            # Honest: one request per tenant, both land, each with its own tenant_id.
            assert post(p.url, seal(k, 11, _rw_records(t))) == (200, {"status": "stored"})
            text = scrape(p.url + "/metrics")
            assert metric_value(text, "hostmon_ingest_remote_write_requests_total", {"result": "success"}) == 2
            assert metric_value(text, "hostmon_ingest_rejected_total", {"reason": "label_collision"}) == 3
        assert promql(prom, "hostmon_rw_evil") == []
        got = sorted((r["metric"]["tenant_id"], r["metric"]["i"]) for r in promql(prom, "hostmon_rw_hard"))
        assert got == [(tn, str(i)) for tn in ("acme", "globex") for i in range(3)]


def test_tenant_header_carries_each_tenant_with_only_its_series(tmp_path: Path) -> None:
    import http.server
    import threading

    import cramjam

    seen: list[tuple[str | None, bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.headers.get("X-Scope-OrgID"), bytes(cramjam.snappy.decompress_raw(body))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        k = make_keys(tmp_path / "keys")
        url = f"http://127.0.0.1:{srv.server_address[1]}/api/v1/push"
        cfg = write_config(tmp_path, k, ("acme", "globex"), extra=f'decode_workers = 0\n[remote_write]\nurl = "{url}"\ntenant_header = "X-Scope-OrgID"')
        with ingest(cfg) as p:
            assert post(p.url, seal(k, 1, _rw_records(time.time()))) == (200, {"status": "stored"})
    finally:
        srv.shutdown()
        srv.server_close()
    assert sorted(h for h, _ in seen) == ["acme", "globex"]
    for tenant, body in seen:
        other = b"globex" if tenant == "acme" else b"acme"
        assert tenant is not None and tenant.encode() in body and other not in body


def test_series_go_quiet_after_the_window_and_make_room_again() -> None:
    from hostmond.ingest.limits import SeriesLimiter

    lim = SeriesLimiter(max_per_agent=2, max_per_tenant=0, window=60.0)
    a, b, c = b"a" * 8, b"b" * 8, b"c" * 8
    assert lim.admit("agent", {"acme": a + b}, now=0.0) is None
    assert lim.admit("agent", {"acme": c}, now=30.0) == lim.admit("agent", {"acme": c}, now=30.0)
    assert lim.admit("agent", {"acme": c}, now=30.0)[0] == "agent_series_limit"  # type: ignore[index]
    assert lim.admit("agent", {"acme": a}, now=50.0) is None  # a known series refreshes its time
    assert lim.admit("agent", {"acme": c}, now=100.0) is None  # b went quiet: room for c
    assert lim.prune(now=100.0) == 2
