"""journald through a REAL journal file: built with systemd-journal-remote from journal export
format, read back with journalctl (Debian packages systemd-journal-remote and systemd).

Without the tools these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from auth_testutil import in_child_as_nobody
from hostmond.collectors.auth.journal import JournalReader, unreadable_system_journal
from hostmond.collectors.auth.parse import AuthParser

REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote") if os.access(p, os.X_OK)), None)
JOURNALCTL = shutil.which("journalctl")
BOOT = "0123456789abcdef0123456789abcdef"


def require_tools() -> None:
    missing = [n for n, p in (("systemd-journal-remote (apt: systemd-journal-remote)", REMOTE), ("journalctl (apt: systemd)", JOURNALCTL)) if not p]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing tools: {missing}")
        pytest.skip(f"missing tools: {missing}")


def export_entry(t_us: int, fields: dict[str, str | bytes]) -> bytes:
    out = [f"__REALTIME_TIMESTAMP={t_us}\n".encode(), f"__MONOTONIC_TIMESTAMP={t_us}\n".encode(), f"_BOOT_ID={BOOT}\n".encode()]
    for k, v in fields.items():
        if isinstance(v, bytes) or "\n" in v:  # export format's binary field: NAME\n<le64 size><data>\n
            b = v if isinstance(v, bytes) else v.encode()
            out.append(k.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n")
        else:
            out.append(f"{k}={v}\n".encode())
    return b"".join(out) + b"\n"


def make_journal(path: Path, entries: list[bytes]) -> None:
    assert REMOTE is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([REMOTE, f"--output={path}", "-"], input=b"".join(entries), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert path.exists()


def sshd(t: int, pid: int, msg: str | bytes, ident: str = "sshd") -> bytes:
    return export_entry(t, {"SYSLOG_IDENTIFIER": ident, "_COMM": ident, "_PID": str(pid), "_HOSTNAME": "web1", "MESSAGE": msg})


T0 = 1_700_000_000_000_000


def poll_until(jr: JournalReader, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the follower until ``n`` entries came (entries written after start arrive
    asynchronously), then once more after a pause to catch any extra one."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += jr.poll(wait=0.2)
    time.sleep(0.3)
    got += jr.poll()
    return got


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out |= {int(x) for x in f.read().split()}
        except OSError:
            pass
    return out


def proc_state(pid: int) -> str | None:
    """The process's state letter, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(")") + 2]


