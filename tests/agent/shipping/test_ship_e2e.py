"""The README's first command, end to end (issue 4, point 7): collect, seal, spool, ship, store, query.

The real ``hostmon run`` process (``python -m hostmond.cli run``) with no ingest
configured starts the embedded ingest on 127.0.0.1, creates its keys on first
start and ships its own collections there; the real ``hostmon ingest query``
command then reads the agent's samples back from the embedded SQLite database,
``tenant_id`` included. SIGTERM stops the agent within its 5 s budget, and what
it held is in the database afterwards, not lost.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, http_get, metric_value, wait_until

from hostmond.core import keys

pytestmark = pytest.mark.slow


def _query(db: Path, *args: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "hostmond.cli", "ingest", "query", "--db", str(db), "--format", "json", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _write_config(tmp: Path, port: int) -> Path:
    cfg = tmp / "hostmon.toml"
    cfg.write_text(
        f'tenant_id = "acme"\n'
        f'state_dir = "{tmp / "state"}"\n'
        f'tags = {{ host = "e2e-host" }}\n'
        f"[http]\nlisten = \"127.0.0.1:{port}\"\n"
        f"[runtime]\ninterval = 1.0\n"
        f"[shipping]\nbatch_max_age = 0.3\nbatch_jitter = 0.0\n"
    )
    return cfg


def test_hostmon_run_ships_to_its_embedded_ingest_and_query_reads_it_back(tmp_path: Path) -> None:
    port = free_port()
    cfg = _write_config(tmp_path, port)
    state = tmp_path / "state"
    db = state / "ingest" / "ingest.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env.pop("NOTIFY_SOCKET", None)
    log_path = tmp_path / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hostmond.cli", "run", "--config", str(cfg)],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )
        try:
            # Samples of the agent's own collectors arrive in the embedded SQLite database.
            rows = wait_until(
                lambda: db.exists() and _query(db, "--tenant", "acme", "--name", "node_load1"),
                timeout=60, interval=0.3, what="node_load1 stored in the embedded ingest",
            )
            assert proc.poll() is None, log_path.read_text()[-2000:]
            r = rows[0]
            assert r["tenant_id"] == "acme" and r["name"] == "node_load1" and r["type"] == "gauge"
            assert r["labels"]["tenant_id"] == "acme" and r["labels"]["host"] == "e2e-host"
            assert isinstance(r["value"], float) and r["value"] >= 0
            assert abs(r["timestamp"] - time.time()) < 120
            # Another tenant reads nothing of it.
            assert _query(db, "--tenant", "globex", "--name", "node_load1") == []
            # A time range in the future is empty; one around now holds the rows.
            assert _query(db, "--tenant", "acme", "--name", "node_load1", "--since", str(time.time() + 3600)) == []
            assert _query(db, "--tenant", "acme", "--name", "node_load1", "--since", "10m")
            # The agent's /metrics shows the shipper at work: acknowledged batches, latency measured, nothing dropped.
            text = wait_until(
                lambda: (t := http_get(f"http://127.0.0.1:{port}/metrics")[2].decode())
                and (metric_value(t, "hostmon_ship_sent_batches_total") or 0) >= 1 and t,
                timeout=30, interval=0.3, what="hostmon_ship_sent_batches_total >= 1 on /metrics",
            )
            assert (metric_value(text, "hostmon_ship_send_attempts_total") or 0) >= 1
            assert (metric_value(text, "hostmon_ship_send_duration_seconds_total") or 0) > 0
            assert metric_value(text, "hostmon_spool_limit_bytes") == 268435456
            assert metric_value(text, "hostmon_spool_dropped_batches_total") == 0
            assert metric_value(text, "hostmon_ship_rejected_samples_total") == 0
            # SIGTERM: a clean exit within the 5 s stop budget.
            before = len(_query(db, "--tenant", "acme", "--name", "node_load1"))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=15)
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text_log = log_path.read_text()
    assert rc == 0, text_log[-3000:]
    assert took < 5.0, f"hostmon run took {took:.1f} s to stop after SIGTERM"
    # The log says that it ships to an embedded ingest, and where to query it.
    assert "embedded ingest started" in text_log
    # ... and the query command it logs reads this agent's samples, run as written
    lines = [json.loads(line) for line in text_log.splitlines() if line.startswith("{")]
    hints = [r["query"] for r in lines if "ships to its embedded ingest" in r.get("msg", "")]
    assert hints == [f"hostmon ingest query --db {db} --tenant acme"]
    argv = shlex.split(hints[0])
    assert argv[:3] == ["hostmon", "ingest", "query"]
    r = subprocess.run([sys.executable, "-m", "hostmond.cli", *argv[1:], "--name", "node_load1", "--format", "json"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    hinted = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert hinted and all(row["tenant_id"] == "acme" for row in hinted)
    assert "agent identity created" in text_log
    # Keys created on first start, private halves 0600.
    for key in (state / "keys" / "agent.key", state / "ingest" / "ingest.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    agent_id = keys.load_private_key(state / "keys" / "agent.key").key_id
    assert agent_id in text_log
    # Nothing held at the stop was lost: the store only grew, and the spool is drained or kept for the next start.
    after = _query(db, "--tenant", "acme", "--name", "node_load1")
    assert len(after) >= before
    assert len({(r["timestamp"], json.dumps(r["labels"], sort_keys=True)) for r in after}) == len(after), "duplicate samples"


def test_hostmon_run_refuses_a_group_readable_agent_key(tmp_path: Path) -> None:
    port = free_port()
    cfg = _write_config(tmp_path, port)
    kf = keys.generate_agent_identity(tmp_path / "state" / "keys")
    os.chmod(kf.private_path, 0o640)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env.pop("NOTIFY_SOCKET", None)
    r = subprocess.run(
        [sys.executable, "-m", "hostmond.cli", "run", "--config", str(cfg)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert r.returncode != 0
    assert "too open" in r.stderr and "chmod 600" in r.stderr
