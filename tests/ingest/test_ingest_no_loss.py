"""Proof that nothing is lost (issue 4, point 8), with real processes and real sockets.

The agent side is ``agent_driver.py``: the project's own Shipper (batcher,
seal, spool, sender) in its own process. The ingest is ``python -m hostmond.ingest.cli
run`` in its own process. Processes are killed with SIGKILL. What arrived is
read back from the ingest's SQLite database and compared, sample by sample,
with what the agent produced.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import free_port, wait_until
from ingest_helpers import IngestProcess, all_samples, db_counts

from hostmond.core import keys as keymod

HERE = Path(__file__).resolve().parent
SAMPLES = 20  # per collection (= per batch), plus one event


def expected(ks: range | list[int], t0: float) -> list[tuple[str, tuple[tuple[str, str], ...], float, float]]:
    out = []
    for k in ks:
        for j in range(SAMPLES):
            labels = tuple(sorted({"tenant_id": "acme", "host": "proof", "k": str(k), "j": str(j)}.items()))
            out.append(("hostmon_proof_value", labels, float(k * 1000 + j), t0 + k))
    return sorted(out, key=lambda r: (r[3], r[2]))


def stored(db: Path) -> list[tuple[str, tuple[tuple[str, str], ...], float, float]]:
    return sorted(all_samples(db), key=lambda r: (r[3], r[2]))


class Setup:
    def __init__(self, tmp: Path, **cfg_kw: object) -> None:
        self.tmp = tmp
        self.state = tmp / "agent-state"
        self.agent = keymod.generate_agent_identity(self.state / "keys")
        self.ingest_key = keymod.generate_ingest_keypair(tmp / "ingest-keys")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "ingest.db"
        self.t0 = time.time() - 3600
        agents = f'[[agents]]\npublic_key = "{self.agent.public_path}"\ntenants = ["acme"]\n'
        lines = [
            f'listen = "127.0.0.1:{self.port}"',
            f'private_keys = ["{self.ingest_key.private_path}"]',
            "decode_workers = 0",
            agents,
            f'[sqlite]\npath = "{self.db}"',
        ]
        self.config = tmp / "ingest.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.drivers: list[subprocess.Popen[bytes]] = []
        self.ingests: list[IngestProcess] = []
        self.logs: list[object] = []

    def ingest(self, env: dict[str, str] | None = None) -> IngestProcess:
        p = IngestProcess(self.config, env=env)
        self.ingests.append(p)
        url = p.start()
        assert url == self.url
        return p

    def driver(
        self, start: int = 0, collections: int = 0, spool_limit: int = 64 << 20, wait: float = 60, state: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [
                sys.executable, str(HERE / "agent_driver.py"),
                "--state", str(state or self.state), "--url", self.url, "--ingest-pub", self.ingest_key.public_path,
                "--t0", repr(self.t0), "--start", str(start), "--collections", str(collections),
                "--samples", str(SAMPLES), "--spool-limit", str(spool_limit), "--wait", str(wait),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log(f"driver-{len(self.drivers)}.log"),
        )
        self.drivers.append(p)
        return p

    def _log(self, name: str):  # type: ignore[no-untyped-def]
        f = open(self.tmp / name, "wb")  # noqa: SIM115 - closed in close()
        self.logs.append(f)
        return f

    def close(self) -> None:
        for d in self.drivers:
            if d.poll() is None:
                d.send_signal(signal.SIGKILL)
                d.wait(10)
            if d.stdout is not None:
                d.stdout.close()
        for i in self.ingests:
            i.stop()
        for f in self.logs:
            f.close()


class Lines:
    """Reads a driver's stdout lines without blocking past a deadline."""

    def __init__(self, p: subprocess.Popen[bytes]) -> None:
        self.p = p
        self.buf = b""
        self.lines: list[str] = []

    def poll(self, timeout: float = 0.05) -> None:
        assert self.p.stdout is not None
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        if r:
            chunk = os.read(self.p.stdout.fileno(), 65536)
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\n")
            self.lines += [d.decode() for d in done]

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            if self.p.poll() is not None:
                self.poll(0)
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                raise AssertionError(f"driver exited {self.p.returncode} without {prefix!r}; output {self.lines[-5:]}")
            self.poll()
        raise AssertionError(f"timed out waiting for {prefix!r}; output {self.lines[-5:]}")

    def spooled(self) -> list[int]:
        return [int(x.split()[1]) for x in self.lines if x.startswith("spooled ")]

    def metrics(self) -> dict[str, float]:
        return json.loads(self.wait_for("metrics ")[len("metrics "):])


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()


def assert_exactly_once(db: Path, ks: list[int] | range, t0: float) -> None:
    got = stored(db)
    dupes = [r for r, n in Counter(got).items() if n > 1]
    assert not dupes, f"{len(dupes)} samples stored more than once, e.g. {dupes[:2]}"
    want = expected(ks, t0)
    assert len(got) == len(want)
    assert got == want
    assert db_counts(db)["events"] == len(ks)


def test_ingest_down_while_many_batches_are_produced_then_back(setup: Setup) -> None:
    n = 60
    out = Lines(setup.driver(collections=n))
    out.wait_for("all spooled")
    time.sleep(0.5)  # the sender keeps failing (connection refused) and backing off
    assert db_counts(setup.db)["batches"] == 0
    assert not any(line.startswith("drained") for line in out.lines)
    setup.ingest()
    out.wait_for("drained", timeout=60)
    m = out.metrics()
    assert m["hostmon_ship_sent_batches_total"] == n
    assert m["hostmon_ship_retries_total"] >= 1
    assert m["hostmon_spool_dropped_batches_total"] == 0
    assert db_counts(setup.db)["batches"] == n
    assert_exactly_once(setup.db, range(n), setup.t0)


