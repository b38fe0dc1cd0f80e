"""Shared helpers for the deployment-artifact tests.

Each test here checks an artifact with the real tool of its ecosystem
(systemd-analyze, promtool, amtool, dpkg-deb, kubernetes-validate, prometheus).
A missing tool skips the test on a developer machine and FAILS it under
``CI=true`` (``.ci/run`` installs them all).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# lets the tests here import their helper module (packaging_testutil)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _require_tool(name: str, hint: str) -> str:
    """Path of executable ``name``; skip (or fail under CI=true) when missing."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found ({hint})"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _require_module(name: str, hint: str) -> object:
    try:
        return __import__(name)
    except ImportError:
        msg = f"python module {name} not importable ({hint})"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


RequireTool = Callable[[str, str], str]


@pytest.fixture(scope="session")
def require_tool() -> RequireTool:
    """``require_tool(name, install_hint)`` -> path; skips, or fails under CI=true."""
    return _require_tool


@pytest.fixture(scope="session")
def require_module() -> Callable[[str, str], object]:
    return _require_module



def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        msg = f"{what} needs root"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def podman_tools() -> None:
    """podman, runc and debootstrap (apt), and root; skips, or fails under CI=true."""
    for tool in ("podman", "runc", "debootstrap"):
        _require_tool(tool, "apt-get install podman runc debootstrap")
    _require_root("running podman pods with host PID and network")


@pytest.fixture(scope="session")
def hostmon_image(podman_tools: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """packaging/docker/Dockerfile built once per test session (podman, on a debootstrap Debian base)."""
    from podman_testutil import build_image

    return build_image(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory, require_tool: RequireTool) -> Path:
    """packaging/deb/build.sh run once per session (test_deb.py, test_deb_systemd.py)."""
    import subprocess
    import tomllib

    require_tool("dpkg-deb", "apt-get install dpkg")
    if not Path("/usr/bin/python3.11").exists():
        msg = "/usr/bin/python3.11 missing (apt-get install python3.11 python3.11-venv)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(
        [str(REPO / "packaging" / "deb" / "build.sh"), str(out)], capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == out / f"hostmon_{version}_{arch}.deb"
    assert path.is_file()
    return path
