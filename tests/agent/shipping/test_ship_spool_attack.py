"""Issue 12, finding 7: another user attacks the root agent through its spool or state directory.

The attacker's steps run as ``nobody`` (``runuser``); the agent is the real
``hostmon run`` process as root, shipping to its embedded ingest. Needs root:
skipped elsewhere, a failure under CI=true (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.slow

VICTIM_FILES = 40  # more than the 32 files kept in spool/corrupt, so pruning would delete 8


@pytest.fixture
def arena() -> Iterator[Path]:
    """A root-owned 0755 directory with a sticky world-writable ``pub/`` (like /tmp) and a root-only victim."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the spool attack test needs root and runuser (CI runs as root)")
        pytest.skip("needs root and runuser")
    base = Path(tempfile.mkdtemp(prefix="hostmon-attack-", dir="/tmp"))
    try:
        base.chmod(0o755)
        (base / "pub").mkdir(mode=0o1777)
        (base / "pub").chmod(0o1777)
        victim = base / "victim"
        victim.mkdir(mode=0o700)
        for j in range(VICTIM_FILES):
            (victim / f"{j:03d}-precious").write_text("root's data\n")
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(script: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "sh", "-ec", script], check=True, timeout=30)


def write_config(tmp: Path, port: int, state: Path, spool: Path | None = None) -> Path:
    cfg = tmp / "hostmon.toml"
    text = (
        f'tenant_id = "acme"\nstate_dir = "{state}"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n[runtime]\ninterval = 1.0\n'
        f"[shipping]\nbatch_max_age = 0.5\n"
    )
    if spool is not None:
        text += f'spool_dir = "{spool}"\n'
    cfg.write_text(text)
    return cfg


def run_agent(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env.pop("NOTIFY_SOCKET", None)
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run", "--config", str(cfg)],
                                env=env, stdout=subprocess.DEVNULL, stderr=f)


def refused(cfg: Path, log: Path) -> str:
    proc = run_agent(cfg, log)
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert rc != 0, f"the agent accepted the directory:\n{text[-2000:]}"
    return text


@pytest.mark.parametrize("owner", ["nobody", "root-0777"])
def test_root_agent_refuses_a_spool_dir_prepared_by_another_user_and_deletes_nothing(arena, tmp_path, owner) -> None:
    spool = arena / "pub" / "spool"
    if owner == "nobody":
        as_nobody(f"mkdir -m 0700 {spool}")
    else:  # root's own directory, but left writable by everyone
        spool.mkdir()
        spool.chmod(0o777)
    # nobody plants the attack: corrupt/ is a link to root's private directory, and a leftover
    # temporary file makes the agent move it into corrupt/ and prune corrupt/ to its newest 32 files
    as_nobody(f"ln -s {arena / 'victim'} {spool}/corrupt && echo x > {spool}/.tmp-1.hmb")
    text = refused(write_config(tmp_path, free_port(), tmp_path / "state", spool), tmp_path / "agent.log")
    assert str(spool) in text
    assert ("owned by uid 65534" in text) if owner == "nobody" else ("writable by group or others" in text)
    assert len(os.listdir(arena / "victim")) == VICTIM_FILES
    assert os.path.islink(spool / "corrupt")


def test_root_agent_refuses_a_state_dir_another_user_can_write(arena, tmp_path) -> None:
    state = arena / "pub" / "state"
    as_nobody(f"mkdir -m 0777 {state} && ln -s {arena / 'victim'} {state}/spool")
    text = refused(write_config(tmp_path, free_port(), state), tmp_path / "agent.log")
    assert "state_dir" in text and str(state) in text and "owned by uid 65534" in text
    assert len(os.listdir(arena / "victim")) == VICTIM_FILES


def test_links_inside_a_private_spool_are_never_followed(arena, tmp_path) -> None:
    """A link named like a batch (root-owned spool, so planted by some other means) is moved aside, not read."""
    state = tmp_path / "state"
    spool = state / "spool"
    spool.mkdir(parents=True, mode=0o700)
    os.symlink(arena / "victim" / "000-precious", spool / "00000000000000000005.hmb")
    port = free_port()
    proc = run_agent(write_config(tmp_path, port, state), tmp_path / "agent.log")
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60, what="ready")
        text = http_get(f"http://127.0.0.1:{port}/metrics")[2].decode()
        assert metric_value(text, "hostmon_spool_corrupt_total") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert (arena / "victim" / "000-precious").read_text() == "root's data\n"
    moved = os.listdir(spool / "corrupt")
    assert len(moved) == 1 and os.path.islink(spool / "corrupt" / moved[0])


def test_a_fifo_named_like_a_batch_neither_blocks_readiness_nor_sigterm(tmp_path) -> None:
    state = tmp_path / "state"
    spool = state / "spool"
    spool.mkdir(parents=True, mode=0o700)
    os.mkfifo(spool / "00000000000000000007.hmb", 0o600)
    port = free_port()
    log = tmp_path / "agent.log"
    proc = run_agent(write_config(tmp_path, port, state), log)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60,
                   what="ready with a FIFO in the spool")
        text = http_get(f"http://127.0.0.1:{port}/metrics")[2].decode()
        assert metric_value(text, "hostmon_spool_corrupt_total") == 1
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        assert rc == 0 and time.monotonic() - t0 < 5.0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (spool / "00000000000000000007.hmb").exists()