def test_agent_sigkilled_while_shipping_then_restarted(setup: Setup) -> None:
    setup.ingest()
    n = 150
    first = setup.driver(collections=n)
    out = Lines(first)
    # Kill the agent in the middle of shipping: some batches acknowledged, others not yet.
    wait_until(lambda: (out.poll(0.01), db_counts(setup.db)["batches"] >= 10)[1], timeout=60, interval=0.01, what="10 batches stored")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    out.poll(0)
    spooled = out.spooled()
    stored_before = db_counts(setup.db)["batches"]
    assert 10 <= stored_before, stored_before
    assert len(spooled) < n or stored_before < n, "the kill came after everything was shipped; the test proved nothing"
    # Restart: the agent drains its spool (what it had sealed before the kill).
    again = Lines(setup.driver(collections=0))
    again.wait_for("drained", timeout=60)
    got_ks = sorted({int(dict(r[1])["k"]) for r in stored(setup.db)})
    # Every collection reported spooled arrived; at most the one being spooled at the kill comes on top.
    assert set(spooled) <= set(got_ks)
    extra = set(got_ks) - set(spooled)
    assert extra <= {max(spooled, default=-1) + 1}, extra
    assert_exactly_once(setup.db, got_ks, setup.t0)
    assert got_ks == list(range(len(got_ks)))


def test_ingest_sigkilled_after_storing_before_answering(setup: Setup) -> None:
    faulty = setup.ingest(env={"HOSTMON_INGEST_FAULT": "kill_after_commit"})
    n = 5
    out = Lines(setup.driver(collections=n))
    out.wait_for("all spooled")
    assert faulty.proc is not None
    faulty.proc.wait(30)
    assert faulty.proc.returncode == -signal.SIGKILL
    # The first batch is committed; the agent never got the answer and still holds it.
    assert db_counts(setup.db)["batches"] == 1
    setup.ingest()
    out.wait_for("drained", timeout=60)
    m = out.metrics()
    assert m["hostmon_ship_duplicate_total"] >= 1  # the retry of the stored batch was recognised
    assert m["hostmon_ship_sent_batches_total"] == n
    assert db_counts(setup.db)["batches"] == n
    assert_exactly_once(setup.db, range(n), setup.t0)


def test_spool_limit_drops_exactly_the_oldest_and_counts_them(setup: Setup) -> None:
    n = 30
    # Measure one sealed batch, then allow about 10 of them in the spool.
    probe = Lines(setup.driver(collections=1, wait=0.1))
    probe.wait_for("all spooled")
    probe.p.wait(30)
    spool_files = [p for p in (setup.state / "spool").rglob("*") if p.is_file() and p.parent.name != "corrupt"]
    assert len(spool_files) == 1
    per_batch = spool_files[0].stat().st_size
    limit = per_batch * 10 + per_batch // 2
    out = Lines(setup.driver(start=1, collections=n - 1, spool_limit=limit, wait=60))
    out.wait_for("all spooled")
    setup.ingest()
    out.wait_for("drained", timeout=60)
    m = out.metrics()
    dropped = int(m["hostmon_spool_dropped_batches_total"])
    got_ks = sorted({int(dict(r[1])["k"]) for r in stored(setup.db)})
    assert dropped > 0
    assert len(got_ks) == n - dropped, (got_ks, m)  # the counter says exactly how many are missing
    assert got_ks == list(range(dropped, n))  # and the missing ones are exactly the oldest
    assert m["hostmon_spool_dropped_samples_total"] == dropped * SAMPLES
    assert_exactly_once(setup.db, got_ks, setup.t0)


def test_agents_sharing_one_identity_never_collide(setup: Setup) -> None:
    """A DaemonSet's pods share one agent key but number their batches each on its own.

    Both state directories are given the same reserved sequence block, so the two
    processes seal batches with the same numbers; each process's instance id keeps
    them apart at the ingest: everything is stored once, nothing refused as a replay.
    """
    other = setup.tmp / "agent-state-2"
    shutil.copytree(setup.state / "keys", other / "keys")
    reserved = int(time.time() * 1000) + 10_000_000
    for state in (setup.state, other):
        (state / "shipping").mkdir(parents=True, exist_ok=True)
        (state / "shipping" / "seq.json").write_text(json.dumps({"agent_id": setup.agent.key_id, "reserved": reserved}))
    setup.ingest()
    n = 15
    a = Lines(setup.driver(collections=n))
    b = Lines(setup.driver(start=100, collections=n, state=other))
    a.wait_for("drained", timeout=60)
    b.wait_for("drained", timeout=60)
    for out in (a, b):
        m = out.metrics()
        assert m["hostmon_ship_sent_batches_total"] == n, m
        assert sum(v for k, v in m.items() if k.startswith("hostmon_ship_rejected_total")) == 0, m
    seqs = [json.loads((st / "shipping" / "seq.json").read_text()) for st in (setup.state, other)]
    assert seqs[0]["instance"] != seqs[1]["instance"]
    conn = sqlite3.connect(f"file:{setup.db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT instance, seq FROM batches").fetchall()
    finally:
        conn.close()
    by_instance = {i: sorted(q for j, q in rows if j == i) for i, _ in rows}
    assert set(by_instance) == {seqs[0]["instance"], seqs[1]["instance"]}
    assert by_instance[seqs[0]["instance"]] == by_instance[seqs[1]["instance"]]  # the same numbers, both stored
    assert_exactly_once(setup.db, [*range(n), *range(100, 100 + n)], setup.t0)
