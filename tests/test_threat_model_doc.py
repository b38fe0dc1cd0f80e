"""docs/threat-model.md names, for each attack, the test that shows it stopped: every named test exists."""

from __future__ import annotations

import ast
import re

from helpers import REPO


def test_every_test_named_in_the_threat_model_exists() -> None:
    text = (REPO / "docs" / "threat-model.md").read_text()
    named: list[tuple[str, str]] = []
    for cell in text.split("|"):
        base = ""  # "`tests/x.py::a`, `::b`": b is in the file named last before it
        for path, name in re.findall(r"`(tests/[\w/.-]+\.py)?((?:::[\w\[\],-]+)?)`", cell):
            if path:
                base = path
            elif not (name and base):
                continue
            named.append((base, name[2:].split("[")[0]))
    assert len(named) >= 20
    missing = []
    for path, name in named:
        p = REPO / path
        if not p.is_file():
            missing.append(path)
            continue
        if name:
            funcs = {n.name for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if name not in funcs:
                missing.append(f"{path}::{name}")
    assert not missing, missing
