"""Third-party collectors: found through the hostmon.collectors entry point; broken ones skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hostmon-example-queue"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin installed by pip (a real wheel build) into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    assert list(target.glob("hostmon_example_queue-*.dist-info"))
    return target


def run_collect(site: Path, tmp_path: Path, config: str, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "hostmon.toml"
    conf.write_text(config)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), extra_path) if p)}
    return subprocess.run(
        [sys.executable, "-m", "hostmond.cli", "collect", "--once", "--format", "json", "--config", str(conf)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )


def test_installed_plugin_is_found_through_its_entry_point(plugin_site: Path, tmp_path: Path) -> None:
    q = tmp_path / "q"
    q.mkdir()
    (q / "a").write_bytes(b"12345")
    r = run_collect(plugin_site, tmp_path, f'[collectors.example_queue]\nqueues = {{ mail = "{q}" }}\n')
    assert r.returncode == 0, r.stderr
    samples = json.loads(r.stdout)["samples"]
    got = {(s["name"], s["labels"].get("queue")): s["value"] for s in samples if s["name"].startswith("example_queue")}
    assert got[("example_queue_files", "mail")] == 1
    assert got[("example_queue_bytes", "mail")] == 5
    assert any(s["name"] == "hostmon_collector_success" and s["labels"]["collector"] == "example_queue" and s["value"] == 1 for s in samples)


def test_plugin_with_bad_config_is_reported_and_skipped(plugin_site: Path, tmp_path: Path) -> None:
    r = run_collect(plugin_site, tmp_path, '[collectors.example_queue]\nqueues = { mail = "relative/dir" }\n')
    assert r.returncode == 0, "the agent still runs"
    assert "collectors.example_queue: queues.mail: 'relative/dir' must be an absolute path" in r.stderr
    names = {s["name"] for s in json.loads(r.stdout)["samples"]}
    assert "node_load1" in names and "example_queue_files" not in names


def test_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path: Path) -> None:
    site = tmp_path / "brokensite"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hostmon.collectors]\nbroken = broken_plugin_module:Nope\n")
    r = run_collect(site, tmp_path, "")
    assert r.returncode == 0, r.stderr
    assert "entry point broken = broken_plugin_module:Nope" in r.stderr and "import failed" in r.stderr
    samples = json.loads(r.stdout)["samples"]
    assert any(s["name"] == "hostmon_plugin_load_errors" and s["value"] == 1 for s in samples)
    assert any(s["name"] == "node_load1" for s in samples)


def test_example_plugin_own_tests_pass_with_the_shipped_fixture(plugin_site: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(plugin_site)}, cwd=EXAMPLE,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 passed" in r.stdout