def test_reads_real_journal_filters_identifiers_and_parses(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(
        d / "a.journal",
        [
            sshd(T0, 10, "Failed password for root from 198.51.100.1 port 22 ssh2"),
            sshd(T0 + 1_000_000, 11, "Invalid user bob from 198.51.100.2 port 23", ident="sshd-session"),
            export_entry(T0 + 2_000_000, {"SYSLOG_IDENTIFIER": "CRON", "_PID": "3", "MESSAGE": "Failed password for x from 9.9.9.9 port 1 ssh2"}),
            sshd(T0 + 3_000_000, 12, b"Invalid user \xff\xfebin from 198.51.100.3 port 24"),  # not UTF-8: a byte array in JSON
            export_entry(T0 + 4_000_000, {"SYSLOG_IDENTIFIER": "sudo", "_PID": "5", "MESSAGE": "alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/id"}),
            # PAM of a program not in the identifier list, logged to authpriv (10): read through the facility match
            export_entry(T0 + 5_000_000, {"SYSLOG_IDENTIFIER": "vsftpd", "SYSLOG_FACILITY": "10", "_PID": "6",
                                          "MESSAGE": "pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=ftp ruser=ftp rhost=198.51.100.4  user=ftpuser"}),
            # another facility (3 daemon) of a program not listed: not read
            export_entry(T0 + 6_000_000, {"SYSLOG_IDENTIFIER": "dovecot", "SYSLOG_FACILITY": "3", "_PID": "7",
                                          "MESSAGE": "pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=x ruser=x rhost=9.9.9.9  user=x"}),
        ],
    )
    jr = JournalReader(directory=str(d), start_at_end=False)
    entries = jr.poll()
    assert jr.status == "ok", jr.error
    assert [e["SYSLOG_IDENTIFIER"] for e in entries] == ["sshd", "sshd-session", "sshd", "sudo", "vsftpd"]
    assert isinstance(entries[2]["MESSAGE"], list)
    p = AuthParser()
    recs = [r for e in entries for r in p.feed_journal(e)]
    assert [(r.service, r.reason, r.source, r.count) for r in recs] == [
        ("sshd", "password", "198.51.100.1", 1),
        ("sshd", "invalid_user", "198.51.100.2", 1),
        ("sshd", "invalid_user", "198.51.100.3", 1),
        ("sudo", "password", None, 3),
        ("pam", "pam_auth", "198.51.100.4", 1),
    ]
    assert recs[0].time == T0 / 1e6
    assert jr.poll(wait=0.5) == []  # nothing new after the cursor
    jr.close()


def test_cursor_survives_restart_without_loss_or_repeat(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0 + i * 1_000_000, 100 + i, f"Invalid user u{i} from 198.51.100.9 port {i + 1}") for i in range(3)])
    jr = JournalReader(directory=str(d), start_at_end=False)
    first = jr.poll()
    cursor = jr.cursor
    assert len(first) == 3 and cursor
    jr.close()
    # more entries arrive (a second journal file in the directory) while the agent is down
    make_journal(d / "b.journal", [sshd(T0 + (10 + i) * 1_000_000, 200 + i, f"Invalid user v{i} from 198.51.100.9 port {i + 1}") for i in range(2)])
    jr2 = JournalReader(directory=str(d), start_at_end=True)
    jr2.load_state(cursor)
    second = jr2.poll()
    msgs = [e["MESSAGE"] for e in first + second]
    assert msgs == [f"Invalid user u{i} from 198.51.100.9 port {i + 1}" for i in range(3)] + [
        f"Invalid user v{i} from 198.51.100.9 port {i + 1}" for i in range(2)
    ]
    assert jr2.poll(wait=0.5) == []
    jr2.close()


def test_start_at_end_skips_history(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user old from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=True)
    assert jr.poll() == []
    make_journal(d / "b.journal", [sshd(T0 + 5_000_000, 2, "Invalid user new from 198.51.100.1 port 1")])
    assert [e["MESSAGE"] for e in poll_until(jr, 1)] == ["Invalid user new from 198.51.100.1 port 1"]
    jr.close()


def test_follower_sees_new_entries_and_idle_polls_start_no_process(tmp_path: Path) -> None:
    """One journalctl --follow stays up: an entry written after start reaches the next polls,
    and polls with nothing new neither start a process nor return anything."""
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user old from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=False)
    assert [e["MESSAGE"] for e in jr.poll()] == ["Invalid user old from 198.51.100.1 port 1"]
    assert jr.proc is not None and jr.status == "ok"
    follower = jr.proc.pid
    assert children_of(os.getpid()) == {follower}
    for _ in range(20):
        assert jr.poll() == []
    assert jr.proc.pid == follower and children_of(os.getpid()) == {follower} and jr.restarts == 0
    for i in range(3):
        make_journal(d / f"n{i}.journal", [sshd(T0 + (10 + i) * 1_000_000, 10 + i, f"Invalid user new{i} from 198.51.100.2 port {i}")])
    got = poll_until(jr, 3)
    assert [e["MESSAGE"] for e in got] == [f"Invalid user new{i} from 198.51.100.2 port {i}" for i in range(3)]
    assert jr.cursor == got[-1]["__CURSOR"]
    assert jr.proc.pid == follower and jr.restarts == 0
    jr.close()
    assert proc_state(follower) is None and jr.proc is None


