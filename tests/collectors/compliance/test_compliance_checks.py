"""Check kinds and their pure parsers, each on a small tree read through rootfs."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hostmond.collectors.compliance.checks import (
    compare,
    evaluate,
    os_families,
    parse_dpkg_status,
    parse_modprobe,
    parse_mounts,
    sshd_effective,
)
from hostmond.collectors.compliance.host import HostView
from hostmond.collectors.compliance.policy import parse_policy


def check(kind: str, **params):
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in params.items())
    text = ('[policy]\nname = "t"\ntitle = "t"\nversion = "1"\n[[check]]\nid = "c"\ntitle = "t"\nseverity = "low"\n'
            f'rationale = "r"\nremediation = "x"\nkind = "{kind}"\n{body}')
    return parse_policy(text, "t.toml").checks[0]


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, int):
        return str(v)
    return "'" + v + "'"


def w(root: Path, rel: str, text: str = "", mode: int = 0o644) -> Path:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)
    return p


def run(c, root: Path, proc: Path | None = None, families=frozenset({"debian"}), **kw):
    return evaluate(c, HostView(str(root), str(proc or root / "proc"), **kw), set(families))


# -- pure parsers ------------------------------------------------------------------
def test_sshd_effective_first_value_wins_includes_in_place_and_match_is_skipped():
    files = {
        "/etc/ssh/sshd_config": "# c\nInclude sshd_config.d/*.conf\nPermitRootLogin yes\nMaxAuthTries=3\n"
        "Ciphers +aes128-cbc\nMatch Address 10.0.0.0/8\n  PasswordAuthentication no\n",
        "/etc/ssh/sshd_config.d/10-a.conf": "permitrootlogin no\n",
        "/etc/ssh/sshd_config.d/20-b.conf": "PermitRootLogin without-password\nX11Forwarding yes\n",
    }
    eff = sshd_effective(files.get, lambda pat: sorted(p for p in files if p.startswith(pat.split("*")[0])))
    assert eff is not None
    assert (eff["permitrootlogin"].value, eff["permitrootlogin"].file, eff["permitrootlogin"].line) == ("no", "/etc/ssh/sshd_config.d/10-a.conf", 1)
    assert eff["x11forwarding"].value == "yes"
    assert eff["maxauthtries"].value == "3"
    assert eff["passwordauthentication"].value == "yes" and eff["passwordauthentication"].file == ""  # Match-only: default
    assert eff["ciphers"].value.endswith(",aes128-cbc") and eff["ciphers"].value.startswith("chacha20")
    assert sshd_effective({}.get, lambda p: []) is None


def test_sshd_cipher_removal_and_prepend():
    eff = sshd_effective({"/etc/ssh/sshd_config": "Ciphers -aes*-ctr\nMACs ^hmac-md5\n"}.get, lambda p: [])
    assert eff is not None
    assert "ctr" not in eff["ciphers"].value
    assert eff["macs"].value.startswith("hmac-md5,umac-64-etm")


@pytest.mark.parametrize(
    ("actual", "op", "expected", "ok"),
    [
        ("No", "eq", "no", True), ("2\t0", "eq", 2, False), ("4", "le", 4, True), ("x", "le", 4, False),
        ("1", "in", [1, 2], True), ("0", "in", [1, 2], False), ("a,b-cbc", "none_of", ["b-cbc"], False),
        ("a,b", "none_of", ["c"], True), ("SHA512", "regex", "^SHA", True), ("yes", "ne", "no", True), ("3", "gt", 0, True),
    ],
)
def test_compare(actual, op, expected, ok):
    assert compare(actual, op, expected) is ok


def test_parsers_for_dpkg_modprobe_mounts_and_os_release():
    assert parse_dpkg_status("Package: a\nStatus: install ok installed\n\nPackage: b\nStatus: deinstall ok config-files\n") == {"a"}
    black, inst = parse_modprobe([("/etc/modprobe.d/x.conf", "blacklist usb-storage\ninstall dccp /bin/true # off\n")])
    assert black == {"usb_storage": "/etc/modprobe.d/x.conf:1"} and inst == {"dccp": "/etc/modprobe.d/x.conf:2: /bin/true"}
    m = parse_mounts("tmpfs /tmp tmpfs rw,nosuid 0 0\n/dev/x /my\\040disk ext4 rw 0 0\ntmpfs /tmp tmpfs rw,noexec 0 0\n")
    assert m["/tmp"] == ("tmpfs", ["rw", "noexec"]) and "/my disk" in m
    assert os_families('ID=rocky\nID_LIKE="rhel centos fedora"\n') == {"rhel"}
    assert os_families("ID=ubuntu\nID_LIKE=debian\n") == {"debian"}
    assert os_families(None) == set()


# -- evaluators on trees --------------------------------------------------------------
def test_absolute_symlinks_resolve_inside_rootfs_not_on_this_machine(tmp_path):
    root = tmp_path / "root"
    w(root, "/srv/ssh/real_config", "PermitRootLogin no\n")
    (root / "etc/ssh").mkdir(parents=True)
    os.symlink("/srv/ssh/real_config", root / "etc/ssh/sshd_config")  # absolute: must mean root/srv/...
    r = run(check("sshd_option", option="PermitRootLogin", op="eq", value="no"), root)
    assert r.status == "pass", r
    os.symlink("../../../../../../etc/hostname", root / "etc/escape")
    assert HostView(str(root)).read_text("/etc/escape") is None  # '..' stops at the root


def test_file_mode_owner_exists_absent(tmp_path):
    root = tmp_path / "root"
    w(root, "/etc/passwd", "root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n")
    w(root, "/etc/group", "root:x:0:\nstaff:x:50:\n")
    f = w(root, "/etc/secret", "s", 0o660)
    os.chown(f, 1000, 50)
    assert run(check("file_mode", path="/etc/secret", max_mode="0640"), root).status == "fail"
    assert run(check("file_mode", path="/etc/secret", max_mode="0660"), root).status == "pass"
    r = run(check("file_owner", path="/etc/secret", owner=["root"], group=["root"]), root)
    assert r.status == "fail" and "alice:staff" in r.evidence
    assert run(check("file_owner", path="/etc/secret", owner=["alice"]), root).status == "pass"
    assert run(check("file_mode", path="/etc/none", max_mode="0640"), root).status == "not_applicable"
    assert run(check("file_mode", path="/etc/none", max_mode="0640", missing="fail"), root).status == "fail"
    assert run(check("file_exists", path="/etc/secret"), root).status == "pass"
    assert run(check("file_absent", path="/etc/secret"), root).status == "fail"
    assert run(check("file_absent", path="/etc/none"), root).status == "pass"


def test_file_content_skips_comments_and_globs(tmp_path):
    root = tmp_path / "root"
    w(root, "/etc/conf.d/a.conf", "# bad = 1\nok = 1\n")
    w(root, "/etc/conf.d/b.conf", "bad = 1\n")
    c = check("file_content", paths=["/etc/conf.d/*.conf"], pattern="^bad", expect="no_match")
    r = run(c, root)
    assert (r.status, r.evidence) == ("fail", "/etc/conf.d/b.conf:1: bad = 1")
    os.unlink(root / "etc/conf.d/b.conf")
    assert run(c, root).status == "pass"
    assert run(check("file_content", paths=["/nope"], pattern="x", expect="match"), root).status == "not_applicable"


def test_config_value_later_files_override_and_defaults(tmp_path):
    root = tmp_path / "root"
    w(root, "/etc/security/pwquality.conf", "minlen = 9\n")
    w(root, "/etc/security/pwquality.conf.d/50.conf", "minlen = 15\n")
    c = check("config_value", paths=["/etc/security/pwquality.conf", "/etc/security/pwquality.conf.d/*.conf"], key="minlen", op="ge", value=14, default="8")
    r = run(c, root)
    assert r.status == "pass" and "50.conf:1" in r.evidence
    os.unlink(root / "etc/security/pwquality.conf.d/50.conf")
    assert run(c, root).status == "fail"
    w(root, "/etc/security/pwquality.conf", "")
    r = run(c, root)
    assert r.status == "fail" and "default 8" in r.evidence
    c2 = check("config_value", paths=["/etc/login.defs"], key="PASS_MAX_DAYS", separator="space", op="le", value=365)
    w(root, "/etc/login.defs", "UMASK 022\n")
    assert run(c2, root).status == "fail"  # not set and no default: fail


def test_dir_scan_finds_world_writable_and_setid_and_is_bounded(tmp_path):
    root = tmp_path / "root"
    w(root, "/etc/ok", "x", 0o644)
    w(root, "/etc/open", "x", 0o646)
    (root / "etc/shared").mkdir()
    os.chmod(root / "etc/shared", 0o1777)  # sticky: fine
    (root / "etc/unsticky").mkdir()
    os.chmod(root / "etc/unsticky", 0o777)
    os.symlink("/etc/open", root / "etc/link")  # links are 0777 and never reported
    r = run(check("dir_scan", roots=["/etc"], find="world_writable"), root)
    assert r.status == "fail" and r.evidence.startswith("2 found: ") and "/etc/open" in r.evidence and "/etc/unsticky" in r.evidence
    assert "/etc/shared" not in r.evidence and "/etc/link" not in r.evidence
    s = w(root, "/usr/bin/su", "x", 0o755)
    os.chmod(s, 0o4755)
    g = w(root, "/usr/bin/odd", "x", 0o755)
    os.chmod(g, 0o2755)
    r = run(check("dir_scan", roots=["/usr"], find="setid", allow=["su"]), root)
    assert r.status == "fail" and "/usr/bin/odd" in r.evidence and "/usr/bin/su" not in r.evidence
    assert run(check("dir_scan", roots=["/usr"], find="suid", allow=["su"]), root).status == "pass"
    for i in range(20):
        w(root, f"/opt/many/f{i}", "x")
    r = run(check("dir_scan", roots=["/opt"], find="world_writable", max_entries=5), root)
    assert r.status == "error" and "limit" in r.evidence
    r = run(check("dir_scan", roots=["/opt"], find="world_writable", max_depth=1), root)
    assert r.status == "error"


def test_sysctl_reads_proc_root(tmp_path):
    proc = tmp_path / "proc"
    w(proc, "/sys/net/ipv4/tcp_syncookies", "1\n")
    w(proc, "/sys/net/ipv4/ip_local_port_range", "32768\t60999\n")
    assert run(check("sysctl", key="net.ipv4.tcp_syncookies", op="eq", value=1), tmp_path, proc).status == "pass"
    assert run(check("sysctl", key="net.ipv4.ip_local_port_range", op="regex", value="^32768 60999$"), tmp_path, proc).status == "pass"
    assert run(check("sysctl", key="net.ipv6.conf.all.forwarding", op="eq", value=0), tmp_path, proc).status == "not_applicable"


def test_kernel_module_loaded_blacklisted_or_disabled(tmp_path):
    root, proc = tmp_path / "root", tmp_path / "proc"
    w(proc, "/modules", "usb_storage 1 0 - Live 0x0\n")
    assert run(check("kernel_module", module="usb-storage", expect="loaded"), root, proc).status == "pass"
    assert run(check("kernel_module", module="usb-storage", expect="disabled"), root, proc).status == "fail"
    c = check("kernel_module", module="sctp", expect="disabled")
    assert run(c, root, proc).status == "fail"
    w(root, "/etc/modprobe.d/sctp.conf", "install sctp /sbin/modprobe --ignore-install sctp\n")
    assert run(c, root, proc).status == "fail"  # an install line that still loads it
    w(root, "/lib/modprobe.d/sctp.conf", "blacklist sctp\n")
    assert run(c, root, proc).status == "pass"
    assert run(check("kernel_module", module="sctp", expect="not_loaded"), root, proc).status == "pass"


def test_systemd_unit_enabled_masked_and_active(tmp_path):
    root, proc = tmp_path / "root", tmp_path / "proc"
    (root / "etc/systemd/system/multi-user.target.wants").mkdir(parents=True)
    os.symlink("/lib/systemd/system/x.service", root / "etc/systemd/system/multi-user.target.wants/x.service")
    assert run(check("systemd_unit", units=["x.service"], expect="enabled"), root, proc).status == "pass"
    assert run(check("systemd_unit", units=["y.service"], expect="enabled"), root, proc).status == "fail"
    os.symlink("/dev/null", root / "etc/systemd/system/x.service")
    r = run(check("systemd_unit", units=["x.service"], expect="enabled"), root, proc)
    assert r.status == "fail" and "masked" in r.evidence
    # active: systemd not running in this root and no process to look for: undecided, said so
    r = run(check("systemd_unit", units=["z.service"], expect="active"), root, proc)
    assert r.status == "error" and "systemd is not running" in r.evidence
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "run/systemd/units").mkdir(parents=True)
    assert run(check("systemd_unit", units=["z.service"], expect="active"), root, proc).status == "fail"
    os.symlink("abc", root / "run/systemd/units/invocation:z.service")
    assert run(check("systemd_unit", units=["z.service"], expect="active"), root, proc).status == "pass"
    w(proc, "/7/comm", "systemd-timesyn\n")  # the kernel keeps 15 characters
    assert run(check("systemd_unit", units=["t.service"], expect="active", process=["systemd-timesyncd"]), root, proc).status == "pass"


def test_package_from_dpkg_and_rpm_sqlite(tmp_path):
    root = tmp_path / "root"
    assert run(check("package", packages=["a"], expect="installed"), root).status == "error"
    db = root / "var/lib/rpm/rpmdb.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE Name (key TEXT, hnum INTEGER, idx INTEGER)")
    con.executemany("INSERT INTO Name VALUES (?, ?, 0)", [("audit", 1), ("firewalld", 2)])
    con.commit()
    con.close()
    r = run(check("package", packages=["auditd", "audit"], expect="installed"), root, families={"rhel"})
    assert r.status == "pass" and "rpmdb.sqlite" in r.evidence
    assert run(check("package", packages=["telnet-server"], expect="absent"), root).status == "pass"
    w(root, "/var/lib/dpkg/status", "Package: telnetd\nStatus: install ok installed\n")
    assert run(check("package", packages=["telnet-server", "telnetd"], expect="absent"), root).status == "fail"


def test_mount_option_reads_init_mounts_under_proc_root(tmp_path):
    proc = tmp_path / "proc"
    c = check("mount_option", mountpoint="/tmp", options=["nodev", "noexec"])
    w(proc, "/1/mounts", "/dev/sda / ext4 rw 0 0\n")
    assert run(c, tmp_path, proc).status == "fail"
    assert run(check("mount_option", mountpoint="/tmp", options=["nodev"], missing="not_applicable"), tmp_path, proc).status == "not_applicable"
    w(proc, "/1/mounts", "tmpfs /tmp tmpfs rw,nodev,noexec,nosuid 0 0\n")
    assert run(c, tmp_path, proc).status == "pass"


def test_command_runs_only_enabled_allow_listed_commands_on_the_real_root(tmp_path):
    c = check("command", command="timedatectl_show", pattern=".", expect="match")
    r = run(c, Path("/"), Path("/proc"))
    assert r.status == "not_applicable" and "not enabled" in r.evidence
    r = run(c, tmp_path, commands=("timedatectl_show",))
    assert r.status == "not_applicable" and "would read this container" in r.evidence
    r = run(c, Path("/"), Path("/proc"), commands=("timedatectl_show",))
    assert r.status == "pass" and r.evidence.startswith("timedatectl_show (exit "), r  # timedatectl (systemd) is in .ci/run
    r = run(check("command", command="not_in_list", pattern=".", expect="match"), Path("/"), Path("/proc"), commands=("not_in_list",))
    assert r.status == "not_applicable"


def test_rhel_only_check_is_not_applicable_on_debian(tmp_path):
    c = parse_policy('[policy]\nname = "t"\ntitle = "t"\nversion = "1"\n[[check]]\nid = "c"\ntitle = "t"\nseverity = "low"\n'
                     'rationale = "r"\nremediation = "x"\nkind = "file_exists"\npath = "/x"\napplies_to = ["rhel"]\n', "t").checks[0]
    r = run(c, tmp_path)
    assert r.status == "not_applicable" and "this host is debian" in r.evidence


def test_a_cancelled_walk_stops_and_is_not_a_pass(tmp_path):
    import threading

    root = tmp_path / "root"
    for i in range(5):
        w(root, f"/usr/d{i}/f", "x")
    cancel = threading.Event()
    cancel.set()
    r = evaluate(check("dir_scan", roots=["/usr"], find="world_writable"), HostView(str(root), cancel=cancel), {"debian"})
    assert r.status == "error" and "limit" in r.evidence


def test_a_fifo_in_place_of_a_config_file_is_an_error_not_a_hang(tmp_path):
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    os.mkfifo(root / "etc/ssh/sshd_config")
    r = run(check("sshd_option", option="PermitRootLogin", op="eq", value="no"), root)
    assert r.status == "error" and "not a regular file" in r.evidence


def test_a_directory_matched_by_a_glob_is_skipped(tmp_path):
    root = tmp_path / "root"
    w(root, "/etc/apt/apt.conf.d/20auto-upgrades", 'APT::Periodic::Unattended-Upgrade "1";\n')
    (root / "etc/apt/apt.conf.d/zz-dir").mkdir()
    r = run(check("file_content", paths=["/etc/apt/apt.conf.d/*"], pattern='Unattended-Upgrade\\s+"1"', expect="match"), root)
    assert r.status == "pass", r
