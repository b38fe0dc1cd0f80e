"""hostmon as a node_exporter drop-in: the real node_exporter and ``hostmon run`` side by side on this host.

Both start with their defaults on 127.0.0.1 and are scraped at the same moment;
every metric family node_exporter exposes (bar its Go runtime, promhttp and own
process internals) must be in hostmon's /metrics with the same type, label
names, label values and, for figures that do not move, the same value. Each
difference that remains is a row of ``docs/node-exporter-compat.md``; a
difference not listed there fails, and so does a listed one that is gone.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from pathlib import Path

import pytest
from helpers import (
    REPO,
    free_port,
    hostmon_process,
    http_get,
    node_exporter_process,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

COMPAT_DOC = REPO / "docs" / "node-exporter-compat.md"
# node_exporter's own internals, not metrics of the host.
IGNORED_PREFIXES = ("go_", "promhttp_", "process_")
# Labels the agent adds to every series (its tenant and static tags) or that issue 13 moves off /metrics.
AGENT_LABELS = frozenset({"tenant_id", "host"})
KINDS = ("missing", "type", "series", "value")

# Families whose values do not move between two scrapes a moment apart: compared exactly.
STABLE = (
    "node_memory_MemTotal_bytes",
    "node_memory_SwapTotal_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_files",
    "node_filesystem_readonly",
    "node_network_mtu_bytes",
    "node_network_iface_id",
    "node_network_flags",
    "node_network_speed_bytes",
    "node_network_protocol_type",
    "node_network_transmit_queue_length",
    "node_network_info",
    "node_network_up",
    "node_uname_info",
    "node_os_info",
    "node_os_version",
    "node_boot_time_seconds",
    "node_filefd_maximum",
    "node_entropy_pool_size_bits",
    "node_nf_conntrack_entries_limit",
    "node_selinux_enabled",
    "node_time_zone_offset_seconds",
    "node_time_clocksource_current_info",
    "node_timex_tick_seconds",
    "node_timex_status",
    "node_timex_sync_status",
)

Series = dict[frozenset[tuple[str, str]], float]


class Family:
    def __init__(self, type_: str) -> None:
        self.type = type_
        self.series: Series = {}
        self.label_names: set[tuple[str, ...]] = set()


def parse(body: bytes) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for fam in text_string_to_metric_families(body.decode()):
        f = out.setdefault(fam.name, Family(fam.type))
        for s in fam.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k not in AGENT_LABELS)
            f.series[labels] = float(s.value)
            f.label_names.add(tuple(sorted(k for k, _ in labels)))
    return out


def load_compat_doc(path: Path = COMPAT_DOC) -> dict[str, list[tuple[str, str]]]:
    """``{kind: [(family pattern, reason)]}`` from the table rows ``| `pattern` | kind | reason |``."""
    rows: dict[str, list[tuple[str, str]]] = {k: [] for k in KINDS}
    for line in path.read_text().splitlines():
        m = re.match(r"^\|\s*`([^`]+)`\s*\|\s*(\w+)\s*\|(.*)\|\s*$", line)
        if not m:
            continue
        pattern, kind, reason = m.group(1), m.group(2), m.group(3).strip()
        assert kind in KINDS, f"{path.name}: unknown kind {kind!r} for {pattern}"
        assert reason, f"{path.name}: {pattern} ({kind}) gives no reason"
        rows[kind].append((pattern, reason))
    return rows


def listed(rows: dict[str, list[tuple[str, str]]], kind: str, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p, _ in rows[kind])


ATTEMPTS = 3  # scrape pairs, 1.5 s apart: an interface or mount that comes or goes between two scrapes is not a difference


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, Family], dict[str, Family]]]:
    """(node_exporter's families, hostmon's families), scraped one right after the other, ATTEMPTS times."""
    tmp = tmp_path_factory.mktemp("compat")
    hport = free_port()
    env = {
        "HOSTMON_STATE_DIR": str(tmp / "state"),
        "HOSTMON_SHIPPING__ENABLED": "false",
        "HOSTMON_RUNTIME__INTERVAL": "1",
    }
    out = []
    with node_exporter_process(free_port()) as ne_url, hostmon_process(["run", "--listen", f"127.0.0.1:{hport}"], env=env, cwd=REPO):
        hurl = f"http://127.0.0.1:{hport}"
        wait_until(lambda: http_get(hurl + "/readyz")[0] == 200, timeout=30, what="hostmon ready")
        for _ in range(ATTEMPTS):
            time.sleep(1.5)  # a further cycle, so every collector has run on the 1 s interval
            ne = http_get(ne_url, timeout=10)[2]
            hm = http_get(hurl + "/metrics", timeout=10)[2]
            out.append((parse(ne), parse(hm)))
    return out


@pytest.fixture(scope="module")
def scrapes(pairs: list[tuple[dict[str, Family], dict[str, Family]]]) -> tuple[dict[str, Family], dict[str, Family]]:
    return pairs[-1]


def theirs(ne: dict[str, Family]) -> list[str]:
    return sorted(n for n in ne if not n.startswith(IGNORED_PREFIXES))


def test_every_node_exporter_family_is_exposed_or_listed_with_a_reason(scrapes: tuple[dict[str, Family], dict[str, Family]]) -> None:
    ne, hm = scrapes
    rows = load_compat_doc()
    missing = [n for n in theirs(ne) if n not in hm and not listed(rows, "missing", n)]
    assert not missing, f"node_exporter families hostmon lacks, not in {COMPAT_DOC.name}: {missing}"
    # The list stays honest: a family listed as missing that hostmon now exposes must leave the list.
    stale = [p for p, _ in rows["missing"] if not any(c in p for c in "*?[") and p in hm]
    assert not stale, f"{COMPAT_DOC.name} lists as missing families hostmon exposes: {stale}"


def test_types_and_label_names_match_node_exporter(scrapes: tuple[dict[str, Family], dict[str, Family]]) -> None:
    ne, hm = scrapes
    rows = load_compat_doc()
    problems = []
    for n in theirs(ne):
        if n not in hm:
            continue
        if ne[n].type != hm[n].type and not listed(rows, "type", n):
            problems.append(f"{n}: type {hm[n].type}, node_exporter {ne[n].type}")
        if ne[n].label_names != hm[n].label_names:
            problems.append(f"{n}: labels {sorted(hm[n].label_names)}, node_exporter {sorted(ne[n].label_names)}")
    assert not problems, "\n".join(problems)


def series_problems(ne: dict[str, Family], hm: dict[str, Family], rows: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    out = {}
    for n in theirs(ne):
        if n not in hm or listed(rows, "series", n):
            continue
        only_ne = set(ne[n].series) - set(hm[n].series)
        only_hm = set(hm[n].series) - set(ne[n].series)
        if only_ne or only_hm:
            out[n] = f"{n}: only node_exporter {[dict(s) for s in only_ne]}, only hostmon {[dict(s) for s in only_hm]}"
    return out


def test_label_values_match_node_exporter(pairs: list[tuple[dict[str, Family], dict[str, Family]]]) -> None:
    rows = load_compat_doc()
    # A family differs only if it differs in every scrape pair (an interface created by another process
    # between the two scrapes of one pair is no difference).
    per_attempt = [series_problems(ne, hm, rows) for ne, hm in pairs]
    persistent = set.intersection(*(set(p) for p in per_attempt))
    assert not persistent, "\n".join(per_attempt[-1][n] for n in sorted(persistent))


def value_problems(ne: dict[str, Family], hm: dict[str, Family], rows: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    out = {}
    for n in STABLE:
        if n not in ne or listed(rows, "value", n):
            continue
        assert n in hm, f"{n} missing from hostmon"
        for labels, v in ne[n].series.items():
            mine = hm[n].series.get(labels)
            if mine is None or not math.isclose(mine, v, rel_tol=1e-9, abs_tol=1e-9):
                out[f"{n}{sorted(labels)}"] = f"{n}{dict(labels)}: hostmon {mine}, node_exporter {v}"
    return out


def test_values_that_do_not_move_are_equal(pairs: list[tuple[dict[str, Family], dict[str, Family]]]) -> None:
    rows = load_compat_doc()
    per_attempt = [value_problems(ne, hm, rows) for ne, hm in pairs]
    persistent = set.intersection(*(set(p) for p in per_attempt))
    assert not persistent, "\n".join(per_attempt[-1][k] for k in sorted(persistent))
    # The clock: both read it at most a second apart (hostmon at its last 1 s cycle).
    for ne, hm in pairs:
        t_ne = next(iter(ne["node_time_seconds"].series.values()))
        t_hm = next(iter(hm["node_time_seconds"].series.values()))
        assert abs(t_ne - t_hm) < 2.5, (t_ne, t_hm)


def test_compat_doc_rows_are_well_formed() -> None:
    rows = load_compat_doc()
    assert rows["missing"], "the compat doc has no rows: the parser or the file is broken"
    for kind, entries in rows.items():
        for pattern, reason in entries:
            assert pattern.startswith("node_"), (kind, pattern)
            assert len(reason) > 10, (kind, pattern, reason)
