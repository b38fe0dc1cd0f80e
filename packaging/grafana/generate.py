"""Generate hostmon's Grafana dashboards (the committed *.json files).

    python packaging/grafana/generate.py            # rewrite the JSON files
    python packaging/grafana/generate.py --check    # exit 1 if they are stale

Each dashboard takes a Prometheus data source (``datasource`` variable) and
filters on ``tenant_id`` (a label the agent puts on every sample) and
``instance`` (Prometheus' own target label: /metrics leaves the agent's ``host``
tag out unless ``http.host_label`` is set, since it would duplicate ``instance``). Panels are declared once here so queries, units and layout stay
consistent; tests/packaging/test_grafana.py runs every query against a real
Prometheus scraping a real agent.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'tenant_id=~"$tenant_id", instance=~"$instance"'
RI = "$__rate_interval"


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (expr, legend)
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat | table | bargauge
    description: str = ""
    width: int = 12
    height: int = 8
    max: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


def variables(with_host: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "tenant_id",
            "label": "Tenant",
            "type": "query",
            "datasource": DS,
            "query": {"query": "label_values(hostmon_build_info, tenant_id)", "refId": "tenant"},
            "definition": "label_values(hostmon_build_info, tenant_id)",
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
            "hide": 0,
        },
    ]
    if with_host:
        q = 'label_values(hostmon_build_info{tenant_id=~"$tenant_id"}, instance)'
        out.append(
            {
                "name": "instance",
                "label": "Instance",
                "type": "query",
                "datasource": DS,
                "query": {"query": q, "refId": "instance"},
                "definition": q,
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "sort": 1,
                "hide": 0,
            }
        )
    return out


def render_panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.max is not None:
        defaults["max"] = p.max
        defaults["min"] = 0
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": p.options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                **({"instant": True, "format": "table"} if p.kind == "table" else {}),
            }
            for i, (expr, legend) in enumerate(p.exprs)
        ],
    }
    return panel


def dashboard(uid: str, title: str, description: str, rows: list[tuple[str, list[Panel]]], with_host: bool = True) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row_title, row_panels in rows:
        panels.append(
            {"id": pid, "type": "row", "title": row_title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}
        )
        pid += 1
        y += 1
        x = 0
        row_h = 0
        for p in row_panels:
            if x + p.width > 24:
                x = 0
                y += row_h
                row_h = 0
            panels.append(render_panel(p, pid, x, y))
            pid += 1
            x += p.width
            row_h = max(row_h, p.height)
        y += row_h
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["hostmon"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables(with_host)},
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["hostmon"], "asDropdown": True, "title": "hostmon"}],
        "panels": panels,
    }


FS = 'fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs"'


def host_overview() -> dict[str, Any]:
    return dashboard(
        "hostmon-host",
        "hostmon / Host overview",
        "CPU, memory, disks, network and processes of the selected hosts (node_exporter metric names).",
        [
            (
                "CPU and load",
                [
                    Panel(
                        "CPU busy",
                        [(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", {SEL}}}[{RI}]))', "{{instance}}")],
                        unit="percentunit",
                        max=1,
                        width=8,
                    ),
                    Panel(
                        "CPU by mode",
                        [(f'sum by (mode) (rate(node_cpu_seconds_total{{mode!="idle", {SEL}}}[{RI}]))', "{{mode}}")],
                        unit="short",
                        width=8,
                        description="CPU seconds per second spent in each non-idle mode, all selected hosts.",
                    ),
                    Panel(
                        "Load average",
                        [
                            (f"node_load1{{{SEL}}}", "{{instance}} 1m"),
                            (f"node_load5{{{SEL}}}", "{{instance}} 5m"),
                            (f"node_load15{{{SEL}}}", "{{instance}} 15m"),
                        ],
                        width=8,
                    ),
                ],
            ),
            (
                "Memory",
                [
                    Panel(
                        "Memory used",
                        [
                            (f"node_memory_MemTotal_bytes{{{SEL}}} - node_memory_MemAvailable_bytes{{{SEL}}}", "{{instance}} used"),
                            (f"node_memory_MemTotal_bytes{{{SEL}}}", "{{instance}} total"),
                        ],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Memory pressure (waiting)",
                        [(f"rate(node_pressure_memory_waiting_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")],
                        unit="percentunit",
                        width=8,
                        description="Share of time some task waited for memory (PSI 'some'); the HostMemoryPressureHigh alert fires above 20%.",
                    ),
                    Panel(
                        "Swap used",
                        [(f"node_memory_SwapTotal_bytes{{{SEL}}} - node_memory_SwapFree_bytes{{{SEL}}}", "{{instance}}")],
                        unit="bytes",
                        width=8,
                    ),
                ],
            ),
            (
                "Disks",
                [
                    Panel(
                        "Filesystem space available",
                        [(f"node_filesystem_avail_bytes{{{FS}, {SEL}}} / node_filesystem_size_bytes{{{FS}, {SEL}}}", "{{instance}} {{mountpoint}}")],
                        unit="percentunit",
                        max=1,
                        width=8,
                    ),
                    Panel(
                        "Disk throughput",
                        [
                            (f"sum by (instance, device) (rate(node_disk_read_bytes_total{{{SEL}}}[{RI}]))", "{{instance}} {{device}} read"),
                            (f"sum by (instance, device) (rate(node_disk_written_bytes_total{{{SEL}}}[{RI}]))", "{{instance}} {{device}} written"),
                        ],
                        unit="Bps",
                        width=8,
                    ),
                    Panel(
                        "Disk busy",
                        [(f"rate(node_disk_io_time_seconds_total{{{SEL}}}[{RI}])", "{{instance}} {{device}}")],
                        unit="percentunit",
                        width=8,
                    ),
                ],
            ),
            (
                "Network and processes",
                [
                    Panel(
                        "Network traffic",
                        [
                            (f'sum by (instance) (rate(node_network_receive_bytes_total{{device!="lo", {SEL}}}[{RI}]))', "{{instance}} in"),
                            (f'sum by (instance) (rate(node_network_transmit_bytes_total{{device!="lo", {SEL}}}[{RI}]))', "{{instance}} out"),
                        ],
                        unit="Bps",
                        width=8,
                    ),
                    Panel(
                        "Processes",
                        [
                            (f"node_procs_running{{{SEL}}}", "{{instance}} running"),
                            (f"node_procs_blocked{{{SEL}}}", "{{instance}} blocked"),
                        ],
                        width=8,
                    ),
                    Panel(
                        "Top process groups by CPU",
                        [(f"topk(10, rate(hostmon_process_group_cpu_seconds_total{{{SEL}}}[{RI}]))", "{{instance}} {{groupname}}")],
                        unit="short",
                        width=8,
                        description="CPU seconds per second of the ten busiest process groups (names capped by the agent; the rest fold into 'other').",
                    ),
                ],
            ),
        ],
    )


def security() -> dict[str, Any]:
    return dashboard(
        "hostmon-security",
        "hostmon / Security",
        "Failed logins and brute-force sources seen by the auth collector (auth.log, the journal, btmp); compliance checks of the hosts.",
        [
            (
                "Attacks now",
                [
                    Panel(
                        "Brute-force sources",
                        [(f"sum by (instance) (hostmon_auth_bruteforce_sources{{{SEL}}})", "{{instance}}")],
                        kind="stat",
                        width=6,
                        description="Client addresses at or over the brute-force threshold; the HostmonBruteForceLogin alert (P1) fires on any.",
                    ),
                    Panel(
                        "Failing sources",
                        [(f"sum by (instance) (hostmon_auth_failing_sources{{{SEL}}})", "{{instance}}")],
                        kind="stat",
                        width=6,
                        description="Distinct client addresses with at least one failure in the sliding window.",
                    ),
                    Panel(
                        "Auth sources readable",
                        [(f"hostmon_auth_source_up{{{SEL}}}", "{{instance}} {{source}}")],
                        kind="stat",
                        width=12,
                        description="1 when the agent could read the log source (needs the adm, systemd-journal and utmp groups).",
                    ),
                ],
            ),
            (
                "Failed logins",
                [
                    Panel(
                        "Failed logins by service",
                        [(f"sum by (service) (rate(hostmon_auth_failures_total{{{SEL}}}[{RI}]))", "{{service}}")],
                        unit="short",
                        width=12,
                        description="Failures per second, by service (sshd, sudo, login, ...).",
                    ),
                    Panel(
                        "Failed logins by reason",
                        [(f"sum by (reason) (rate(hostmon_auth_failures_total{{{SEL}}}[{RI}]))", "{{reason}}")],
                        unit="short",
                        width=12,
                    ),
                    Panel(
                        "Top sources in the window",
                        [(f"topk(10, hostmon_auth_window_failures_by_source{{{SEL}}})", "{{instance}} {{source}}")],
                        kind="table",
                        width=12,
                        description="Failures per client address in the sliding window (top K per host; the rest summed as 'other').",
                    ),
                    Panel(
                        "Top users in the window",
                        [(f"topk(10, hostmon_auth_window_failures_by_user{{{SEL}}})", "{{instance}} {{user}}")],
                        kind="table",
                        width=12,
                    ),
                    Panel(
                        "Brute-force detections",
                        [(f"sum by (instance) (increase(hostmon_auth_bruteforce_detections_total{{{SEL}}}[1h]))", "{{instance}}")],
                        width=24,
                        description="Sources newly crossing the threshold, per hour.",
                    ),
                ],
            ),
            (
                "Compliance",
                [
                    Panel(
                        "Compliance score",
                        [(f"min by (host, policy) (hostmon_compliance_score{{{SEL}}})", "{{host}} {{policy}}")],
                        unit="percentunit",
                        kind="stat",
                        width=8,
                        max=1,
                        description="Share of each policy's decided checks that pass (the compliance collector, hourly).",
                    ),
                    Panel(
                        "Checks by result",
                        [(f"sum by (result) (hostmon_compliance_checks{{{SEL}}})", "{{result}}")],
                        kind="bargauge",
                        width=8,
                        description="pass, fail, not_applicable (absent from this host) and error (could not be decided: see the agent's compliance events).",
                    ),
                    Panel(
                        "Failing high-severity checks",
                        [(f'sum by (host) (hostmon_compliance_check{{severity=~"high|critical", {SEL}}} == bool 0)', "{{host}}")],
                        kind="stat",
                        width=8,
                        description="High and critical checks failing now; HostmonComplianceCheckFailing (P2) fires when one that passed starts failing.",
                    ),
                    Panel(
                        "Failing checks",
                        [(f"hostmon_compliance_check{{{SEL}}} == 0", "{{host}} {{policy}} {{check}}")],
                        kind="table",
                        width=24,
                        description="Every failing check with its severity; the compliance event of each carries the evidence and the remediation.",
                    ),
                ],
            ),
        ],
    )


def agent_health() -> dict[str, Any]:
    return dashboard(
        "hostmon-agent",
        "hostmon / Agent health",
        "The agents themselves: scrape status, collectors, the shipping buffer and spool, sends to the ingest.",
        [
            (
                "Agents",
                [
                    Panel("Agents up", [('sum(up{job="hostmon"})', "up")], kind="stat", width=4),
                    Panel("Agents ready", [(f"sum(hostmon_ready{{{SEL}}})", "ready")], kind="stat", width=4),
                    Panel(
                        "Agent versions",
                        [(f"count by (version, python) (hostmon_build_info{{{SEL}}})", "{{version}} / {{python}}")],
                        kind="table",
                        width=8,
                    ),
                    Panel("Agent restarts (1h)", [(f"changes(hostmon_start_time_seconds{{{SEL}}}[1h])", "{{instance}}")], kind="stat", width=8),
                    Panel("Agent memory (RSS)", [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")], unit="bytes", width=12),
                    Panel("Agent CPU", [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "{{instance}}")], unit="short", width=12),
                ],
            ),
            (
                "Collectors",
                [
                    Panel(
                        "Collector success",
                        [(f"min by (collector) (hostmon_collector_success{{{SEL}}})", "{{collector}}")],
                        kind="stat",
                        width=12,
                        description="0 when the collector's last run failed on any selected host.",
                    ),
                    Panel(
                        "Collector duration",
                        [(f"max by (collector) (hostmon_collector_duration_seconds{{{SEL}}})", "{{collector}}")],
                        unit="s",
                        width=12,
                    ),
                    Panel(
                        "Collector errors, timeouts and overruns",
                        [
                            (f"sum by (collector) (rate(hostmon_collector_errors_total{{{SEL}}}[{RI}]))", "{{collector}} errors"),
                            (f"sum by (collector) (rate(hostmon_collector_timeouts_total{{{SEL}}}[{RI}]))", "{{collector}} timeouts"),
                            (f"sum by (collector) (rate(hostmon_collector_overruns_total{{{SEL}}}[{RI}]))", "{{collector}} overruns"),
                        ],
                        width=12,
                    ),
                    Panel(
                        "Partial errors by reason",
                        [(f"sum by (collector, reason) (rate(hostmon_collector_partial_errors_total{{{SEL}}}[{RI}]))", "{{collector}} {{reason}}")],
                        width=12,
                    ),
                ],
            ),
            (
                "Shipping",
                [
                    Panel(
                        "Spool fill",
                        [(f"hostmon_spool_bytes{{{SEL}}} / hostmon_spool_limit_bytes{{{SEL}}}", "{{instance}}")],
                        unit="percentunit",
                        max=1,
                        width=8,
                        description="Sealed batches waiting to be sent, as a share of the spool limit; HostmonSpoolFillingUp (P1) fires above 80% and growing.",
                    ),
                    Panel(
                        "Buffer fill",
                        [(f"hostmon_shipper_buffer_records{{{SEL}}} / hostmon_shipper_buffer_limit_records{{{SEL}}}", "{{instance}}")],
                        unit="percentunit",
                        max=1,
                        width=8,
                    ),
                    Panel(
                        "Batches sent",
                        [(f"sum by (instance) (rate(hostmon_ship_sent_batches_total{{{SEL}}}[{RI}]))", "{{instance}}")],
                        width=8,
                    ),
                    Panel(
                        "Send failures (retried)",
                        [(f"sum by (reason) (rate(hostmon_ship_failed_total{{{SEL}}}[{RI}]))", "{{reason}}")],
                        width=12,
                    ),
                    Panel(
                        "Data lost",
                        [
                            (f"sum by (instance) (increase(hostmon_spool_dropped_batches_total{{{SEL}}}[1h]))", "{{instance}} spool dropped"),
                            (f"sum by (instance) (increase(hostmon_ship_rejected_total{{{SEL}}}[1h]))", "{{instance}} rejected"),
                            (f"sum by (instance) (increase(hostmon_shipper_buffer_dropped_total{{{SEL}}}[1h]))", "{{instance}} buffer dropped"),
                        ],
                        width=12,
                        description="Batches or records lost per hour; HostmonShippingDroppedBatches (P2) fires on any.",
                    ),
                ],
            ),
        ],
    )


def tenants() -> dict[str, Any]:
    T = 'tenant_id=~"$tenant_id"'
    return dashboard(
        "hostmon-tenant",
        "hostmon / Tenants",
        "Per-tenant view: hosts, load, security and data flow for the selected tenants.",
        [
            (
                "Tenants",
                [
                    Panel("Hosts per tenant", [(f"count by (tenant_id) (hostmon_build_info{{{T}}})", "{{tenant_id}}")], kind="bargauge", width=8),
                    Panel(
                        "CPU busy by tenant",
                        [(f'1 - avg by (tenant_id) (rate(node_cpu_seconds_total{{mode="idle", {T}}}[{RI}]))', "{{tenant_id}}")],
                        unit="percentunit",
                        max=1,
                        width=8,
                    ),
                    Panel(
                        "Memory used by tenant",
                        [(f"sum by (tenant_id) (node_memory_MemTotal_bytes{{{T}}} - node_memory_MemAvailable_bytes{{{T}}})", "{{tenant_id}}")],
                        unit="bytes",
                        width=8,
                    ),
                    Panel(
                        "Process groups' CPU by tenant",
                        [(f"sum by (tenant_id) (rate(hostmon_process_group_cpu_seconds_total{{{T}}}[{RI}]))", "{{tenant_id}}")],
                        width=12,
                        description="Includes process groups assigned to other tenants by [[tenant_rules]] on shared hosts.",
                    ),
                    Panel(
                        "Failed logins by tenant",
                        [(f"sum by (tenant_id) (rate(hostmon_auth_failures_total{{{T}}}[{RI}]))", "{{tenant_id}}")],
                        width=12,
                    ),
                    Panel(
                        "Brute-force sources by tenant",
                        [(f"sum by (tenant_id) (hostmon_auth_bruteforce_sources{{{T}}})", "{{tenant_id}}")],
                        kind="stat",
                        width=12,
                    ),
                    Panel(
                        "Spool bytes by tenant",
                        [(f"sum by (tenant_id) (hostmon_spool_bytes{{{T}}})", "{{tenant_id}}")],
                        unit="bytes",
                        width=12,
                    ),
                ],
            ),
        ],
        with_host=False,
    )


DASHBOARDS = {
    "hostmon-host.json": host_overview,
    "hostmon-security.json": security,
    "hostmon-agent.json": agent_health,
    "hostmon-tenant.json": tenants,
}


def render(fn: Any) -> str:
    return json.dumps(fn(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, fn in DASHBOARDS.items():
        text = render(fn)
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run python packaging/grafana/generate.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
