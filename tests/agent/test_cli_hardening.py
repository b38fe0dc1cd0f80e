"""Issue 12 #10: the command line and /metrics as a new user meets them (real processes, real servers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
from ingest_helpers import IngestProcess, make_keys, sample_records, seal, write_config  # noqa: E402

HOSTMON = [sys.executable, "-m", "hostmond.cli"]


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOSTMON, *argv], capture_output=True, text=True, timeout=120, check=False, env=env)


def test_collect_with_an_unknown_collector_fails_and_names_the_installed_ones(tmp_path: Path) -> None:
    r = _run("collect", "--once", "--collector", "nosuch")
    assert r.returncode != 0 and r.stdout == ""
    assert "nosuch" in r.stderr and "cpu" in r.stderr and "memory" in r.stderr and "auth" in r.stderr


def test_collect_gpu_without_nvml_says_why_at_the_default_level(tmp_path: Path) -> None:
    # an empty directory first on the library path and no fake: NVML cannot load here
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env["HOSTMON_STATE_DIR"] = str(tmp_path / "state")
    r = _run("collect", "--once", "--collector", "gpu", env=env)
    if "hostmon_gpu_" in r.stdout.replace("hostmon_gpu_devices", ""):
        pytest.skip("this host has a working NVML")
    assert r.returncode == 1
    assert "gpu: nothing to collect on this host:" in r.stderr, r.stderr
    assert len(r.stderr.split("nothing to collect on this host:")[1].strip()) > 5  # the reason itself


def test_openmetrics_help_escapes_double_quotes_and_q_zero_refuses_openmetrics(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "hostmon.toml"
    log = tmp_path / "auth.log"  # the auth collector's window metrics have HELP texts with quotes (source="other")
    now = time.strftime("%b %e %H:%M:%S")
    log.write_text(f"{now} h sshd[7]: Failed password for root from 192.0.2.1 port 22 ssh2\n")
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[http]\nlisten = "127.0.0.1:{port}"\n[shipping]\nenabled = false\n'
                   f'[collectors.auth]\nfiles = ["{log}"]\njournal = false\nbtmp = ""\nread_from_start = true\n')
    proc = subprocess.Popen([*HOSTMON, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(accept: str) -> tuple[str, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": accept})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.headers["Content-Type"], resp.read().decode()

        wait_until(lambda: get("text/plain")[1].count("hostmon_ready 1"), timeout=60, what="ready")
        ct, body = get("application/openmetrics-text;q=0,text/plain")
        assert ct.startswith("text/plain") and "version=0.0.4" in ct and "# EOF" not in body
        om = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        # the OpenMetrics body is rendered from the snapshot on its own schedule: wait for the auth families
        wait_until(lambda: "hostmon_auth_window_failures_by_source" in get(om)[1], timeout=30, what="auth in OpenMetrics")
        ct, body = get(om)
        assert ct.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
        helps = [line for line in body.splitlines() if line.startswith("# HELP ")]
        quoted = [h for h in helps if '"' in h]
        assert quoted, "expected HELP texts with a double quote (they exist in this agent's metrics)"
        for h in quoted:  # every " in an OpenMetrics HELP is escaped
            text = h.split(" ", 3)[3]
            assert all(text[i - 1] == "\\" for i, c in enumerate(text) if c == '"'), h
        _, plain = get("text/plain")
        assert any('"' in line and '\\"' not in line for line in plain.splitlines() if line.startswith("# HELP "))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ingest_query_into_head_exits_quietly(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    ingest = IngestProcess(write_config(tmp_path, keys))
    url = ingest.start()
    try:
        for seq in range(3):
            body = seal(keys, seq, sample_records(2000, seq=seq))
            req = urllib.request.Request(f"{url}/v1/batches", data=body, method="POST",
                                         headers={"Content-Type": "application/vnd.hostmon.batch"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
    finally:
        ingest.stop()
    cmd = " ".join([*HOSTMON, "ingest", "query", "--db", str(tmp_path / "ingest.db"), "--tenant", "acme",
                    "--format", "table"])
    r = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.stdout.count("\n") == 1
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
