"""journald through a REAL journal file: built with systemd-journal-remote from journal export
format, read back with journalctl (Debian packages systemd-journal-remote and systemd).

Without the tools these tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

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
    assert jr.poll() == []  # nothing new after the cursor


def test_cursor_survives_restart_without_loss_or_repeat(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0 + i * 1_000_000, 100 + i, f"Invalid user u{i} from 198.51.100.9 port {i + 1}") for i in range(3)])
    jr = JournalReader(directory=str(d), start_at_end=False)
    first = jr.poll()
    cursor = jr.cursor
    assert len(first) == 3 and cursor
    # more entries arrive (a second journal file in the directory) while the agent is down
    make_journal(d / "b.journal", [sshd(T0 + (10 + i) * 1_000_000, 200 + i, f"Invalid user v{i} from 198.51.100.9 port {i + 1}") for i in range(2)])
    jr2 = JournalReader(directory=str(d), start_at_end=True)
    jr2.load_state(cursor)
    second = jr2.poll()
    msgs = [e["MESSAGE"] for e in first + second]
    assert msgs == [f"Invalid user u{i} from 198.51.100.9 port {i + 1}" for i in range(3)] + [
        f"Invalid user v{i} from 198.51.100.9 port {i + 1}" for i in range(2)
    ]


def test_start_at_end_skips_history(tmp_path: Path) -> None:
    require_tools()
    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0, 1, "Invalid user old from 198.51.100.1 port 1")])
    jr = JournalReader(directory=str(d), start_at_end=True)
    assert jr.poll() == []
    make_journal(d / "b.journal", [sshd(T0 + 5_000_000, 2, "Invalid user new from 198.51.100.1 port 1")])
    assert [e["MESSAGE"] for e in jr.poll()] == ["Invalid user new from 198.51.100.1 port 1"]


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


def test_collector_reads_journal_and_resumes_after_restart(hostmon_collector, tmp_path: Path) -> None:  # noqa: ANN001
    require_tools()
    from hostmond.collectors.auth.collector import AuthCollector

    from hostmond.api import Sample

    d = tmp_path / "journal"
    make_journal(d / "a.journal", [sshd(T0 + i * 1_000_000, 300 + i, f"Invalid user u{i} from 198.51.100.7 port {i + 1}") for i in range(4)])
    cfg = {"files": [], "btmp": "", "journal": True, "journal_directory": str(d), "read_from_start": True}

    def count(items: list) -> float:  # noqa: ANN001
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
