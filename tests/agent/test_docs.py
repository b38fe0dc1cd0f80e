"""docs/metrics.md is generated from the metric declarations, and agrees with what is emitted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def table_names() -> dict[str, tuple[str, set[str]]]:
    rows = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            labels = set() if cells[3] == "-" else {x.strip() for x in cells[3].split(",")}
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def test_metric_table_is_current() -> None:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "docs", "metrics"], capture_output=True, text=True, check=True).stdout
    assert (REPO / "docs" / "metrics.md").read_text() == out, "run `hostmon docs metrics > docs/metrics.md`"


def test_every_emitted_metric_is_in_the_table_with_its_type_and_labels(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "collect", "--once", "--format", "json"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
        # an empty textfile directory: the families of *.prom files are the files' own, not documented here
        env={**os.environ, "HOSTMON_COLLECTORS__TEXTFILE__DIRECTORY": str(tmp_path)},
    )
    table = table_names()
    problems = []
    samples = json.loads(r.stdout)["samples"]
    assert len(samples) > 50
    for s in samples:
        row = table.get(s["name"])
        if row is None:
            problems.append(f"{s['name']}: not in docs/metrics.md")
            continue
        typ, labels = row
        if typ != s["type"]:
            problems.append(f"{s['name']}: emitted {s['type']}, documented {typ}")
        extra = set(s["labels"]) - labels - {"tenant_id", "host"}
        if extra:
            problems.append(f"{s['name']}: undocumented labels {sorted(extra)}")
    assert not problems, "\n".join(sorted(set(problems)))