def test_killed_follower_is_restarted_from_the_cursor_without_loss_or_repeat(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user a0 from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=False, backoff=0.2)
    assert len(jr.poll()) == 1
    assert jr.proc is not None
    first = jr.proc.pid
    os.kill(first, signal.SIGKILL)
    # written while no follower runs: read by the next one, after the saved cursor
    make_journal(d / "b.journal", [sshd(T0 + 1_000_000, 2, "Invalid user a1 from 198.51.100.1 port 1")])
    seen_error = False
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while jr.restarts == 0 and time.monotonic() < deadline:
        got += jr.poll(wait=0.1)
        seen_error = seen_error or (jr.status == "error" and "restarting" in (jr.error or ""))
    assert seen_error and jr.restarts == 1
    assert jr.proc is not None and jr.proc.pid != first
    got += poll_until(jr, 1 - len(got))
    assert [e["MESSAGE"] for e in got] == ["Invalid user a1 from 198.51.100.1 port 1"]
    assert jr.status == "ok"
    make_journal(d / "c.journal", [sshd(T0 + 2_000_000, 3, "Invalid user a2 from 198.51.100.1 port 1")])
    assert [e["MESSAGE"] for e in poll_until(jr, 1)] == ["Invalid user a2 from 198.51.100.1 port 1"]
    jr.close()


def test_stopped_follower_is_killed_after_the_timeout_and_restarted(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user a0 from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=False, timeout=0.5, backoff=0.1)
    assert len(jr.poll()) == 1
    assert jr.proc is not None
    hung = jr.proc.pid
    os.kill(hung, signal.SIGSTOP)
    try:
        make_journal(d / "b.journal", [sshd(T0 + 1_000_000, 2, "Invalid user a1 from 198.51.100.1 port 1")])
        deadline = time.monotonic() + 20
        got: list[dict[str, Any]] = []
        while jr.restarts == 0 and time.monotonic() < deadline:
            got += jr.poll(wait=0.1)
        assert jr.restarts == 1 and proc_state(hung) in (None, "Z")
        got += poll_until(jr, 1 - len(got))
        assert [e["MESSAGE"] for e in got] == ["Invalid user a1 from 198.51.100.1 port 1"]
    finally:
        try:
            os.kill(hung, signal.SIGKILL)
        except OSError:
            pass
        jr.close()


def test_follower_holding_a_partial_entry_past_the_timeout_is_restarted(tmp_path: Path) -> None:
    """A journalctl that wrote half an entry and went silent is hung: killed and restarted,
    and the half entry is not taken for one."""
    fake = tmp_path / "journalctl"
    fake.write_text('#!/bin/sh\ncase "$*" in *--follow*) printf \'{"MESSAGE":"Inval\'; exec sleep 30;; esac\nexit 0\n')
    fake.chmod(0o755)
    jr = JournalReader(journalctl=str(fake), start_at_end=False, timeout=0.5, backoff=0.1)
    try:
        deadline = time.monotonic() + 20
        while jr.restarts == 0 and time.monotonic() < deadline:
            assert jr.poll(wait=0.1) == []
        assert jr.restarts == 1 and "no complete entry" in (jr.error or "")
        assert jr.bad_entries == 0
    finally:
        jr.close()


def test_bad_and_overlong_follower_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    fake = tmp_path / "journalctl"
    big = "x" * 3000
    lines = ['{"MESSAGE":"a","__CURSOR":"c1"}', "not json", "[1,2]", '{"MESSAGE":"' + big + '"}', '{"MESSAGE":"b","__CURSOR":"c2"}']
    body = "\\n".join(lines)
    fake.write_text(f'#!/bin/sh\ncase "$*" in *--follow*) printf \'{body}\\n\'; exec sleep 30;; esac\nexit 0\n')
    fake.chmod(0o755)
    jr = JournalReader(journalctl=str(fake), start_at_end=False, max_line_bytes=1000)
    try:
        got = poll_until(jr, 2, timeout=10)
        assert [e["MESSAGE"] for e in got] == ["a", "b"]
        assert jr.bad_entries == 2 and jr.overlong == 1 and jr.cursor == "c2"
        assert jr.status == "ok" and jr.restarts == 0
    finally:
        jr.close()


