"""README.md and docs/deployment.md against the files they describe: the Secrets they tell the operator to
create are the ones the manifests mount, with the keys the init containers read; every repository path they name
exists; every hostmon command they show parses; the exposure levels they quote are the measured ones."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

RequireTool = Callable[[str, str], str]
REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "packaging" / "kubernetes"
DOCS = (REPO / "README.md", REPO / "docs" / "deployment.md")


def text(path: Path) -> str:
    # shell line continuations joined
    return path.read_text().replace("\\\n", " ")


def shell_blocks(path: Path) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text(path), re.MULTILINE | re.DOTALL)


def pods() -> dict[str, dict]:
    out = {}
    for f in ("agent-daemonset.yaml", "ingest-deployment.yaml"):
        doc = yaml.safe_load((K8S / f).read_text())
        out[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
    return out


def files_read_from_secrets() -> dict[str, set[str]]:
    """Secret name -> the file names the pod's init container reads from that Secret's mount."""
    out: dict[str, set[str]] = {}
    for pod in pods().values():
        (init,) = pod["initContainers"]
        script = init["command"][-1]
        for vol in pod["volumes"]:
            if "secret" not in vol:
                continue
            (mount,) = [m for m in init["volumeMounts"] if m["name"] == vol["name"]]
            names = set(re.findall(re.escape(mount["mountPath"]) + r"/([\w.-]+)", script))
            if '"' + mount["mountPath"] + '/$1"' in script:  # the tls() helper: tls NAME MODE
                names |= set(re.findall(r"^\s*tls ([\w.-]+) 0[0-7]{3}$", script, re.MULTILINE))
            assert names, f"nothing read from Secret {vol['secret']['secretName']}"
            out[vol["secret"]["secretName"]] = names
    return out


def secret_commands(path: Path) -> dict[str, set[str]]:
    """`kubectl ... create secret generic NAME --from-file=...` in a document -> NAME: the Secret's keys."""
    out: dict[str, set[str]] = {}
    for block in shell_blocks(path):
        for line in block.splitlines():
            if "create secret generic" not in line:
                continue
            argv = shlex.split(line.split("#", 1)[0])
            name = argv[argv.index("generic") + 1]
            keys = set()
            for a in argv:
                if a.startswith("--from-file="):
                    spec = a.removeprefix("--from-file=")
                    key, eq, _src = spec.partition("=")
                    keys.add(key if eq else Path(spec).name)
            out[name] = keys
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_secrets_match_the_manifests(doc: Path) -> None:
    wanted = files_read_from_secrets()
    documented = secret_commands(doc)
    assert documented, f"{doc.name} shows no kubectl create secret command"
    for name, keys in documented.items():
        assert name in wanted, f"{doc.name}: Secret {name} is mounted by no manifest"
        assert keys == wanted[name], f"{doc.name}: Secret {name} gets keys {keys}, the init container reads {wanted[name]}"
    if doc.name == "deployment.md":
        assert set(documented) == set(wanted), "every Secret the manifests mount is documented"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_repository_paths_named_in_the_docs_exist(doc: Path) -> None:
    named = set(re.findall(r"(?<![\w/.$~-])((?:packaging|systemd|docs|tests|bench)/[\w./-]*[\w/])", text(doc)))
    assert named
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def hostmon_commands(doc: Path) -> list[list[str]]:
    out = []
    for block in shell_blocks(doc):
        for line in block.splitlines():
            for m in re.finditer(r"(?:^|-- |&& |\$\()hostmon ([^#\n&|)]*)", line):
                out.append(shlex.split(m.group(1)))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_hostmon_commands_in_the_docs_parse(doc: Path) -> None:
    """Each shown command's subcommands exist and each option it uses is one they accept."""
    commands = hostmon_commands(doc)
    assert commands
    helps: dict[tuple[str, ...], str] = {}
    for argv in commands:
        words = []
        for a in argv:
            if not re.fullmatch(r"[a-z][a-z-]*", a):
                break
            words.append(a)
        key = tuple(words)
        if key not in helps:
            proc = subprocess.run(
                [sys.executable, "-c", "import sys; from hostmond.cli import main; sys.exit(main(sys.argv[1:]))", *words, "--help"],
                check=False,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == 0, f"{doc.name}: hostmon {' '.join(argv)}: {proc.stderr}"
            helps[key] = proc.stdout
        for a in argv:
            if a.startswith("--"):
                opt = a.split("=", 1)[0]
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", helps[key]), f"{doc.name}: hostmon {' '.join(argv)}: no {opt}"


def test_quoted_exposure_levels_are_the_measured_ones(tmp_path: Path, require_tool: RequireTool) -> None:
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    doc = (REPO / "docs" / "deployment.md").read_text()
    readme = (REPO / "README.md").read_text()

    def measured(unit: Path) -> str:
        proc = subprocess.run(
            [exe, "security", "--offline=true", "--no-pager", str(unit)], check=False, capture_output=True, text=True, timeout=60
        )
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
        assert m, proc.stdout + proc.stderr
        return m.group(1)

    rows = dict(re.findall(r"^\| `(hostmon[^|]*?)` \| \**(\d+\.\d) OK\** \|$", doc, re.MULTILINE))
    assert set(rows) == {"hostmon.service", "hostmon.service` + `gpu.conf", "hostmon.service` + `process-fds.conf", "hostmon-ingest.service"}
    for name in ("hostmon.service", "hostmon-ingest.service"):
        assert rows[name] == measured(REPO / "systemd" / name), name
    assert f"rates {rows['hostmon.service']}" in readme
    for dropin in ("gpu.conf", "process-fds.conf"):
        unit_dir = tmp_path / dropin
        (unit_dir / "hostmon.service.d").mkdir(parents=True)
        (unit_dir / "hostmon.service").write_text((REPO / "systemd" / "hostmon.service").read_text())
        (unit_dir / "hostmon.service.d" / dropin).write_text((REPO / "systemd" / "examples" / dropin).read_text())
        assert rows[f"hostmon.service` + `{dropin}"] == measured(unit_dir / "hostmon.service"), dropin
