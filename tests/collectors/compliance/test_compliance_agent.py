"""The compliance collector inside the real agent: its series on /metrics pass promtool, a bad tree read
through paths.rootfs/proc_root shows its failing checks there."""

from __future__ import annotations

import subprocess

import pytest
from compliance_trees import make_tree
from helpers import free_port, hostmon_process, http_get, metric_value, require_tool, wait_until

pytestmark = pytest.mark.slow


def test_agent_serves_compliance_series_that_pass_promtool(tmp_path):
    promtool = require_tool("promtool")
    root, proc = make_tree(tmp_path / "tree", bad=True)
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text(
        f'[paths]\nrootfs = "{root}"\nproc_root = "{proc}"\n'
        "[shipping]\nenabled = false\n"
        "[collectors.compliance]\nenabled = true\n"
    )
    with hostmon_process(["run", "--config", str(conf), "--listen", f"127.0.0.1:{port}"], env={"HOSTMON_STATE_DIR": str(tmp_path / "state")}):
        url = f"http://127.0.0.1:{port}"
        # /readyz may answer before an hourly collector's first run has finished: wait for its series
        body = wait_until(
            lambda: (b := http_get(url + "/metrics")[2]) and b"hostmon_compliance_check{" in b and b,
            timeout=60, what="the compliance series on /metrics",
        )
    text = body.decode()
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    problems = [x for x in (r.stdout + r.stderr).decode().splitlines() if x.strip() and "node_memory_" not in x]
    assert r.returncode in (0, 3) and not problems, problems
    assert metric_value(text, "hostmon_compliance_check", {"policy": "default", "check": "ssh_root_login", "severity": "high"}) == 0
    assert metric_value(text, "hostmon_compliance_check", {"check": "uid0_only_root"}) == 0
    assert metric_value(text, "hostmon_compliance_check", {"check": "ssh_login_grace_time"}) == 1
    assert (metric_value(text, "hostmon_compliance_checks", {"policy": "default", "result": "fail"}) or 0) >= 20
    assert 0 < (metric_value(text, "hostmon_compliance_score", {"policy": "default"}) or 0) < 1
    assert metric_value(text, "hostmon_collector_success", {"collector": "compliance"}) == 1