def test_follower_exits_when_the_agent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the agent leaves no journalctl behind: it sees its stdout hang up."""
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user a0 from 198.51.100.1 port 1")])
    code = textwrap.dedent(f"""
        import sys, time
        from hostmond.collectors.auth.journal import JournalReader
        jr = JournalReader(directory={str(d)!r}, start_at_end=False)
        jr.poll()
        print(jr.proc.pid, flush=True)
        time.sleep(60)
    """)
    agent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        follower = int(agent.stdout.readline())
        assert proc_state(follower) in ("S", "R")
    finally:
        agent.kill()
        agent.wait()
    deadline = time.monotonic() + 10
    while proc_state(follower) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc_state(follower) in (None, "Z")  # gone (a zombie until its new parent reaps it)


def test_missing_journalctl_and_empty_directory_are_reported(tmp_path: Path) -> None:
    jr = JournalReader(journalctl=str(tmp_path / "no-such-journalctl"))
    assert jr.poll() == [] and jr.status == "missing" and not jr.available()
    if JOURNALCTL:
        empty = tmp_path / "empty"
        empty.mkdir()
        jr = JournalReader(directory=str(empty), start_at_end=False)
        assert jr.poll() == []
        assert jr.status in ("missing", "ok")


def test_hung_journalctl_is_killed_by_the_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "journalctl"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    jr = JournalReader(journalctl=str(fake), start_at_end=False, timeout=0.5)
    assert jr.poll() == []
    assert jr.status == "error"


def test_collector_reads_journal_and_resumes_after_restart(hostmon_collector, tmp_path: Path) -> None:
    require_tools()
    from hostmond.collectors.auth.collector import AuthCollector

    from hostmond.api import Sample

    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0 + i * 1_000_000, 300 + i, f"Invalid user u{i} from 198.51.100.7 port {i + 1}") for i in range(4)])
    cfg = {"files": [], "btmp": "", "journal": True, "journal_directory": str(d), "read_from_start": True}

    def count(items: list) -> float:
        s = [x for x in items if isinstance(x, Sample) and x.name == "hostmon_auth_failures_total"]
        return sum(x.value for x in s)

    c = hostmon_collector.make(AuthCollector, cfg)
    c.start()
    items = list(c.collect())
    assert count(items) == 4
    assert any(isinstance(x, Sample) and x.name == "hostmon_auth_source_up" and x.labels == {"source": "journal"} and x.value == 1 for x in items)
    c.stop()
    make_journal(d / "b.journal", [sshd(T0 + 100_000_000, 400, "Failed password for root from 198.51.100.8 port 9 ssh2")])
    c2 = hostmon_collector.make(AuthCollector, cfg)
    c2.start()
    items = list(c2.collect())
    assert count(items) == 1  # only the new entry: the saved cursor was used
    c2.stop()


def test_collector_follows_new_entries_saves_state_only_on_change_and_stops_the_follower(hostmon_collector, tmp_path: Path) -> None:
    require_tools()
    from hostmond.collectors.auth.collector import AuthCollector

    from hostmond.api import Sample

    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user u0 from 198.51.100.7 port 1")])
    cfg = {"files": [], "btmp": "", "journal": True, "journal_directory": str(d), "read_from_start": True}

    def value(items: list, name: str) -> float:
        return sum(x.value for x in items if isinstance(x, Sample) and x.name == name)

    c = hostmon_collector.make(AuthCollector, cfg)
    c.start()
    assert value(c.collect(), "hostmon_auth_failures_total") == 1
    state = Path(c.ctx.state.path)
    ino = state.stat().st_ino  # every save renames a new file into place
    follower = c.sources[0].reader.proc.pid
    for _ in range(5):
        items = c.collect()
        assert value(items, "hostmon_auth_failures_total") == 1
    assert state.stat().st_ino == ino  # nothing moved: not rewritten
    assert value(items, "hostmon_auth_journal_restarts_total") == 0 and value(items, "hostmon_auth_journal_bad_entries_total") == 0
    make_journal(d / "b.journal", [sshd(T0 + 1_000_000, 2, "Failed password for root from 198.51.100.8 port 9 ssh2")])
    deadline = time.monotonic() + 30
    while value(items, "hostmon_auth_failures_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        items = c.collect()
    assert value(items, "hostmon_auth_failures_total") == 2
    assert state.stat().st_ino != ino
    assert c.sources[0].reader.proc.pid == follower
    c.stop()
    assert proc_state(follower) is None


def test_system_journal_is_read_for_this_machine_only_and_root_directory_files_for_all() -> None:
    """--merge (needed so that --follow does not stop at the latest boot) reads every machine's
    journal; for the local system journal a _MACHINE_ID match keeps journalctl's default."""
    mid = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    jr = JournalReader(identifiers=["sshd"], facilities=[4], machine_id=mid)
    assert jr._matches() == ["SYSLOG_IDENTIFIER=sshd", f"_MACHINE_ID={mid}", "+", "SYSLOG_FACILITY=4", f"_MACHINE_ID={mid}"]
    assert "--merge" in jr._base()
    for kw in ({"root": "/host"}, {"directory": "/j"}, {"files": ["/j/a.journal"]}):
        jr = JournalReader(identifiers=["sshd"], facilities=[], machine_id=mid, **kw)  # type: ignore[arg-type]
        assert jr._matches() == ["SYSLOG_IDENTIFIER=sshd"]


