"""The Dockerfile, checked without building it against the other artifacts it must agree with.

The image is built and run for real under podman in test_podman.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "packaging" / "docker"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    return ins[last_from:]


def pins() -> dict[str, str]:
    out = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraint {line!r} is not an exact pin"
            out[canonicalize_name(name)] = version
    return out


def test_slim_python_311_base_images_by_default() -> None:
    """Both stages start from BASE_IMAGE, whose default is python's slim 3.11 image."""
    ins = instructions()
    (default,) = [rest.partition("=")[2] for w, rest in ins if w == "ARG" and rest.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", default), default
    bases = [rest.split()[0] for w, rest in ins if w == "FROM"]
    assert bases == ["${BASE_IMAGE}", "${BASE_IMAGE}"], bases


def test_runs_as_the_non_root_uid_the_manifests_use() -> None:
    (user,) = [rest for w, rest in final_stage() if w == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0
    ds = yaml.safe_load((REPO / "packaging/kubernetes/agent-daemonset.yaml").read_text())
    sc = ds["spec"]["template"]["spec"]["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (int(uid), int(gid))


def test_entry_point_is_the_units_exec_start() -> None:
    stage = final_stage()
    (entry,) = [json.loads(rest) for w, rest in stage if w == "ENTRYPOINT"]
    (cmd,) = [json.loads(rest) for w, rest in stage if w == "CMD"]
    unit = (REPO / "systemd/hostmon.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert entry + cmd == shlex.split(exec_start)
    # and the DaemonSet passes the same arguments to that entry point
    ds = yaml.safe_load((REPO / "packaging/kubernetes/agent-daemonset.yaml").read_text())
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    assert agent["args"] == cmd


def test_copied_sources_exist_and_install_uses_the_constraints() -> None:
    for w, rest in instructions():
        if w == "COPY" and not rest.startswith("--from"):
            *srcs, _dest = rest.split()
            for src in srcs:
                assert (REPO / src).exists(), src
    runs = " ".join(rest for w, rest in instructions() if w == "RUN")
    assert re.search(r"pip install -c /tmp/constraints\.txt \$PIP_INSTALL_OPTIONS /src", runs)
    assert "pip check" in runs


def test_constraints_pin_the_whole_runtime_closure() -> None:
    """Every runtime requirement (and theirs) is pinned, and the pins satisfy pyproject."""
    pinned = pins()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for raw in deps:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} not pinned"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} violates {raw}"
    # the closure as installed here (what the tests ran with) has no unpinned member
    proc = subprocess.run(
        [sys.executable, str(DOCKER / "freeze_constraints.py")], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    here = {canonicalize_name(line.split("==")[0]) for line in proc.stdout.splitlines() if "==" in line}
    assert here - set(pinned) == set(), "regenerate packaging/docker/constraints.txt"


def test_final_image_has_journalctl_for_the_auth_collector() -> None:
    """The auth collector's journal source runs journalctl; python's slim image has none."""
    runs = " ".join(rest for w, rest in final_stage() if w == "RUN")
    m = re.search(r"apt-get install -y --no-install-recommends ([^&]+?) &&", runs)
    assert m and "systemd" in m.group(1).split(), runs
    assert "rm -rf /var/lib/apt/lists/*" in runs
    from hostmond.collectors.auth.collector import AuthConfig

    assert AuthConfig().journalctl == "journalctl"  # found on PATH (/usr/bin in the image)
