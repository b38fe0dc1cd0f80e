"""Issue 12, kept as regression tests: faults that passed when tried, against real processes.

* the agent (the project's Shipper in its own process) or the ingest stopped with SIGSTOP
  while batches flow, then continued: every collection stored exactly once, nothing dropped;
* a garbled sequence file between two agent runs: new numbers, nothing refused or lost;
* 3,000 extra processes on the host: the processes collector still succeeds without a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ingest"))
from ingest_helpers import db_counts  # noqa: E402
from test_ingest_no_loss import Lines, Setup, assert_exactly_once  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_agent_sigstopped_while_shipping_loses_nothing(setup: Setup) -> None:
    setup.ingest()
    n = 80
    proc = setup.driver(collections=n)
    out = Lines(proc)
    wait_until(lambda: (out.poll(0.01), db_counts(setup.db)["batches"] >= 5)[1], timeout=60, interval=0.01,
               what="5 batches stored")
    proc.send_signal(signal.SIGSTOP)
    time.sleep(5)
    proc.send_signal(signal.SIGCONT)
    out.wait_for("drained", timeout=90)
    m = out.metrics()
    assert m["hostmon_ship_sent_batches_total"] == n
    assert m["hostmon_spool_dropped_batches_total"] == 0
    assert_exactly_once(setup.db, range(n), setup.t0)


def test_ingest_sigstopped_while_batches_arrive_loses_nothing(setup: Setup) -> None:
    ingest = setup.ingest()
    n = 40
    out = Lines(setup.driver(collections=n))
    wait_until(lambda: (out.poll(0.01), db_counts(setup.db)["batches"] >= 3)[1], timeout=60, interval=0.01,
               what="3 batches stored")
    assert ingest.proc is not None
    ingest.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(5)  # requests hang (under the driver's 10 s timeout) or time out and are retried
    finally:
        ingest.proc.send_signal(signal.SIGCONT)
    out.wait_for("drained", timeout=90)
    m = out.metrics()
    assert m["hostmon_ship_sent_batches_total"] == n and m["hostmon_spool_dropped_batches_total"] == 0
    assert_exactly_once(setup.db, range(n), setup.t0)


def test_a_garbled_sequence_file_gives_new_numbers_and_loses_nothing(setup: Setup) -> None:
    setup.ingest()
    first = Lines(setup.driver(collections=10))
    first.wait_for("drained", timeout=60)
    seq = setup.state / "shipping" / "seq.json"
    assert json.loads(seq.read_text())["reserved"] > 0
    seq.write_bytes(b'{"agent_id": "\xff\x00 garbage')
    second = Lines(setup.driver(start=10, collections=10))
    second.wait_for("drained", timeout=60)
    m = second.metrics()
    assert m["hostmon_ship_sent_batches_total"] == 10
    assert sum(v for k, v in m.items() if k.startswith("hostmon_ship_rejected_total")) == 0
    assert_exactly_once(setup.db, range(20), setup.t0)
    assert json.loads(seq.read_text())["reserved"] > 0  # rewritten whole


SPAWNER = r"""
import os, signal, sys
n = int(sys.argv[1])
for _ in range(n):
    if os.fork() == 0:
        signal.pause()
        os._exit(0)
print("ready", flush=True)
signal.pause()
"""


def test_three_thousand_extra_processes_keep_the_processes_collector_within_its_timeout(tmp_path: Path) -> None:
    spawner = subprocess.Popen([sys.executable, "-c", SPAWNER, "3000"], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert spawner.stdout is not None
        assert spawner.stdout.readline().strip() == b"ready"
        cfg = tmp_path / "hostmon.toml"
        cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n')
        r = subprocess.run([sys.executable, "-m", "hostmond.cli", "collect", "--once", "--format", "json",
                            "--collector", "processes", "-c", str(cfg)], capture_output=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        out = {(s["name"], s["labels"].get("collector", "")): s["value"] for s in json.loads(r.stdout)["samples"]}
        assert out[("hostmon_collector_success", "processes")] == 1
        assert out[("hostmon_collector_timeouts_total", "processes")] == 0
        assert out[("node_processes_pids", "")] >= 3000
    finally:
        os.killpg(spawner.pid, signal.SIGKILL)
        spawner.wait(timeout=30)
