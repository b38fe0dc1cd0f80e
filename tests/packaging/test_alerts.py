"""Alert rules and Alertmanager routing, checked with promtool and amtool."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

RequireTool = Callable[[str, str], str]
REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "packaging" / "prometheus"
RULES = PROM_DIR / "hostmon-rules.yml"
RULE_TESTS = PROM_DIR / "hostmon-rules.test.yml"
ALERTMANAGER = REPO / "packaging" / "alertmanager" / "alertmanager.yml"
PROMTOOL_HINT = "apt-get install prometheus"
AMTOOL_HINT = "apt-get install prometheus-alertmanager"


def alerts() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_check_rules(require_tool: RequireTool) -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    proc = run([promtool, "check", "rules", str(RULES)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in proc.stdout


def test_promtool_unit_tests_pass(require_tool: RequireTool) -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    proc = run([promtool, "test", "rules", RULE_TESTS.name], cwd=PROM_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_example_prometheus_config_is_valid(require_tool: RequireTool) -> None:
    promtool = require_tool("promtool", PROMTOOL_HINT)
    proc = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {j["job_name"] for j in yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == {"hostmon", "hostmon-ingest"}  # the names the rules select


def test_severities_cover_the_issue() -> None:
    by_name = {a["alert"]: a for a in alerts()}
    for a in by_name.values():
        assert a["labels"]["severity"] in {"P0", "P1", "P2", "P3"}, a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
    expected = {
        # P0 service down: host or agent unreachable, ingest down
        "HostmonAgentDown": "P0",
        "HostmonIngestDown": "P0",
        # P1 degraded: disk full in 4 h, brute force, spool growing toward its limit
        "HostDiskWillFillIn4Hours": "P1",
        "HostmonBruteForceLogin": "P1",
        "HostmonSpoolFillingUp": "P1",
        # P2 warning: collector failing, memory pressure, dropped batches
        "HostmonCollectorFailing": "P2",
        "HostMemoryPressureHigh": "P2",
        "HostmonShippingDroppedBatches": "P2",
        # P2 too: a high-severity compliance check newly failing (issue 16)
        "HostmonComplianceCheckFailing": "P2",
        # P3 info: agent restarted, clock skew
        "HostmonAgentRestarted": "P3",
        "HostClockSkew": "P3",
    }
    for name, severity in expected.items():
        assert name in by_name, name
        assert by_name[name]["labels"]["severity"] == severity, name


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for t in doc["tests"]:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def test_each_alert_firing_case_depends_on_its_expression(tmp_path: Path, require_tool: RequireTool) -> None:
    """Neutering any one alert's expression makes `promtool test rules` fail.

    Proves the unit tests really exercise every rule (a test file that passed
    whatever the rules said would pass this mutation too).
    """
    promtool = require_tool("promtool", PROMTOOL_HINT)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            original = rule["expr"]
            rule["expr"] = "vector(1) == 0"  # never true
            (tmp_path / RULES.name).write_text(yaml.safe_dump(doc, sort_keys=False))
            proc = run([promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path)
            rule["expr"] = original
            assert proc.returncode != 0, f"{rule['alert']}: tests still pass with the rule neutered"
            assert rule["alert"] in proc.stdout + proc.stderr


def test_alertmanager_config_is_valid(require_tool: RequireTool) -> None:
    amtool = require_tool("amtool", AMTOOL_HINT)
    proc = run([amtool, "check-config", str(ALERTMANAGER)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [
        ("P0", "pagerduty"),
        ("P1", "slack-alerts"),
        ("P2", "slack-and-email"),
        ("P3", "email-digest"),
    ],
)
def test_alertmanager_routes_each_severity(severity: str, receiver: str, require_tool: RequireTool) -> None:
    amtool = require_tool("amtool", AMTOOL_HINT)
    proc = run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", f"severity={severity}", "alertname=X"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == [receiver]


def test_alertmanager_receivers_match_the_issue() -> None:
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert "pagerduty_configs" in receivers["pagerduty"]
    assert "slack_configs" in receivers["slack-alerts"]
    assert {"slack_configs", "email_configs"} <= set(receivers["slack-and-email"])
    assert "email_configs" in receivers["email-digest"]
    p3 = next(r for r in doc["route"]["routes"] if r["matchers"] == ['severity="P3"'])
    # a digest: long grouping, not one mail per alert
    assert p3["group_interval"] in {"12h", "24h"} and p3["group_by"] == ["alertname"]
