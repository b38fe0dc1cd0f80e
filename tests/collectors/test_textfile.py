"""textfile: *.prom files as node_exporter reads them; bad or conflicting files skipped, counted, never breaking the scrape."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import free_port, hostmon_process, http_get, require_tool, wait_until
from prometheus_client.parser import text_string_to_metric_families

from hostmond.collectors import _promtext
from hostmond.collectors.textfile import DEFAULT_DIRECTORY, TextfileCollector

SCRIPTS = Path("/usr/share/prometheus-node-exporter-collectors")
DECLARED = frozenset({"node_load1", "node_memory_MemTotal_bytes", "node_cpu_seconds_total"})

GOOD = """# HELP job_last_success_timestamp_seconds Last time the backup job succeeded.
# TYPE job_last_success_timestamp_seconds gauge
job_last_success_timestamp_seconds{job="backup"} 1.7e9
# TYPE job_runs_total counter
job_runs_total{job="backup",result="ok"} 12
job_runs_total{job="backup",result="failed"} 1
# TYPE job_duration_seconds histogram
job_duration_seconds_bucket{le="1"} 3
job_duration_seconds_bucket{le="+Inf"} 5
job_duration_seconds_sum 9.5
job_duration_seconds_count 5
# TYPE job_latency summary
job_latency{quantile="0.5"} 0.2
job_latency_sum 1
job_latency_count 5
loose_value{a="1"} 3
loose_value{b="2"} 4
"""


def run(hostmon_collector, d: Path, **cfg):
    c = hostmon_collector.make(TextfileCollector, {"directory": str(d), **cfg}, declared_metrics=DECLARED)
    return c, hostmon_collector.run_instance(c)


def value(out, name: str, **labels: str) -> float:
    (s,) = out.find(name, labels)
    return s.value


def test_files_are_served_with_their_own_help_and_type_and_node_exporters_meta_metrics(hostmon_collector, tmp_path: Path) -> None:
    (tmp_path / "jobs.prom").write_text(GOOD)
    (tmp_path / "ignored.txt").write_text("not_read 1\n")
    (tmp_path / "empty.prom").write_text("")
    os.utime(tmp_path / "jobs.prom", (1_700_000_000.75, 1_700_000_000.75))
    _, out = run(hostmon_collector, tmp_path)
    fams = out.families
    assert fams["job_last_success_timestamp_seconds"].help == "Last time the backup job succeeded."
    assert fams["job_runs_total"].type == "counter" and fams["job_duration_seconds"].type == "histogram"
    assert fams["job_latency"].type == "summary" and fams["loose_value"].type == "untyped"
    assert fams["loose_value"].help == f"Metric read from {tmp_path / 'jobs.prom'}"
    assert value(out, "job_runs_total", result="failed") == 1
    assert value(out, "job_duration_seconds_bucket", le="+Inf") == 5
    assert value(out, "job_latency", quantile="0.5") == 0.2
    # like node_exporter, every series of a family has the family's label names ("" where missing)
    assert {tuple(sorted(s.labels.items())) for s in out.find("loose_value")} == {(("a", "1"), ("b", "")), (("a", ""), ("b", "2"))}
    # shipped batches carry counter/gauge: buckets, sums and counts are counters
    assert {s.name: s.type for s in out.samples if s.name.startswith("job_duration")} == dict.fromkeys(
        ["job_duration_seconds_bucket", "job_duration_seconds_sum", "job_duration_seconds_count"], "counter"
    )
    assert value(out, "node_textfile_mtime_seconds", file=str(tmp_path / "jobs.prom")) == 1_700_000_000.0
    assert value(out, "node_textfile_mtime_seconds", file=str(tmp_path / "empty.prom")) > 0
    assert not out.find("node_textfile_mtime_seconds", {"file": str(tmp_path / "ignored.txt")})
    assert value(out, "node_textfile_scrape_error") == 0
    assert value(out, "hostmon_textfile_files") == 2 and value(out, "hostmon_textfile_series") == 12
    out.assert_all_documented()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('broken{ 1\n', "parse_error"),
        ("# TYPE job_runs_total gauge\njob_runs_total 1\n", "type_clash"),
        ('# TYPE job_runs_total counter\njob_runs_total{job="backup",result="ok"} 99\n', "duplicate_series"),
        ('job_runs_total{job="backup",result="ok"} 99\n', "type_clash"),  # untyped here, a counter before
        ("node_load1 42\n", "builtin_clash"),
        ("# TYPE node_load1 summary\nnode_load1{quantile=\"0.5\"} 1\n", "builtin_clash"),
        ("# TYPE job_duration_seconds_count gauge\njob_duration_seconds_count 1\n", "type_clash"),  # a histogram's sample
        ("stamped 1 1700000000000\n", "timestamps"),
        (b"\xff\xfe bad bytes 1\n", "parse_error"),
    ],
)
def test_a_bad_or_conflicting_file_is_skipped_whole_and_counted_and_the_rest_is_served(
    hostmon_collector, tmp_path: Path, bad: str | bytes, reason: str
) -> None:
    (tmp_path / "a-jobs.prom").write_text(GOOD)
    p = tmp_path / "b-bad.prom"
    if isinstance(bad, bytes):
        p.write_bytes(bad + b"fine_in_bad_file 1\n")
    else:
        p.write_text(bad + "fine_in_bad_file 1\n")
    c, out = run(hostmon_collector, tmp_path)
    assert value(out, "node_textfile_scrape_error") == 1
    assert value(out, "hostmon_textfile_skipped_files_total", reason=reason) == 1, {s.labels["reason"]: s.value for s in out.find("hostmon_textfile_skipped_files_total")}
    assert not out.find("fine_in_bad_file"), "the whole file is skipped, not the bad line"
    assert not out.find("node_textfile_mtime_seconds", {"file": str(p)})
    assert value(out, "job_runs_total", result="ok") == 12, "the good file is still served"
    # fixed: read again, error gone, the counter keeps its count
    p.write_text("fine_in_bad_file 1\n")
    out2 = hostmon_collector.run_instance(c)
    assert value(out2, "node_textfile_scrape_error") == 0 and value(out2, "fine_in_bad_file") == 1
    assert value(out2, "hostmon_textfile_skipped_files_total", reason=reason) == 1


def test_bounds_on_files_bytes_and_series(hostmon_collector, tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"f{i}.prom").write_text("".join(f'many{{i="{i}",j="{j}"}} {j}\n' for j in range(10)))
    (tmp_path / "g-big.prom").write_text("big 1\n" + "# padding\n" * 200)
    _, out = run(hostmon_collector, tmp_path, max_files=5, max_series=35, max_file_bytes=1000)
    skipped = {s.labels["reason"]: s.value for s in out.find("hostmon_textfile_skipped_files_total")}
    assert skipped["series_limit"] == 2 and skipped["too_many_files"] == 1 and skipped["too_large"] == 0
    assert value(out, "hostmon_textfile_series") == 30 and value(out, "hostmon_textfile_series_limit") == 35
    assert value(out, "hostmon_textfile_files") == 3 and value(out, "hostmon_textfile_files_limit") == 5
    assert len(out.find("many")) == 30, "a file past the limit is skipped whole"
    _, out = run(hostmon_collector, tmp_path, max_files=10, max_file_bytes=1000, max_series=1000)
    assert value(out, "hostmon_textfile_skipped_files_total", reason="too_large") == 1 and not out.find("big")


def test_labels_the_agent_sets_are_renamed_so_a_file_cannot_claim_a_tenant(hostmon_collector, tmp_path: Path) -> None:
    (tmp_path / "t.prom").write_text('claim{tenant_id="other",host="h9",x="1"} 1\nclaim{tenant_id="other",host="h8",x="1"} 2\n')
    _, out = run(hostmon_collector, tmp_path)
    labels = sorted(tuple(sorted(s.labels.items())) for s in out.find("claim"))
    assert labels == [
        (("exported_host", "h8"), ("exported_tenant_id", "other"), ("x", "1")),
        (("exported_host", "h9"), ("exported_tenant_id", "other"), ("x", "1")),
    ]


def test_missing_directory(hostmon_collector, tmp_path: Path) -> None:
    from hostmond.api import CollectorUnavailable

    c = hostmon_collector.make(TextfileCollector, {"directory": str(tmp_path / "nope")})
    out = hostmon_collector.run_instance(c)
    assert value(out, "node_textfile_scrape_error") == 1, "a configured directory that is missing is an error"
    assert out.partial_errors == {"directory_unreadable": 1}
    if not os.path.isdir(DEFAULT_DIRECTORY):
        with pytest.raises(CollectorUnavailable):
            list(hostmon_collector.make(TextfileCollector, {}).collect())


# -- the parser against promtool ------------------------------------------------------------------

PARSER_CASES = [
    GOOD,
    "a 1\n",
    "a{b=\"c\",} 1\n",
    "#TYPE a gauge\na -Inf\n",
    "# HELP a with \\\\ and \\n escapes\na NaN 12\n",
    "# some comment\n\n   a{ b = \"x\" } +Inf\n",
    'a{b="\\"q\\" \\\\ \\n"} 1\n',
    "a 0x1p-2\n",
    "a 1e-3\n",
    "a{b=\"1\",b=\"2\"} 1\n",
    "a 1_0\n",
    "a{__name__=\"x\"} 1\n",
    "a{b=\"\\q\"} 1\n",
    "a 1 2 3\n",
    "a 1 x\n",
    "# TYPE a counter\na 1\n# TYPE a gauge\n",
    "# HELP a x\n# HELP a y\n",
    "# TYPE a fancy\n",
    "1a 1\n",
    "a{b=1} 1\n",
    "a{b=\"1\"\n",
    "a\n",
    "a{} 1\n",
    "# TYPE s summary\ns 1\n",
    "# TYPE s summary\ns{quantile=\"x\"} 1\n",
    "a-1 1\n",
    "a 1\r\n",
    "a inf\n",
    "a 1 12\r\n",
    "a 1 +12\n",
    "a 1 1.5\n",
    "# TYPE a gauge\r\na 1\n",
    "# TYPE h histogram\nh_bucket 1\n",
    "# TYPE h histogram\nh_bucket{le=\"x\"} 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
    "a{b=\"x\"}1\n",
    "a{1b=\"x\"} 1\n",
]


@pytest.mark.parametrize("text", PARSER_CASES)
def test_the_parser_rejects_what_promtool_rejects(text: str, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    promtool_rejects = r.returncode == 1 and "parsing error" in (r.stdout + r.stderr)
    try:
        _promtext.parse(text)
        ours = None
    except _promtext.ParseError as e:
        ours = e
    assert (ours is not None) == promtool_rejects, f"promtool: rc={r.returncode} {r.stdout}{r.stderr!r}; ours: {ours}"


# -- real scripts, real node_exporter ------------------------------------------------------------


def _scripts_output(d: Path) -> list[str]:
    """Run the real prometheus-node-exporter-collectors scripts that work on any Debian host into ``d``."""
    if not SCRIPTS.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus-node-exporter-collectors is not installed (.ci/run installs it)")
        pytest.skip("prometheus-node-exporter-collectors is not installed")
    made = []
    runs = {
        "apt.prom": ["/usr/bin/python3", str(SCRIPTS / "apt_info.py")],
        "fstab.prom": ["bash", str(SCRIPTS / "fstab-check.sh")],
        "dirsize.prom": ["bash", str(SCRIPTS / "directory-size.sh"), "/usr/share/doc", "/etc"],
        "inotify.prom": [str(SCRIPTS / "inotify-instances")],
    }
    for name, argv in runs.items():
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{argv}: {r.stderr}"
        (d / name).write_text(r.stdout)  # node_exporter's advice: write elsewhere, then rename; one writer here
        made.append(name)
    (d / "cron.prom").write_text(GOOD)
    return made


def _families(text: str, names: set[str] | None) -> dict[str, tuple[str, str, frozenset]]:
    out = {}
    for f in text_string_to_metric_families(text):
        if names is not None and f.name not in names:
            continue
        series = frozenset(
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "tenant_id")), s.value) for s in f.samples
        )
        out[f.name] = (f.type, f.documentation, series)
    return out


@pytest.mark.slow
def test_real_collector_scripts_read_by_node_exporter_and_hostmon_give_identical_families(tmp_path: Path) -> None:
    ne = require_tool("prometheus-node-exporter")
    d = tmp_path / "textfile"
    d.mkdir()
    made = _scripts_output(d)
    assert "apt_upgrades_pending" in (d / "apt.prom").read_text(), "apt_info.py wrote real apt figures"
    ne_port, hm_port = free_port(), free_port()
    ne_proc = subprocess.Popen(
        [ne, "--collector.disable-defaults", "--collector.textfile", f"--collector.textfile.directory={d}", f"--web.listen-address=127.0.0.1:{ne_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state"), "HOSTMON_SHIPPING__ENABLED": "false", "HOSTMON_CONFIG": ""}
    try:
        args = ["run", "--collector.disable-defaults", "--collector.textfile", f"--collector.textfile.directory={d}", f"--web.listen-address=127.0.0.1:{hm_port}"]
        with hostmon_process(args, env=env):
            wait_until(lambda: http_get(f"http://127.0.0.1:{hm_port}/readyz")[0] == 200, timeout=60, what="hostmon ready")
            wait_until(lambda: http_get(f"http://127.0.0.1:{ne_port}/metrics")[0] == 200, timeout=30, what="node_exporter up")
            ne_text = http_get(f"http://127.0.0.1:{ne_port}/metrics")[2].decode()
            # renders are coalesced: wait for the body that follows the first collection
            hm_text = wait_until(
                lambda: "node_textfile_scrape_error" in (t := http_get(f"http://127.0.0.1:{hm_port}/metrics")[2].decode()) and t,
                timeout=30,
                what="textfile families on hostmon",
            )
    finally:
        ne_proc.terminate()
        ne_proc.wait(timeout=10)
    theirs = _families(ne_text, None)
    names = {n for n in theirs if not n.startswith(("go_", "process_", "promhttp_", "node_exporter_", "node_scrape_"))}
    ours = _families(hm_text, names)
    assert len(names) >= 10, sorted(names)
    assert {"node_textfile_mtime_seconds", "node_textfile_scrape_error", "apt_upgrades_pending", "job_duration_seconds"} <= names
    for n in sorted(names):
        assert ours.get(n) == theirs[n], f"{n}:\n  node_exporter {theirs[n]}\n  hostmon       {ours.get(n)}"
    assert len(made) == 4
    shutil.rmtree(d)
