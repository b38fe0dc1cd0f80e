"""The auth collector end to end on real files: exact counts through rotation and restart,
brute force, bounded labels, keyed user hashing, events and broken sources."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from auth_testutil import in_child_as_nobody
from hostmond.collectors.auth.btmp import pack_record
from hostmond.collectors.auth.collector import AuthCollector

from hostmond.api import Event, Sample
from hostmond.core.errors import KeyFileError
from hostmond.testing import CollectorHarness, Emitted

NOW = dt.datetime(2024, 6, 15, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def fail(t: float, src: str, user: str = "root", pid: int = 1) -> str:
    return f"{iso(t)} web1 sshd[{pid}]: Failed password for {user} from {src} port 22 ssh2\n"


def base_cfg(tmp_path: Path, **kw: object) -> dict[str, object]:
    cfg: dict[str, object] = {"files": [str(tmp_path / "auth.log")], "journal": False, "btmp": "", "read_from_start": True}
    cfg.update(kw)
    return cfg


def make(h: CollectorHarness, cfg: dict[str, object], now: float = NOW) -> AuthCollector:
    c = h.make(AuthCollector, cfg)
    assert isinstance(c, AuthCollector)
    c.now = lambda: now
    return c


def run(c: AuthCollector) -> Emitted:
    items = list(c.collect())
    return Emitted(AuthCollector, [x for x in items if isinstance(x, Sample)], [x for x in items if isinstance(x, Event)], c.take_partial_errors())


def failures(out: Emitted, service: str = "sshd", reason: str = "password") -> float:
    s = out.find("hostmon_auth_failures_total", {"service": service, "reason": reason})
    return s[0].value if s else 0


def append(p: Path, text: str) -> None:
    with open(p, "a", encoding="utf-8") as f:
        f.write(text)


def test_exact_counts_through_rotation_copytruncate_and_restart(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(fail(NOW - 100 + i, "198.51.100.1") for i in range(5)))
    c = make(hostmon_collector, base_cfg(tmp_path))
    c.start()
    assert failures(run(c)) == 5
    append(log, "".join(fail(NOW - 50 + i, "198.51.100.2") for i in range(3)))
    append(log, fail(NOW - 40, "198.51.100.2")[:30])  # a partial line: not counted yet
    assert failures(run(c)) == 8
    append(log, fail(NOW - 40, "198.51.100.2")[30:])
    os.rename(log, str(log) + ".1")  # rename-and-create rotation
    log.write_text(fail(NOW - 30, "198.51.100.3"))
    assert failures(run(c)) == 10
    c.stop()
    # restart: a new instance with the same state file; meanwhile more lines, then another rotation
    append(log, fail(NOW - 20, "198.51.100.3"))
    os.rename(log, str(log) + ".1")
    log.write_text(fail(NOW - 10, "198.51.100.4") * 2)
    c2 = make(hostmon_collector, base_cfg(tmp_path))
    c2.start()
    out = run(c2)
    # counters restart at zero in a new process; exactly the 3 lines written while down are counted
    assert failures(out) == 3
    with open(log, "r+") as f:  # copytruncate
        f.truncate(0)
    append(log, fail(NOW - 5, "198.51.100.5"))
    out = run(c2)
    assert failures(out) == 4
    out.assert_sample("hostmon_auth_rotations_total", 1, {"source": f"file:{log}", "kind": "rename"})
    out.assert_sample("hostmon_auth_rotations_total", 1, {"source": f"file:{log}", "kind": "truncate"})
    c2.stop()


def test_bruteforce_gauge_event_and_windows(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    lines = [fail(NOW - 300 + i * 10, "203.0.113.66", f"u{i}", pid=i) for i in range(12)]
    lines += [fail(NOW - 60, "203.0.113.7", "bob", pid=99)] * 3
    lines += [fail(NOW - 3600, "203.0.113.8", "old", pid=98)] * 20  # outside every window
    log.write_text("".join(lines))
    c = make(hostmon_collector, base_cfg(tmp_path, bruteforce_threshold=10, bruteforce_window_seconds=600, window_seconds=900))
    c.start()
    out = run(c)
    out.assert_sample("hostmon_auth_bruteforce_sources", 1)  # only the source over the threshold now
    # crossings are judged on the lines' own times: the hour-old burst was a brute force too,
    # reported with its time, but it is not "currently over"
    out.assert_sample("hostmon_auth_bruteforce_detections_total", 2)
    out.assert_sample("hostmon_auth_failing_sources", 2)
    ev = out.assert_event("auth_bruteforce", count=1, source="203.0.113.66")
    assert ev[0].fields["failures"] == 10 and ev[0].fields["threshold"] == 10 and ev[0].time == NOW - 300 + 90
    assert out.assert_event("auth_bruteforce", count=1, source="203.0.113.8")[0].time == NOW - 3600
    out.assert_event("auth_failure", count=35)
    e = out.assert_event("auth_failure", source="203.0.113.7")[0]
    assert e.fields == {"service": "sshd", "reason": "password", "source": "203.0.113.7", "port": 22, "user": "bob"}
    assert e.time == NOW - 60
    out.assert_sample("hostmon_auth_window_failures_by_source", 12, {"source": "203.0.113.66"})
    # more failures from the same source do not fire again while it stays over
    append(log, fail(NOW - 1, "203.0.113.66", "x", pid=5))
    out = run(c)
    out.assert_event("auth_bruteforce", count=0)
    out.assert_sample("hostmon_auth_bruteforce_detections_total", 2)
    # time passes: the window empties and the gauge falls
    c.now = lambda: NOW + 3600
    out = run(c)
    out.assert_sample("hostmon_auth_bruteforce_sources", 0)
    out.assert_sample("hostmon_auth_failing_sources", 0)
    c.stop()


def test_top_k_labels_are_capped_and_the_rest_folded(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    lines = []
    for i in range(20):
        lines += [fail(NOW - 10, f"192.0.2.{i}", f"user{i}", pid=i)] * (i + 1)
    log.write_text("".join(lines))
    c = make(hostmon_collector, base_cfg(tmp_path, top_k=3))
    c.start()
    out = run(c)
    by_src = out.find("hostmon_auth_window_failures_by_source")
    assert {s.labels["source"]: s.value for s in by_src} == {"192.0.2.19": 20, "192.0.2.18": 19, "192.0.2.17": 18, "other": sum(range(1, 18))}
    by_user = out.find("hostmon_auth_window_failures_by_user")
    assert len(by_user) == 4 and {s.labels["user"] for s in by_user} == {"user19", "user18", "user17", "other"}
    c.stop()
    # top_k is capped at 50 whatever the config says
    c = make(hostmon_collector, base_cfg(tmp_path, top_k=100000))
    assert c.top_k == 50


def test_tracked_sources_are_bounded_with_evictions_counted(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(fail(NOW - 10, f"10.0.{i // 250}.{i % 250}", pid=i) for i in range(500)))
    c = make(hostmon_collector, base_cfg(tmp_path, max_tracked=100))
    c.start()
    out = run(c)
    out.assert_sample("hostmon_auth_tracked_keys", 100, {"kind": "source"})
    out.assert_sample("hostmon_auth_tracked_keys_limit", 100, {"kind": "source"})
    out.assert_sample("hostmon_auth_tracked_keys_evicted_total", 400, {"kind": "source"})
    assert failures(out) == 500  # eviction bounds memory, never the count
    c.stop()


def test_keyed_username_hashing(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(fail(NOW - 5, "192.0.2.1", "alice") + fail(NOW - 4, "192.0.2.1", "alice", pid=2))
    c = make(hostmon_collector, base_cfg(tmp_path, hash_usernames=True))
    c.start()
    out = run(c)
    key = Path(c.ctx.state_dir or "") / "auth-user-hash.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    evs = out.assert_event("auth_failure", count=2)
    h = evs[0].fields["user_hash"]
    assert "user" not in evs[0].fields and h == evs[1].fields["user_hash"] and len(h) == 16 and h != "alice"
    assert {s.labels["user"] for s in out.find("hostmon_auth_window_failures_by_user")} == {h, "other"}
    c.stop()
    # another key gives another hash: a dictionary of plain hashes is useless
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    c2 = make(hostmon_collector, base_cfg(tmp_path, hash_usernames=True, user_hash_key_file=str(other)))
    c2.start()
    assert c2.user_label("alice") != h
    other.chmod(0o644)
    with pytest.raises(KeyFileError, match="group or others"):
        make(hostmon_collector, base_cfg(tmp_path, hash_usernames=True, user_hash_key_file=str(other))).start()


def test_missing_source_reported_once_and_others_keep_running(hostmon_collector: CollectorHarness, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "secure"
    good.write_text(fail(NOW - 5, "192.0.2.9"))
    missing = tmp_path / "nope.log"
    c = make(hostmon_collector, base_cfg(tmp_path, files=[str(missing), str(good)]))
    c.ctx.logger = c.log = logging.getLogger("hostmon.test.auth")
    c.start()
    with caplog.at_level(logging.INFO, logger="hostmon.test.auth"):
        for _ in range(3):
            out = run(c)
    out.assert_sample("hostmon_auth_source_up", 0, {"source": f"file:{missing}"})
    out.assert_sample("hostmon_auth_source_up", 1, {"source": f"file:{good}"})
    out.assert_sample("hostmon_auth_source_state", 1, {"source": f"file:{missing}", "state": "missing"})
    out.assert_sample("hostmon_auth_source_state", 0, {"source": f"file:{missing}", "state": "ok"})
    out.assert_sample("hostmon_auth_source_state", 1, {"source": f"file:{good}", "state": "ok"})
    assert failures(out) == 1
    said = [r for r in caplog.records if "not present" in r.getMessage()]
    assert len(said) == 1 and str(missing) in said[0].getMessage()
    c.stop()


def test_file_replaced_by_fifo_or_directory_does_not_block_or_crash(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(fail(NOW - 5, "192.0.2.9"))
    c = make(hostmon_collector, base_cfg(tmp_path))
    c.start()
    run(c)
    os.unlink(log)
    os.mkfifo(log)
    done: list[Emitted] = []
    th = threading.Thread(target=lambda: done.append(run(c)), daemon=True)
    th.start()
    th.join(10)
    assert done, "collect() blocked on a FIFO"
    done[0].assert_sample("hostmon_auth_source_up", 0, {"source": f"file:{log}"})
    assert done[0].partial_errors.get("source_not_regular") == 1
    os.unlink(log)
    log.mkdir()
    run(c).assert_sample("hostmon_auth_source_up", 0, {"source": f"file:{log}"})
    c.stop()


def test_hostile_file_content_end_to_end(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    t = iso(NOW - 5)
    with open(log, "wb") as f:
        f.write(f"{t} h sshd[1]: Failed password for invalid user Invalid user root from 1.2.3.4 from 5.6.7.8 port 22 ssh2\n".encode())
        f.write(f"{t} h sshd[2]: Failed password for \xff\xfe from 192.0.2.1 port 22 ssh2\n".encode("latin-1"))
        f.write(f"{t} h sshd[3]: Invalid user a\x00b from 192.0.2.2 port 1\n".encode())
        f.write(b"X" * (1 << 20) + b"\n")
        f.write(f"{t} h sshd[4]: Invalid user last from 192.0.2.3 port 1".encode())  # truncated: no newline yet
    c = make(hostmon_collector, base_cfg(tmp_path))
    c.start()
    out = run(c)
    srcs = [e.fields["source"] for e in out.events if e.kind == "auth_failure"]
    assert srcs == ["5.6.7.8", "192.0.2.1", "192.0.2.2"]
    out.assert_sample("hostmon_auth_overlong_lines_total", 1, {"source": f"file:{log}"})
    append(log, "\n")
    out = run(c)
    assert [e.fields["source"] for e in out.events if e.kind == "auth_failure"] == ["192.0.2.3"]
    c.stop()


def test_btmp_source_and_every_metric_documented(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(fail(NOW - 5, "192.0.2.9"))
    btmp = tmp_path / "btmp"
    btmp.write_bytes(pack_record("root", "192.0.2.10", "ssh:notty", NOW - 3, "192.0.2.10"))
    out = hostmon_collector.run(AuthCollector, base_cfg(tmp_path, btmp=str(btmp), top_k=2))
    out.assert_sample("hostmon_auth_failures_total", 1, {"service": "sshd", "reason": "btmp"})
    out.assert_sample("hostmon_auth_failures_total", 1, {"service": "sshd", "reason": "password"})
    out.assert_event("auth_failure", count=1, reason="btmp", source="192.0.2.10", user="root")
    for name in (
        "hostmon_auth_failing_sources", "hostmon_auth_bruteforce_sources", "hostmon_auth_bruteforce_detections_total",
        "hostmon_auth_window_failures_by_source", "hostmon_auth_window_failures_by_user", "hostmon_auth_source_up",
        "hostmon_auth_source_state",
        "hostmon_auth_lines_read_total", "hostmon_auth_overlong_lines_total", "hostmon_auth_rotations_total",
        "hostmon_auth_unparsed_lines_total", "hostmon_auth_tracked_keys", "hostmon_auth_tracked_keys_limit",
        "hostmon_auth_tracked_keys_evicted_total", "hostmon_auth_connections_evicted_total", "hostmon_auth_events_dropped_total",
    ):
        out.assert_sample(name)
    out.assert_all_documented()
    out.assert_all_covered()


def test_event_cap_drops_are_counted(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text("".join(fail(NOW - 5, "192.0.2.1", pid=i) for i in range(30)))
    c = make(hostmon_collector, base_cfg(tmp_path, max_events=10))
    c.start()
    out = run(c)
    assert len(out.events) == 10
    out.assert_sample("hostmon_auth_events_dropped_total", 21)  # 20 failures + 1 brute-force event
    assert failures(out) == 30
    c.stop()


def bsd(t: float, pid: int, msg: str) -> str:
    return f"{iso(t)} web1 sshd[{pid}]: {msg}\n"


PAM_LINE = "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=198.51.100.20  user=root"


def test_held_records_wait_for_their_outcome_across_a_backlog_and_a_restart(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    """sshd's PAM line and a valid user's publickey offers are held until the connection's outcome;
    an hour-old backlog must not release them early (that counted the attempt twice), and a restart
    must neither lose them nor count them twice."""
    log = tmp_path / "auth.log"
    old = NOW - 3600
    log.write_text(
        bsd(old, 7, PAM_LINE)  # its "Failed password" line is written later
        + bsd(old, 8, PAM_LINE.replace("198.51.100.20", "198.51.100.21"))  # never followed by anything
        + bsd(old, 9, "Failed publickey for git from 198.51.100.22 port 5 ssh2: RSA SHA256:x")
    )
    c = make(hostmon_collector, base_cfg(tmp_path))
    c.start()
    out = run(c)
    assert failures(out, reason="pam_auth") == 0 and failures(out, reason="publickey") == 0
    c.stop()
    append(log, bsd(old + 2, 7, "Failed password for root from 198.51.100.20 port 22 ssh2"))
    append(log, bsd(old + 3, 9, "Connection closed by authenticating user git 198.51.100.22 port 5 [preauth]"))
    c2 = make(hostmon_collector, base_cfg(tmp_path))
    c2.start()
    out = run(c2)
    assert failures(out, reason="password") == 1  # counted once, by sshd's own line
    assert failures(out, reason="publickey") == 1 and failures(out, reason="preauth_closed") == 1
    assert failures(out, reason="pam_auth") == 0  # pid 8 is still undecided
    c2.now = lambda: NOW + 601  # silent for longer than the grace: its PAM failure is released, once
    out = run(c2)
    assert failures(out, reason="pam_auth") == 1
    out.assert_event("auth_failure", count=1, reason="pam_auth", source="198.51.100.21")
    c2.stop()
    c3 = make(hostmon_collector, base_cfg(tmp_path), now=NOW + 700)
    c3.start()
    out = run(c3)
    assert failures(out, reason="pam_auth") == 0 and not out.events
    c3.stop()


def test_unreadable_sources_are_reported_once_in_self_metrics_and_others_keep_running(
    hostmon_collector: CollectorHarness, open_tmp: Path
) -> None:
    """/var/log/secure is root:root 0600 on RHEL: the agent's own user cannot read it."""
    logs = open_tmp / "logs"
    logs.mkdir(mode=0o755)
    secure = logs / "secure"
    secure.write_text(fail(NOW - 5, "192.0.2.1"))
    secure.chmod(0o600)
    btmp = logs / "btmp"
    btmp.write_bytes(pack_record("root", "192.0.2.2", "ssh:notty", NOW - 4, "192.0.2.2"))
    btmp.chmod(0o600)
    good = logs / "auth.log"
    good.write_text(fail(NOW - 3, "192.0.2.3") * 2)
    good.chmod(0o666)  # the child (nobody) appends to it
    state = open_tmp / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)

    def child() -> dict[str, object]:
        c = hostmon_collector.make(AuthCollector, base_cfg(open_tmp, files=[str(secure), str(good)], btmp=str(btmp)), state_dir=str(state))
        assert isinstance(c, AuthCollector)
        c.now = lambda: NOW
        said: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                said.append(f"{record.levelname} {record.getMessage()}")

        c.log = logging.getLogger("hostmon.test.auth.denied")
        c.log.addHandler(Keep())
        c.log.setLevel(logging.INFO)
        c.start()
        partial: dict[str, int] = {}
        for _ in range(3):
            out = run(c)
            for k, v in out.partial_errors.items():
                partial[k] = partial.get(k, 0) + v
        append(good, fail(NOW - 1, "192.0.2.4"))
        out = run(c)
        c.stop()
        return {
            "said": said,
            "partial": partial,
            "samples": [[s.name, s.labels, s.value] for s in out.samples],
        }

    res = in_child_as_nobody(child)
    samples = res["samples"]
    assert isinstance(samples, list)

    def value(name: str, **labels: str) -> float:
        got = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
        assert len(got) == 1, (name, labels, got)
        return float(got[0])

    for label in (f"file:{secure}", f"btmp:{btmp}"):
        assert value("hostmon_auth_source_up", source=label) == 0
        assert value("hostmon_auth_source_state", source=label, state="permission_denied") == 1
    assert value("hostmon_auth_source_state", source=f"file:{good}", state="ok") == 1
    assert value("hostmon_auth_failures_total", service="sshd", reason="password") == 3  # the readable file, all of it
    said = [m for m in res["said"] if "unreadable" in m]  # type: ignore[union-attr]
    assert len(said) == 2, res["said"]  # once per source, not once per collection
    assert any(str(secure) in m and "Permission denied" in m and m.startswith("WARNING") for m in said), said
    assert any(str(btmp) in m and "Permission denied" in m for m in said), said
    assert res["partial"] == {"source_permission_denied": 2}


