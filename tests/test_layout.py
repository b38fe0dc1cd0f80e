"""The package layout: one import namespace, one-way layers, no swallowed ImportError.

The import graph is read from the ``ast`` of every module (function-level imports
included), so an arrow against the layers fails here before it ships.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "hostmond"
# folder -> package it installs as (pyproject.toml [tool.setuptools.package-dir])
ROOTS = {"src/hostmond": "hostmond", "agent": "hostmond.agent", "collectors": "hostmond.collectors", "ingest": "hostmond.ingest"}

# Which layers a layer may import (besides itself). The command (hostmond.cli) and
# the docs generator sit on top and may import anything.
ALLOWED = {
    "core": {"core"},
    "web": {"core", "web"},
    "api": {"core", "api"},
    "testing": {"core", "api", "testing"},
    "collectors": {"api", "collectors"},
    "agent": {"core", "web", "api", "agent"},
    "ingest": {"core", "web", "ingest"},
    "top": {"core", "web", "api", "testing", "collectors", "agent", "ingest", "top"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    if len(parts) == 1:
        return "top"
    head = parts[1]
    if head in ("core", "web", "api", "testing", "collectors", "agent", "ingest"):
        return head
    return "top"  # hostmond.cli, hostmond.docs


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, pkg in ROOTS.items():
        base = REPO / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # "from hostmond.collectors import cpu" imports the module hostmond.collectors.cpu
            out.extend((node.lineno, f"{name}.{a.name}") for a in node.names if f"{name}.{a.name}" in MODULES)
    return out


MODULES = modules()


def test_every_module_imports_only_layers_below_it() -> None:
    bad = []
    for module, path in sorted(MODULES.items()):
        mine = layer_of(module)
        for line, target in imports_of(path, module):
            root = target.split(".")[0]
            if root in ("agent", "collectors", "ingest"):
                bad.append(f"{path.relative_to(REPO)}:{line}: imports the bare package {target!r} (use hostmond.{target})")
                continue
            if root != PACKAGE or target == PACKAGE:  # the package root holds only __version__
                continue
            theirs = layer_of(target)
            if theirs not in ALLOWED[mine]:
                bad.append(f"{path.relative_to(REPO)}:{line}: {mine} layer imports {target} ({theirs} layer)")
    assert not bad, "arrows against the layers:\n" + "\n".join(bad)


def test_a_collector_imports_no_other_collector() -> None:
    """Collectors share private helpers (modules named _x) but never import each other."""
    bad = []
    for module, path in sorted(MODULES.items()):
        if layer_of(module) != "collectors" or module.count(".") < 2:
            continue
        own = module.split(".")[2]
        for line, target in imports_of(path, module):
            parts = target.split(".")
            if parts[:2] == [PACKAGE, "collectors"] and len(parts) > 2:
                if parts[2] != own and not parts[2].startswith("_"):
                    bad.append(f"{path.relative_to(REPO)}:{line}: imports the collector {target}")
    assert not bad, "\n".join(bad)


def test_layer_check_catches_an_arrow_against_the_layers(tmp_path: Path) -> None:
    """The walk above would see a core module importing the agent (so it can fail)."""
    p = tmp_path / "bad.py"
    p.write_text("def f():\n    from hostmond.agent.runtime import Agent\n")
    found = imports_of(p, "hostmond.core.bad")
    assert (2, "hostmond.agent.runtime") in found
    assert layer_of("hostmond.agent.runtime") not in ALLOWED[layer_of("hostmond.core.bad")]


def test_tests_benches_and_examples_use_the_namespace() -> None:
    bad = []
    for folder in ("tests", "bench", "examples"):
        for path in (REPO / folder).rglob("*.py"):
            for line, target in imports_of(path, "x.y"):
                if target.split(".")[0] in ("agent", "collectors", "ingest"):
                    bad.append(f"{path.relative_to(REPO)}:{line}: {target}")
    assert not bad, "\n".join(bad)


def test_no_module_swallows_an_import_error() -> None:
    """A missing required dependency must fail loudly; only the optional gpu extra may be absent."""
    # gpu: the optional extra; cli/command: a missing required library is reported by name, with how to
    # install it, and the command exits 1 (tests/test_missing_dependency.py), nothing is skipped.
    allowed = {"hostmond.collectors.gpu", "hostmond.cli", "hostmond.core.command"}
    bad = []
    for module, path in sorted(MODULES.items()):
        if module in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)]
                if {"ImportError", "ModuleNotFoundError"} & set(names):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not bad, "ImportError caught at:\n" + "\n".join(bad)


def test_plugin_example_uses_only_the_public_api() -> None:
    src = REPO / "examples" / "hostmon-example-queue"
    found = set()
    for path in src.rglob("*.py"):
        for _, target in imports_of(path, "x.y"):
            if target.split(".")[0] == PACKAGE:
                found.add(target)
    assert found and found <= {"hostmond.api", "hostmond.testing"}, found


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (package-dir mapping); a new folder left out of the list
    would work in an editable install and be missing from the wheel, the .deb and the image."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert found == listed, f"in the tree, not listed: {sorted(found - listed)}; listed, not in the tree: {sorted(listed - found)}"


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path: Path) -> None:
    """`pip wheel .` holds hostmond/ and its dist-info, nothing else at the top of site-packages."""
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("hostmond-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    top = {n.split("/")[0] for n in names}
    assert top == {"hostmond", next(t for t in top if t.endswith(".dist-info"))}, top
    for must in ("hostmond/api.py", "hostmond/testing.py", "hostmond/cli.py", "hostmond/core/wire.py",
                 "hostmond/agent/runtime.py", "hostmond/collectors/cpu.py", "hostmond/collectors/auth/parse.py",
                 "hostmond/ingest/server.py"):
        assert must in names, must
    assert "hostmon = hostmond.cli:main" in entry_points
    assert "[hostmon.collectors]" in entry_points and "cpu = hostmond.collectors.cpu:CPUCollector" in entry_points
    assert not any(n.startswith(("agent/", "collectors/", "ingest/", "tests/")) for n in names)
    os.remove(wheel)
