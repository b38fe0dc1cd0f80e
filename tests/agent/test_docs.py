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
    out = subprocess.run([sys.executable, "-m", "hostmond.cli", "docs", "metrics"], capture_output=True, text=True, check=True).stdout
    assert (REPO / "docs" / "metrics.md").read_text() == out, "run `hostmon docs metrics > docs/metrics.md`"


def test_every_emitted_metric_is_in_the_table_with_its_type_and_labels(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "hostmond.cli", "collect", "--once", "--format", "json"],
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


def table_rows() -> dict[str, tuple[str, str]]:
    """name -> (type, help) from docs/metrics.md."""
    rows = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = (cells[1], cells[5].replace("\\|", "|"))
    return rows


def exposed_families(text: str) -> dict[str, tuple[str, str]]:
    """family name (as the table spells it: counters with _total) -> (type, HELP) from a real /metrics body."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith(("python_", "go_")):
            continue  # the client library's own platform families
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        out[name] = (fam.type, fam.documentation)
    return out


def compare_with_table(exposed: dict[str, tuple[str, str]], what: str) -> list[str]:
    table = table_rows()
    problems = []
    for name, (typ, help_) in sorted(exposed.items()):
        row = table.get(name)
        if row is None:
            problems.append(f"{what}: {name} is exposed but not in docs/metrics.md")
        elif row != (typ, help_):
            problems.append(f"{what}: {name} exposed as {typ} {help_!r}, documented as {row[0]} {row[1]!r}")
    return problems


def test_a_running_agent_and_ingest_expose_exactly_the_documented_types_and_help(tmp_path: Path) -> None:
    """Every family on a real agent's /metrics (shipping to its embedded ingest, so the shipper and spool
    families are there) and on a real ingest's /metrics has the type and HELP text of docs/metrics.md."""
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "tests" / "ingest"))
    from helpers import free_port, hostmon_process, scrape, wait_until
    from ingest_helpers import IngestProcess, make_keys, write_config

    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[http]\nlisten = "127.0.0.1:{port}"\n'
                   "[runtime]\ninterval = 1.0\n[shipping]\nbatch_max_age = 0.5\n"
                   # an empty textfile directory: *.prom families are the files' own, not in the table
                   f'[collectors.textfile]\ndirectory = "{tmp_path}"\n')
    with hostmon_process(["run", "--config", str(cfg)], cwd=tmp_path):
        url = f"http://127.0.0.1:{port}/metrics"

        def shipped() -> str | None:
            try:
                body = scrape(url)
            except OSError:
                return None
            return body if "hostmon_ship_sent_batches_total" in body and "hostmon_spool_bytes" in body else None

        agent_body = wait_until(shipped, timeout=60, interval=0.5, what="agent /metrics with shipper families")
    agent = exposed_families(agent_body)
    assert "hostmon_shipper_buffer_records" in agent and "node_load1" in agent

    keys = make_keys(tmp_path / "keys")
    ing = IngestProcess(write_config(tmp_path, keys))
    base = ing.start()
    try:
        ingest = exposed_families(scrape(base + "/metrics"))
    finally:
        ing.stop()
    assert "hostmon_ingest_rejected_total" in ingest and "hostmon_ingest_store_duration_seconds" in ingest
    problems = compare_with_table(agent, "agent") + compare_with_table(ingest, "ingest")
    assert not problems, "\n".join(problems)


def test_a_second_declaration_of_a_self_metric_is_an_error() -> None:
    import pytest

    from hostmond.core import selfmetrics
    from hostmond.core.model import GAUGE, MetricSpec

    name = selfmetrics.declared()[0][1].name
    with pytest.raises(selfmetrics.DuplicateMetricError, match=name):
        selfmetrics.declare("test", MetricSpec(name, GAUGE, "again"))
