"""The agent against the real thing: promtool check metrics, and a real Prometheus scraping it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import (
    free_port,
    hostmon_process,
    http_get,
    node_exporter_process,
    prometheus_server,
    promql,
    require_tool,
    wait_until,
)

# node_exporter's own names for meminfo fields are camelCase; promtool's linter flags them for
# node_exporter too. We keep them (dashboards depend on them). The other lints accepted are those
# promtool also gives the real node_exporter's output on this host (node_netstat_* camelCase,
# node_entropy_*_bits): the names are node_exporter's on purpose.
NODE_EXPORTER_CAMEL = re.compile(r"^node_memory_\w+ metric names should be written in 'snake_case' not 'camelCase'$")


def node_exporter_lints(promtool: str) -> set[str]:
    with node_exporter_process(free_port()) as url:
        body = http_get(url)[2]
    r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    return {line.strip() for line in (r.stdout + r.stderr).decode().splitlines() if line.strip()}


def test_metrics_pass_promtool_and_a_real_prometheus_scrapes_them(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    port = free_port()
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state"), "HOSTMON_TENANT_ID": "acme", "HOSTMON_SHIPPING__ENABLED": "false"}
    with hostmon_process(["run", "--listen", f"127.0.0.1:{port}"], env=env):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(url + "/readyz")[0] == 200, what="agent ready")
        status, _, body = http_get(url + "/metrics")
        assert status == 200
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
        out = (r.stdout + r.stderr).decode()
        theirs = node_exporter_lints(promtool)
        problems = [line for line in out.splitlines() if line.strip() and not NODE_EXPORTER_CAMEL.match(line) and line.strip() not in theirs]
        assert r.returncode in (0, 3) and not problems, f"promtool: rc={r.returncode}\n{out}"
        # promtool lints only the text format; OpenMetrics is what the real Prometheus below
        # negotiates first (its Accept header prefers it), so its scrape checks that format.
        status, hdrs, _ = http_get(url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and hdrs["Content-Type"].startswith("application/openmetrics-text")
        with prometheus_server(tmp_path, [{"job_name": "hostmon", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]) as prom:
            wait_until(lambda: promql(prom, 'up{job="hostmon"} == 1'), timeout=30, what="up == 1")
            cpu = wait_until(lambda: promql(prom, 'node_cpu_seconds_total{mode="idle"}'), what="cpu series")
            assert all(r["metric"]["tenant_id"] == "acme" for r in cpu)
            ok = promql(prom, "hostmon_collector_success")
            assert {r["metric"]["collector"] for r in ok} >= {"cpu", "memory", "disk", "network"}
            assert promql(prom, "node_memory_MemAvailable_bytes > 0")
