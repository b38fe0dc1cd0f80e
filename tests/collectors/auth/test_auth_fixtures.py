"""The parser and the real agent over the log fixtures we wrote (tests/data/auth), so a clone alone tests them.

Issue 12 #8: the older syslog form of PAM messages (``sshd(pam_unix)[19939]: authentication
failure; ...``, ``gdm(pam_unix)``, ``su(pam_unix)``) and ``kernel:[  970.699396]:`` prefixes.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import TEST_DATA
from hostmond.collectors.auth.parse import AuthParser

AUTH = TEST_DATA / "auth"


def parse_file(path: Path) -> tuple[collections.Counter[tuple[str, str]], list]:
    p = AuthParser(now=lambda: 1_700_000_000.0)
    recs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        recs += p.feed(line)
    recs += p.flush()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for r in recs:
        counts[(r.service, r.reason)] += r.count
    return counts, recs


def test_every_sshd_message_kind_of_the_sample_is_counted_once() -> None:
    counts, recs = parse_file(AUTH / "sshd-sample.log")
    assert counts == {
        ("sshd", "invalid_user"): 1,
        ("sshd", "password"): 5,  # 1 + 1 + 1 + "message repeated 2 times"; PAM's held lines are not counted again
        ("sshd", "preauth_disconnect"): 2,
        ("sshd", "max_attempts"): 1,  # and the "Disconnecting ... Too many" line after it is not a second one
        ("sshd", "bad_protocol"): 1,
        ("sshd", "preauth_closed"): 1,
        ("sshd", "user_not_allowed"): 1,
        ("sshd", "negotiation_failed"): 1,
        ("sshd", "preauth_timeout"): 1,
        ("sshd", "pam_auth"): 1,
        ("sudo", "password"): 3,
        ("su", "password"): 1,
    }
    # a publickey offer followed by a successful login (bob) is no failure
    assert "bob" not in {r.user for r in recs} and "alice" not in {r.user for r in recs if r.service == "sshd"}


def test_old_syslog_pam_form_and_kernel_prefixes_are_read() -> None:
    counts, recs = parse_file(AUTH / "pam-old-syslog.log")
    assert counts == {
        ("sshd", "pam_auth"): 3,  # sshd(pam_unix)[pid]: authentication failure; (check pass / session lines are not)
        ("pam", "pam_auth"): 1,  # gdm(pam_unix)
        ("su", "pam_auth"): 1,  # su(pam_unix): in this form PAM's line is su's only failure line
        ("sshd", "password"): 3,  # "sshd[pid]: kernel:[ ... ]: Failed ..." and "kernel: [ ... ] sshd[pid]: Failed ..."
    }
    by_user = {(r.service, r.user): r for r in recs}
    assert by_user[("sshd", "root")].source in ("192.0.2.4", "198.51.100.9", "198.51.100.10")
    assert by_user[("sshd", "guest")].host == "scanner.example.net"
    assert by_user[("su", "root")].source is None
    srcs = sorted(r.source for r in recs if r.reason == "password")
    assert srcs == ["198.51.100.10", "198.51.100.9", "198.51.100.9"]


def test_a_forged_chain_of_kernel_prefixes_is_not_parsed_and_does_not_recurse() -> None:
    p = AuthParser(now=lambda: 1_700_000_000.0)
    line = "Jun 16 04:10:20 combo " + "kernel: [  971.000001] " * 20000 + "sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2"
    assert p.feed(line) == [] and p.unparsed == 1


def test_real_agent_counts_the_old_pam_form_from_a_log_file(tmp_path: Path) -> None:
    """``hostmon collect --once --collector auth`` (the real agent process) over the old-form fixture."""
    log = tmp_path / "messages"
    log.write_text((AUTH / "pam-old-syslog.log").read_text())
    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\ntenant_id = "acme"\n'
        f'[collectors.auth]\nfiles = ["{log}"]\njournal = false\nbtmp = ""\nread_from_start = true\n'
    )
    r = subprocess.run([sys.executable, "-m", "hostmond.cli", "collect", "--once", "--format", "json", "--collector", "auth",
                        "-c", str(cfg)], capture_output=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = json.loads(r.stdout)
    counts = {(s["labels"]["service"], s["labels"]["reason"]): s["value"]
              for s in out["samples"] if s["name"] == "hostmon_auth_failures_total"}
    assert counts[("sshd", "password")] == 3
    assert counts[("su", "pam_auth")] == 1 and counts[("pam", "pam_auth")] == 1
    # sshd's PAM lines wait (CONNECTION_GRACE_S) for sshd's own line of the same connection, so a
    # single pass counts them later; the parser test above shows all three are counted


def test_real_log_evaluations_skip_without_the_data_variable_and_fail_when_it_names_a_missing_directory(tmp_path: Path) -> None:
    """Issue 12 #9: a clone alone (CI=true, no data) passes; asking for the data and not having it fails."""
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if k != "HOSTMON_SHARED_DATA"} | {"CI": "true"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_auth_real_logs.py")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert r.returncode == 0 and "3 skipped" in r.stdout, r.stdout[-2000:]
    r = subprocess.run(cmd, env=env | {"HOSTMON_SHARED_DATA": str(tmp_path / "none")}, capture_output=True, text=True,
                       timeout=300, check=False, cwd=tmp_path)
    assert r.returncode != 0 and "3 failed" in r.stdout and "HOSTMON_SHARED_DATA" in r.stdout, r.stdout[-2000:]