def test_system_journal_match_keeps_other_machines_out(tmp_path: Path) -> None:
    """The same matches on a real journal holding two machines' entries (read here with --file)."""
    require_tools()
    mine, other = "11111111111111111111111111111111", "22222222222222222222222222222222"
    f = tmp_path / "j" / "a.journal"
    make_journal(f, [export_entry(T0, {"SYSLOG_IDENTIFIER": "sshd", "_MACHINE_ID": m, "MESSAGE": f"Invalid user {m[:1]} from 198.51.100.1 port 1"})
                     for m in (other, mine)])
    jr = JournalReader(files=[str(f)], start_at_end=False)
    jr.machine_id = mine  # what the system-journal case sets
    assert [e["MESSAGE"] for e in jr.poll()] == ["Invalid user 1 from 198.51.100.1 port 1"]
    jr.close()


def test_system_journal_unreadable_by_the_agents_user_is_permission_denied(open_tmp: Path) -> None:
    """journalctl run by a user outside systemd-journal/adm silently shows only that user's own
    journal; the reader checks the system journal file itself and says permission_denied."""
    require_tools()
    root = open_tmp / "var-log-journal"
    mid = root / "0123456789abcdef0123456789abcdef"
    make_journal(mid / "system.journal", [sshd(T0, 1, "Invalid user a from 198.51.100.1 port 1")])
    for d in (root, mid):
        d.chmod(0o755)
    (mid / "system.journal").chmod(0o640)  # root:root, as on a host (there: group systemd-journal)

    def child() -> dict[str, object]:
        jr = JournalReader(start_at_end=False, system_roots=[str(root)])
        got = jr.poll()
        return {"n": len(got), "status": jr.status, "error": jr.error, "check": unreadable_system_journal([str(root)])}

    res = in_child_as_nobody(child)
    assert res["n"] == 0 and res["status"] == "permission_denied", res
    assert str(mid / "system.journal") in str(res["error"]) and "systemd-journal" in str(res["error"])
    (mid / "system.journal").chmod(0o644)
    assert in_child_as_nobody(lambda: {"check": unreadable_system_journal([str(root)])})["check"] is None
    assert unreadable_system_journal([str(open_tmp / "none")]) is None  # no system journal at all: nothing to say


def test_no_identifier_and_no_facility_reads_nothing_instead_of_everything(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user a from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=False, identifiers=[], facilities=[])
    assert jr.poll() == [] and jr.status == "error"
    jr = JournalReader(directory=str(d), start_at_end=False, identifiers=[], facilities=[4])
    assert jr.poll() == []  # that entry has no facility field: only the identifier matched it
    jr = JournalReader(directory=str(d), start_at_end=False, identifiers=["sshd"], facilities=[])
    assert len(jr.poll()) == 1
