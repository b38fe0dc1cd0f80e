"""node_exporter's own node-mixin alerts and recording rules, run by a real Prometheus against both exporters.

The rendered ``alerts.yml`` and ``rules.yml`` (shared data, see its README) are
loaded twice into one Prometheus: as they are (``job="node"``, scraping the real
node_exporter) and with ``job="node"`` replaced by ``job="hostmon"`` (scraping
``hostmon run``). Every expression whose metrics all have series for
node_exporter must have them for hostmon too (a missing metric listed in
``docs/node-exporter-compat.md`` is excused, but on a machine like the test's
none is missing: 36 of 36, 21 alerts and 15 rules); every recording rule
that gives series for node_exporter gives them for hostmon.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from helpers import (
    REPO,
    free_port,
    hostmon_process,
    http_get,
    node_exporter_process,
    prometheus_server,
    promql,
    require_tool,
    shared_data,
    wait_until,
)

_spec = importlib.util.spec_from_file_location("hostmon_compat", Path(__file__).parent / "test_node_exporter_compat.py")
compat = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(compat)  # type: ignore[union-attr]

HOSTMON_JOB = "hostmon"
# Metric names in a PromQL expression: node_exporter's (node_...) and recorded ones (level:metric:operation).
METRIC = re.compile(r"\b(node_[A-Za-z0-9_]+|[a-z_]+:[A-Za-z0-9_]+:[A-Za-z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


def for_job(doc: dict[str, Any], job: str) -> dict[str, Any]:
    """The rule file with every ``job="node"`` selector (and the group names) made ``job``'s."""
    groups = []
    for g in doc["groups"]:
        rules = [{**r, "expr": r["expr"].replace('job="node"', f'job="{job}"')} for r in g["rules"]]
        groups.append({**g, "name": f"{g['name']}-{job}", "rules": rules})
    return {**doc, "groups": groups}


def test_metric_names_finds_selectors_and_recorded_names() -> None:
    e = '(node_nf_conntrack_entries{job="node"} / node_nf_conntrack_entries_limit) > 0.75 and instance:node_num_cpu:sum{job="node"}'
    assert metric_names(e) == {"node_nf_conntrack_entries", "node_nf_conntrack_entries_limit", "instance:node_num_cpu:sum"}


def test_node_mixin_alerts_and_rules_have_data_for_hostmon_where_node_exporter_has(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    mixin = shared_data("node-mixin")
    alerts = yaml.safe_load((mixin / "alerts.yml").read_text())
    rules = yaml.safe_load((mixin / "rules.yml").read_text())
    files = []
    for name, doc in (("alerts", alerts), ("rules", rules)):
        for job in ("node", HOSTMON_JOB):
            path = tmp_path / f"{name}-{job}.yml"
            path.write_text(yaml.safe_dump(doc if job == "node" else for_job(doc, job)))
            files.append(path)
    r = subprocess.run([promtool, "check", "rules", *map(str, files)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    hm_exprs = [r["expr"] for g in for_job(alerts, HOSTMON_JOB)["groups"] for r in g["rules"]]
    assert not any('job="node"' in e for e in hm_exprs) and sum(f'job="{HOSTMON_JOB}"' in e for e in hm_exprs) == 26

    hport, neport = free_port(), free_port()
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state"), "HOSTMON_SHIPPING__ENABLED": "false", "HOSTMON_RUNTIME__INTERVAL": "1"}
    scrape = [
        {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{neport}"]}]},
        {"job_name": HOSTMON_JOB, "static_configs": [{"targets": [f"127.0.0.1:{hport}"]}]},
    ]
    (tmp_path / "prom").mkdir()
    allowed_missing = compat.load_compat_doc()["missing"]

    def excused(metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, p) for p, _ in allowed_missing)

    with node_exporter_process(neport), hostmon_process(["run", "--listen", f"127.0.0.1:{hport}"], env=env, cwd=REPO):
        wait_until(lambda: http_get(f"http://127.0.0.1:{hport}/readyz")[0] == 200, timeout=30, what="hostmon ready")
        with prometheus_server(tmp_path / "prom", scrape, rule_files=files) as prom:
            for job in ("node", HOSTMON_JOB):
                wait_until(lambda j=job: promql(prom, f'up{{job="{j}"}} == 1'), timeout=30, what=f"{job} scraped")
            # rate(...[5m]) needs two samples of each job; the recorded ones a rule evaluation after that
            for job in ("node", HOSTMON_JOB):
                wait_until(lambda j=job: promql(prom, f'instance:node_cpu_utilisation:rate5m{{job="{j}"}}'),
                           timeout=60, what=f"recording rules evaluated for {job}")
            body = http_get(prom + "/api/v1/rules")[2]
            groups = json.loads(body)["data"]["groups"]
            bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
            assert not bad, bad

            def has(metric: str, job: str) -> bool:
                return bool(promql(prom, f'count({{__name__="{metric}",job="{job}"}})'))

            problems, both, counted = [], 0, 0
            for g in alerts["groups"] + rules["groups"]:
                for rule in g["rules"]:
                    what = rule.get("alert") or rule.get("record")
                    names = metric_names(rule["expr"])
                    if not all(has(n, "node") for n in names):
                        continue  # node_exporter has no data here either (no RAID, ...)
                    counted += 1
                    lacking = sorted(n for n in names if not has(n, HOSTMON_JOB))
                    if not lacking:
                        both += 1
                    elif not all(excused(n) for n in lacking):
                        problems.append(f"{what}: hostmon lacks {lacking}")
            assert not problems, "\n".join(problems)
            # The README's count for node_exporter on a VM: 21 of 26 alerts and 14 of 15 rules have data.
            print(f"node-mixin: {counted} expressions with data for node_exporter, {both} of them for hostmon too")
            assert counted >= 30, counted
            assert both == counted, (both, counted)  # every one, now that the textfile collector is in
            for rule in rules["groups"][0]["rules"]:
                rec = rule["record"]
                if promql(prom, f'{rec}{{job="node"}}'):
                    assert promql(prom, f'{rec}{{job="{HOSTMON_JOB}"}}'), f"{rec} has series for node_exporter, none for hostmon"
