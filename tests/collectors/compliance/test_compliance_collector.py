"""The compliance collector end to end: a good and a bad host tree read through rootfs/proc_root."""

from __future__ import annotations

from pathlib import Path

from compliance_trees import make_tree
from hostmond.collectors.compliance import ComplianceCollector
from hostmond.collectors.compliance.policy import default_policy_path, load_policy

# What the bad tree breaks (see compliance_trees.make_tree) and the default policy must catch.
BAD_TREE_FAILS = {
    "ssh_root_login": "/etc/ssh/sshd_config.d/50-cloud.conf:1: PermitRootLogin yes",
    "ssh_password_auth": "/etc/ssh/sshd_config.d/50-cloud.conf:2: PasswordAuthentication yes",
    "ssh_empty_passwords": "/etc/ssh/sshd_config.d/50-cloud.conf:3",
    "ssh_max_auth_tries": "OpenSSH default 6",
    "world_writable_system_files": "/etc/motd",
    "unexpected_suid": "/usr/local/bin/rootshell",
    "sysctl_accept_redirects": "net.ipv4.conf.all.accept_redirects = 1",
    "sysctl_syncookies": "net.ipv4.tcp_syncookies = 0",
    "sysctl_rp_filter": "rp_filter = 0",
    "sysctl_aslr": "kernel.randomize_va_space = 0",
    "sysctl_ptrace_scope": "ptrace_scope = 0",
    "shadow_no_empty_hash": "/etc/shadow:2",
    "uid0_only_root": "/etc/passwd:3: toor:x:0:0",
    "shadow_perms": "mode 0644",
    "password_hash_algorithm": "ENCRYPT_METHOD MD5",
    "pwquality_minlen": "default 8",
    "password_max_days": "PASS_MAX_DAYS 99999",
    "module_dccp_disabled": "dccp is loaded",
    "tmp_mount_options": "lacks noexec",
    "auditd_installed": "none of auditd",
    "no_telnet_server": "telnetd installed",
    "unattended_upgrades_debian": "20auto-upgrades",
}


def _run(hostmon_collector, tmp_path: Path, bad: bool, cycles: int = 1, **cfg):
    root, proc = make_tree(tmp_path / ("bad" if bad else "good"), bad)
    return hostmon_collector.run(ComplianceCollector, cfg, cycles=cycles, rootfs=root, proc_root=proc)


def test_bad_tree_fails_the_broken_checks_with_evidence(hostmon_collector, tmp_path):
    out = _run(hostmon_collector, tmp_path, bad=True)
    for check, evidence in BAD_TREE_FAILS.items():
        out.assert_sample("hostmon_compliance_check", value=0, labels={"policy": "default", "check": check})
        (ev,) = out.assert_event("compliance", check=check, result="fail")
        assert evidence in ev.fields["evidence"], (check, ev.fields["evidence"])
        assert ev.fields["remediation"] and ev.fields["severity"] and ev.fields["previous"] == ""
    # the empty hash is located, never shown
    (ev,) = out.assert_event("compliance", check="shadow_no_empty_hash")
    assert "alice" not in ev.fields["evidence"] and "$" not in ev.fields["evidence"]
    # the Match block's 'PermitRootLogin yes' is conditional: ignored even in the good tree (see next test)
    out.assert_sample("hostmon_compliance_check", value=1, labels={"check": "ssh_login_grace_time", "severity": "low"})


def test_good_tree_passes_every_decidable_check(hostmon_collector, tmp_path):
    out = _run(hostmon_collector, tmp_path, bad=False)
    failing = [s.labels["check"] for s in out.find("hostmon_compliance_check") if s.value == 0]
    assert failing == []
    policy = load_policy(default_policy_path())
    n = len(policy.checks)
    # rhel-only checks (3) are absent and counted; the command check is off by default; no IPv6 sysctl in the fake proc
    out.assert_sample("hostmon_compliance_checks", value=5, labels={"policy": "default", "result": "not_applicable"})
    out.assert_sample("hostmon_compliance_checks", value=0, labels={"policy": "default", "result": "error"})
    out.assert_sample("hostmon_compliance_checks", value=0, labels={"policy": "default", "result": "fail"})
    out.assert_sample("hostmon_compliance_checks", value=n - 5, labels={"policy": "default", "result": "pass"})
    out.assert_sample("hostmon_compliance_check", count=n - 5)
    out.assert_sample("hostmon_compliance_score", value=1.0, labels={"policy": "default"})
    assert out.find("hostmon_compliance_check", {"check": "pam_pwquality_rhel"}) == []
    assert out.events == []  # nothing failing on a first run: no event
    out.assert_sample("hostmon_compliance_run_duration_seconds", labels={"policy": "default"})
    out.assert_sample("hostmon_compliance_scanned_entries", labels={"policy": "default"})
    out.assert_sample("hostmon_compliance_last_run_timestamp_seconds")
    out.assert_all_documented()
    out.assert_all_covered()


def test_bad_tree_score_and_totals(hostmon_collector, tmp_path):
    out = _run(hostmon_collector, tmp_path, bad=True)
    fails = len([s for s in out.find("hostmon_compliance_check") if s.value == 0])
    passes = len([s for s in out.find("hostmon_compliance_check") if s.value == 1])
    assert fails >= len(BAD_TREE_FAILS)
    out.assert_sample("hostmon_compliance_checks", value=fails, labels={"result": "fail"})
    out.assert_sample("hostmon_compliance_score", value=passes / (passes + fails))


