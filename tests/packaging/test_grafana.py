"""Grafana dashboards and alert rules against the real thing: a real Prometheus
(127.0.0.1, free port, 1 s scrapes) scraping a real running `hostmon run`,
whose auth collector reads a log with fresh failed logins. Every panel query
and every template-variable query goes through Prometheus's HTTP API."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

RequireTool = Callable[[str, str], str]
REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "packaging" / "grafana"
RULES = REPO / "packaging" / "prometheus" / "hostmon-rules.yml"
TENANT = "acme"

# Panels that must return data on any Linux host running the agent (the
# fixture feeds the auth collector failed logins, so security panels count).
# Every other panel must be listed in MAY_BE_EMPTY with the reason.
MAY_BE_EMPTY = {
    ("hostmon / Agent health", "Partial errors by reason"): "series exist only once a collector reported a partial error",
    ("hostmon / Agent health", "Send failures (retried)"): "series exist only once a send failed",
    ("hostmon / Security", "Failing checks"): "empty on a host that passes every compliance check",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(GRAFANA.glob("*.json"))}


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        if p["type"] == "row":
            yield from p.get("panels", [])
        else:
            yield p


def substitute(expr: str, variables: dict[str, str]) -> str:
    out = expr.replace("$__rate_interval", "10s").replace("$__interval", "2s")
    for name, value in variables.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in out, f"unsubstituted variable in {out}"
    return out


# ---------------------------------------------------------------------------
# static checks (no servers)


def test_dashboards_are_generated_from_generate_py() -> None:
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "generate.py"), "--check"], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_dashboard_structure() -> None:
    ds = dashboards()
    assert set(ds) == {"hostmon-host.json", "hostmon-security.json", "hostmon-agent.json", "hostmon-tenant.json"}
    uids = [d["uid"] for d in ds.values()]
    assert len(set(uids)) == len(uids)
    for name, d in ds.items():
        var_names = [v["name"] for v in d["templating"]["list"]]
        assert "datasource" in var_names and "tenant_id" in var_names, name
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        for p in panels(d):
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"], p["title"]
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
            for t in p["targets"]:
                # every query is scoped to the selected tenant(s)
                assert "$tenant_id" in t["expr"] or 'job="hostmon"' in t["expr"], (p["title"], t["expr"])


# ---------------------------------------------------------------------------
# live: Prometheus scraping the agent


def auth_lines(n: int, source: str, start_pid: int) -> str:
    ts = time.strftime("%b %e %H:%M:%S", time.localtime())
    return "".join(
        f"{ts} testhost sshd[{start_pid + i}]: Failed password for invalid user admin{i % 3} from {source} port {40000 + i} ssh2\n"
        for i in range(n)
    )


class Stack:
    def __init__(self, prom_url: str, agent_url: str, auth_log: Path) -> None:
        self.prom_url = prom_url
        self.agent_url = agent_url
        self.auth_log = auth_log

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = get(url)
        doc = json.loads(body) if body else {"status": "error", "error": f"HTTP {status}"}
        return doc


def _wait(cond: Callable[[], bool], what: str, timeout: float, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{what}: {p.args[0]} exited {p.returncode}: {(p.stderr.read() if p.stderr else '')[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, require_tool: RequireTool) -> Iterator[Stack]:
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("grafana")
    auth_log = tmp / "auth.log"
    # 12 failures from one address: over the default brute-force threshold (10)
    auth_log.write_text(auth_lines(12, "203.0.113.7", 1000) + auth_lines(1, "198.51.100.4", 2000))
    cfg = tmp / "hostmon.toml"
    cfg.write_text(
        "[collectors.auth]\n"
        f'files = ["{auth_log}"]\n'
        "journal = false\n"
        'btmp = ""\n'
        "read_from_start = true\n"
        "[collectors.compliance]\n"
        "enabled = true\n"
        # the two tree walks cost seconds at start; the rest of the default policy runs
        'skip_checks = ["world_writable_system_files", "unexpected_suid"]\n'
    )
    agent_port, prom_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOSTMON_TENANT_ID": TENANT,
        "HOSTMON_STATE_DIR": str(tmp / "state"),
        "HOSTMON_RUNTIME__INTERVAL": "1",
        "HOSTMON_SHIPPING__BATCH_MAX_AGE": "1",
    }
    env.pop("NOTIFY_SOCKET", None)
    agent = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hostmond.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--config", str(cfg), "--listen", f"127.0.0.1:{agent_port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "hostmon", "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}]}
                ],
            }
        )
    )
    prom = subprocess.Popen(
        [prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    procs = [agent, prom]
    st = Stack(f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{agent_port}", auth_log)
    try:
        _wait(lambda: get(st.agent_url + "/readyz")[0] == 200, "the agent's first collection", 60, procs)
        _wait(lambda: get(st.prom_url + "/-/ready")[0] == 200, "Prometheus to start", 60, procs)
        # more failures while it runs, so failure rates are non-zero
        with auth_log.open("a") as f:
            f.write(auth_lines(5, "192.0.2.9", 3000))

        def enough() -> bool:
            r = st.query('count_over_time(hostmon_ready{job="hostmon"}[1m]) >= 6')
            s = st.query("sum(hostmon_ship_sent_batches_total) > 0")
            a = st.query("hostmon_auth_failures_total > 13")
            return all(x.get("status") == "success" and x["data"]["result"] for x in (r, s, a))

        _wait(enough, "6 scrapes, a shipped batch and the appended failures", 60, procs)
        yield st
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()


@pytest.mark.slow
def test_template_variable_queries_return_the_agent(stack: Stack) -> None:
    status, body = get(
        stack.prom_url + "/api/v1/label/tenant_id/values?" + urllib.parse.urlencode({"match[]": "hostmon_build_info"})
    )
    assert status == 200 and TENANT in json.loads(body)["data"]
    status, body = get(
        stack.prom_url
        + "/api/v1/label/instance/values?"
        + urllib.parse.urlencode({"match[]": f'hostmon_build_info{{tenant_id=~"{TENANT}"}}'})
    )
    assert status == 200 and json.loads(body)["data"] == [stack.agent_url.split("//")[1].split("/")[0]]
    status, body = get(stack.prom_url + "/api/v1/label/host/values?" + urllib.parse.urlencode({"match[]": "hostmon_build_info"}))
    assert status == 200 and json.loads(body)["data"] == [], "the scrape carries instance, not the agent's host tag"


@pytest.mark.slow
def test_every_panel_query_runs_and_core_panels_have_data(stack: Stack) -> None:
    variables = {"tenant_id": TENANT, "instance": ".*", "datasource": "prometheus"}
    errors: list[str] = []
    empty: list[str] = []
    seen: set[tuple[str, str]] = set()
    for d in dashboards().values():
        for p in panels(d):
            key = (d["title"], p["title"])
            seen.add(key)
            got_data = False
            for t in p["targets"]:
                expr = substitute(t["expr"], variables)
                res = stack.query(expr)
                if res.get("status") != "success":
                    errors.append(f"{key}: {expr}: {res.get('error')}")
                elif res["data"]["result"]:
                    got_data = True
            if not got_data and key not in MAY_BE_EMPTY:
                empty.append(f"{key}")
    assert not errors, "\n".join(errors)
    assert not empty, "core panels without data:\n" + "\n".join(empty)
    assert set(MAY_BE_EMPTY) <= seen, "MAY_BE_EMPTY names a panel that does not exist"


@pytest.mark.slow
def test_security_panels_show_the_attack(stack: Stack) -> None:
    res = stack.query(f'sum(hostmon_auth_bruteforce_sources{{tenant_id="{TENANT}"}})')
    assert float(res["data"]["result"][0]["value"][1]) == 1.0
    res = stack.query(f'topk(10, hostmon_auth_window_failures_by_source{{tenant_id="{TENANT}"}})')
    by_source = {r["metric"]["source"]: float(r["value"][1]) for r in res["data"]["result"]}
    assert by_source["203.0.113.7"] == 12 and by_source["192.0.2.9"] == 5


@pytest.mark.slow
def test_alert_rules_evaluate_cleanly_on_real_agent_data(stack: Stack) -> None:
    status, body = get(stack.prom_url + "/api/v1/rules")
    assert status == 200
    rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
    assert len(rules) == len(
        [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    )
    # give every rule a few evaluations
    deadline = time.monotonic() + 10
    while any(r.get("health") == "unknown" for r in rules) and time.monotonic() < deadline:
        time.sleep(0.5)
        rules = [r for g in json.loads(get(stack.prom_url + "/api/v1/rules")[1])["data"]["groups"] for r in g["rules"]]
    bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not bad, bad
    # the brute-force rule sees the real agent's gauge (pending: its `for` is 1m)
    alerts = {a["labels"]["alertname"]: a for a in json.loads(get(stack.prom_url + "/api/v1/alerts")[1])["data"]["alerts"]}
    assert "HostmonBruteForceLogin" in alerts
    assert alerts["HostmonBruteForceLogin"]["state"] in ("pending", "firing")
    assert alerts["HostmonBruteForceLogin"]["labels"]["tenant_id"] == TENANT
    # nothing else on a healthy agent is pending
    assert set(alerts) == {"HostmonBruteForceLogin"}, alerts


def known_metric_names() -> tuple[set[str], list[str]]:
    """Every metric hostmon declares (self-metrics of agent, shipper, web layer and ingest; built-in and
    installed collectors), and plugin load errors."""
    from hostmond.agent.registry import discover
    from hostmond.docs import all_specs

    classes, errors = discover()
    names = {s.name for _, s in all_specs()} | {"up"}
    for cls in classes.values():
        names |= {m.name for m in cls.metrics}
    return names, [str(e) for e in errors]


def test_rules_and_dashboards_use_only_declared_metric_names() -> None:
    known, load_errors = known_metric_names()
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for d in dashboards().values():
        exprs += [t["expr"] for p in panels(d) for t in p["targets"]]
    funcs = {
        "sum", "avg", "min", "max", "count", "topk", "rate", "increase", "deriv", "predict_linear", "abs",
        "changes", "timestamp", "absent", "by", "without", "on", "unless", "and", "or", "max_over_time", "bool",
    }
    used: set[str] = set()
    for e in exprs:
        e = re.sub(r"\{[^}]*\}", "", e)  # drop label matchers
        e = re.sub(r"\[[^\]]*\]", "", e)  # and ranges
        e = re.sub(r"\b(by|without|on) *\([a-z_, ]*\)", "", e)  # and by/without/on label lists
        used |= {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e) if w not in funcs and not w.isdigit()}
    unknown = sorted(used - known)
    assert not unknown, f"not declared by any hostmon MetricSpec: {unknown} (collector load errors: {load_errors})"