def test_real_agent_cli_collects_a_real_log_with_tagged_events(tmp_path: Path) -> None:
    """`hostmon collect --once --format json --collector auth` (the agent's own runtime, config
    loader and tagging) over a copy of the real loghub OpenSSH log: failures counted, and every
    failure an event carrying time, host, tenant, service, reason, user, source and port."""
    from helpers import shared_data_file

    src = shared_data_file("auth-logs/loghub-OpenSSH_2k.log")
    log = tmp_path / "auth.log"
    text = src.read_text(encoding="utf-8", errors="replace")
    log.write_text(text + "\nDec 10 11:05:00 LabSZ sshd[999999]: error: PAM: Authentication failure for carol from scanner.example.net\n")
    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\ntenant_id = "acme"\n[tags]\nhost = "web-7"\n'
        f'[collectors.auth]\nfiles = ["{log}"]\njournal = false\nbtmp = ""\nread_from_start = true\n'
    )
    exe = shutil.which("hostmon") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "hostmond.cli"]
    r = subprocess.run([*cmd, "collect", "--once", "--format", "json", "--collector", "auth", "-c", str(cfg)],
                       capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = json.loads(r.stdout)
    counts = {s["labels"]["reason"]: s["value"] for s in out["samples"] if s["name"] == "hostmon_auth_failures_total"}
    assert counts["invalid_user"] == 113 and counts["password"] >= 383 + 135 and counts["pam_auth"] == 1
    fails = [e for e in out["events"] if e["kind"] == "auth_failure"]
    assert sum(e["fields"].get("count", 1) for e in fails) == sum(counts.values())
    for e in fails:
        assert e["labels"] == {"host": "web-7", "tenant_id": "acme"}
        assert {"service", "reason", "user", "source", "port"} <= set(e["fields"]) and e["time"] > 0
    e = next(e for e in fails if e["fields"]["reason"] == "invalid_user")
    assert e["fields"]["source"] and e["fields"]["user"] is not None
    named = [e for e in fails if e["fields"].get("source_host") == "scanner.example.net"]
    assert len(named) == 1 and named[0]["fields"]["source"] is None and named[0]["fields"]["user"] == "carol"
    assert any(e["kind"] == "auth_bruteforce" for e in out["events"])


def test_default_sources_are_auto_detected_under_the_agents_rootfs(hostmon_collector: CollectorHarness, tmp_path: Path) -> None:
    """With the default config: of /var/log/auth.log and /var/log/secure only those present are
    followed (RHEL has secure, Debian auth.log); btmp and the journal are read too. Paths are taken
    under the agent's rootfs (the host's / mounted at /host in a container), as node_exporter does."""
    from test_auth_journal import JOURNALCTL, REMOTE, make_journal, sshd

    rhel = tmp_path / "rhel"
    (rhel / "var/log").mkdir(parents=True)
    (rhel / "var/log/secure").write_text(fail(NOW - 5, "192.0.2.1"))
    (rhel / "var/log/btmp").write_bytes(pack_record("root", "192.0.2.2", "ssh:notty", NOW - 4, "192.0.2.2"))
    with_journal = bool(REMOTE and JOURNALCTL)
    if with_journal:
        make_journal(rhel / "var/log/journal/0123456789abcdef0123456789abcdef/system.journal",
                     [sshd(int((NOW - 3) * 1e6), 5, "Invalid user x from 192.0.2.3 port 7", ident="sshd-session")])
    elif os.environ.get("CI") == "true":
        pytest.fail("systemd-journal-remote and journalctl are needed (apt: systemd-journal-remote)")
    c = hostmon_collector.make(AuthCollector, {"read_from_start": True}, rootfs=str(rhel))
    assert isinstance(c, AuthCollector)
    c.now = lambda: NOW
    c.start()
    labels = [s.label for s in c.sources]
    want = [f"file:{rhel}/var/log/secure"] + (["journal"] if with_journal else []) + [f"btmp:{rhel}/var/log/btmp"]
    assert labels == want
    out = run(c)
    assert failures(out) == 1 and failures(out, reason="btmp") == 1
    if with_journal:
        assert failures(out, reason="invalid_user") == 1
    c.stop()

    debian = tmp_path / "debian"
    (debian / "var/log").mkdir(parents=True)
    (debian / "var/log/auth.log").write_text(fail(NOW - 5, "192.0.2.9"))
    c = hostmon_collector.make(AuthCollector, {"read_from_start": True, "journal": False, "btmp": ""}, rootfs=str(debian))
    assert isinstance(c, AuthCollector)
    c.now = lambda: NOW
    c.start()
    assert [s.label for s in c.sources] == [f"file:{debian}/var/log/auth.log"]
    assert failures(run(c)) == 1
    # rsyslog installed later on this host: /var/log/secure appears and is followed from its start
    (debian / "var/log/secure").write_text(fail(NOW - 2, "192.0.2.10"))
    out = run(c)
    assert [s.label for s in c.sources] == [f"file:{debian}/var/log/auth.log", f"file:{debian}/var/log/secure"]
    assert failures(out) == 2
    out.assert_sample("hostmon_auth_source_up", 1, {"source": f"file:{debian}/var/log/secure"})
    c.stop()
    # a path the operator lists is watched (and reported missing) whether or not it exists
    c = hostmon_collector.make(AuthCollector, {"files": ["/nonexistent/auth.log"], "journal": False, "btmp": ""}, rootfs=str(debian))
    assert isinstance(c, AuthCollector)
    c.start()
    assert [s.label for s in c.sources] == ["file:/nonexistent/auth.log"]
    c.stop()