def test_events_only_on_change_and_survive_a_restart(hostmon_collector, tmp_path):
    root, proc = make_tree(tmp_path / "t", bad=True)
    c = hostmon_collector.make(ComplianceCollector, {}, rootfs=root, proc_root=proc)
    first = hostmon_collector.run_instance(c, cycles=2)
    # two cycles, one event per failing check (the second cycle changes nothing)
    assert len(first.assert_event("compliance", check="ssh_root_login")) == 1
    # fix one thing, break nothing else; a new instance (agent restart) reads the saved results
    (Path(root) / "etc/ssh/sshd_config.d/50-cloud.conf").write_text("PermitRootLogin no\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n")
    c2 = hostmon_collector.make(ComplianceCollector, {}, rootfs=root, proc_root=proc)
    second = hostmon_collector.run_instance(c2)
    (ev,) = second.assert_event("compliance", count=1)
    assert ev.fields["check"] == "ssh_root_login" and ev.fields["previous"] == "fail" and ev.fields["result"] == "pass"
    assert ev.fields["cis"] == "5.2.7"


def test_skip_checks_and_extra_policy(hostmon_collector, tmp_path):
    extra = tmp_path / "local.toml"
    extra.write_text(
        '[policy]\nname = "local"\ntitle = "site rules"\nversion = "2"\n\n'
        '[[check]]\nid = "motd_present"\ntitle = "motd exists"\nseverity = "low"\nrationale = "r"\nremediation = "x"\n'
        'kind = "file_exists"\npath = "/etc/motd"\n'
    )
    out = _run(hostmon_collector, tmp_path, bad=True, policies=[str(extra)], skip_checks=["default.ssh_root_login", "uid0_only_root"])
    out.assert_sample("hostmon_compliance_check", value=1, labels={"policy": "local", "check": "motd_present", "severity": "low"})
    assert out.find("hostmon_compliance_check", {"check": "ssh_root_login"}) == []
    assert out.find("hostmon_compliance_check", {"check": "uid0_only_root"}) == []
    out.assert_sample("hostmon_compliance_score", value=1.0, labels={"policy": "local"})


def test_bad_policy_file_is_a_construction_error_naming_file_check_and_key(hostmon_collector, tmp_path):
    import pytest
    from hostmond.collectors.compliance.policy import PolicyError

    bad = tmp_path / "bad.toml"
    bad.write_text('[policy]\nname = "p"\ntitle = "t"\nversion = "1"\n[[check]]\nid = "c1"\ntitle = "t"\nseverity = "high"\n'
                   'rationale = "r"\nremediation = "x"\nkind = "sysctl"\nkey = "kernel.x"\nop = "ge"\nvalue = "one"\n')
    with pytest.raises(PolicyError) as e:
        hostmon_collector.make(ComplianceCollector, {"policies": [str(bad)]})
    assert str(e.value) == f"{bad}: check c1: value: op 'ge' needs an integer value"


def test_unknown_command_id_is_a_config_error(hostmon_collector):
    import pytest

    from hostmond.core.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        hostmon_collector.make(ComplianceCollector, {"commands": ["rm_rf"]})
    assert "collectors.compliance.commands" in str(e.value) and "unknown command 'rm_rf'" in str(e.value)


def test_default_interval_is_an_hour():
    from hostmond.collectors.compliance import ComplianceConfig

    assert ComplianceConfig().interval == 3600.0


def test_rhel_family_tree_uses_the_rhel_checks_and_the_rpm_database(hostmon_collector, tmp_path):
    import sqlite3

    root = tmp_path / "rhel"
    (root / "etc/pam.d").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n')
    (root / "etc/pam.d/system-auth").write_text(
        "auth required pam_faillock.so preauth silent deny=5\n"
        "password requisite pam_pwquality.so local_users_only\n"
    )
    (root / "var/lib/rpm").mkdir(parents=True)
    con = sqlite3.connect(root / "var/lib/rpm/rpmdb.sqlite")
    con.execute("CREATE TABLE Name (key TEXT, hnum INTEGER, idx INTEGER)")
    con.executemany("INSERT INTO Name VALUES (?, ?, 0)", [("audit", 1), ("firewalld", 2), ("openssh-server", 3)])
    con.commit()
    con.close()
    (root / "etc/systemd/system/timers.target.wants").mkdir(parents=True)
    os_link = root / "etc/systemd/system/timers.target.wants/dnf-automatic-install.timer"
    os_link.symlink_to("/usr/lib/systemd/system/dnf-automatic-install.timer")
    proc = tmp_path / "proc"
    proc.mkdir()
    out = hostmon_collector.run(ComplianceCollector, {}, rootfs=str(root), proc_root=str(proc))
    checks = {s.labels["check"]: s.value for s in out.find("hostmon_compliance_check")}
    assert checks["pam_pwquality_rhel"] == 1 and checks["pam_lockout_rhel"] == 1 and checks["unattended_upgrades_rhel"] == 1
    assert checks["auditd_installed"] == 1 and checks["firewall_installed"] == 1 and checks["no_telnet_server"] == 1
    for debian_only in ("pam_pwquality_debian", "pam_lockout_debian", "unattended_upgrades_debian"):
        assert debian_only not in checks
