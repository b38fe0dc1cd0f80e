"""Helpers shared by the test suite: free ports, required tools, real subprocesses, Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_DATA = REPO / "tests" / "data"  # small fixtures we wrote ourselves: always there
# The real-data evaluations read a directory named by HOSTMON_SHARED_DATA (.ci/run sets it when
# ../shared/data exists beside the repository); without it they are skipped, so a clone alone passes.
SHARED_DATA_ENV = "HOSTMON_SHARED_DATA"


def shared_data_file(rel: str) -> Path:
    """A file of the real-data set: skipped when HOSTMON_SHARED_DATA is unset, a failure when it is set
    and the file is missing (then the evaluation was asked for and cannot run)."""
    base = os.environ.get(SHARED_DATA_ENV)
    if not base:
        pytest.skip(f"real-data evaluation: set {SHARED_DATA_ENV}=DIR to run it (.ci/run does when ../shared/data exists)")
    p = Path(base) / rel
    if not p.is_file():
        pytest.fail(f"{p} missing: {SHARED_DATA_ENV}={base} does not hold {rel}")
    return p


def shared_data(*parts: str) -> Path:
    """A path in the team's shared data (node-mixin, auth logs): ``$HOSTMON_SHARED_DATA`` if set, else
    ``../shared/data`` beside the checkout. Missing: skip locally, FAIL under CI=true."""
    env = os.environ.get("HOSTMON_SHARED_DATA")
    base = Path(env) if env else SHARED_DATA
    path = base.joinpath(*parts)
    if not path.exists():
        msg = f"shared data {path} not found (set HOSTMON_SHARED_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tool(name: str) -> str:
    """Path of an external tool; missing means skip locally, FAIL under CI=true."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def wait_until(pred: Any, timeout: float = 15.0, interval: float = 0.15, what: str = "condition") -> Any:
    """Poll ``pred`` until it is truthy. The default pace (under 7 polls a second) stays below the agent's
    default per-client rate limit (10/s), so a slow start on a loaded machine does not turn the test's
    own polling into 429 answers."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@contextmanager
def hostmon_process(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``hostmon ARGS`` as a real process; killed at the end whatever happens."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.Popen([sys.executable, "-m", "hostmond.cli", *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        for s in (p.stdout, p.stderr):
            if s is not None:
                s.close()


@contextmanager
def node_exporter_process(port: int, args: list[str] | None = None) -> Iterator[str]:
    """The real node_exporter (Debian ``prometheus-node-exporter``) with its defaults on 127.0.0.1; yields its /metrics URL."""
    binary = require_tool("prometheus-node-exporter")
    p = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", *(args or [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: http_get(url)[0] == 200, timeout=20, what="node_exporter answering")
        yield url
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)


@contextmanager
def prometheus_server(
    tmp: Path, scrape_configs: list[dict[str, Any]], extra_args: list[str] | None = None, rule_files: list[Path] | None = None
) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 with the given scrape configs (and rule files); yields its base URL."""
    binary = require_tool("prometheus")
    port = free_port()
    cfg: dict[str, Any] = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape_configs}
    if rule_files:
        cfg["rule_files"] = [str(f) for f in rule_files]
    (tmp / "prometheus.yml").write_text(json.dumps(cfg))  # JSON is YAML
    (tmp / "tsdb").mkdir(exist_ok=True)
    args = [
        binary,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *(extra_args or []),
    ]
    log = open(tmp / "prometheus.log", "wb")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(base + "/-/ready")[0] == 200, timeout=30, what="prometheus ready")
        yield base
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def promql(base: str, query: str) -> list[dict[str, Any]]:
    status, _, body = http_get(base + "/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {status} {data}")
    return data["data"]["result"]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Value of the first series ``name`` in exposition text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(s.value)
    return None


def scrape(url: str) -> str:
    return http_get(url)[2].decode()
