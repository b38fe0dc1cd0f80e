"""Checks that both hostmon's default policy and Lynis make: our check id, the Lynis test id, and how
to read Lynis's verdict from its log file and report file. docs/compliance.md lists the same pairs
(a test keeps the two in step).

``fail``/``passed`` are regular expressions over the Lynis log plus report; neither matching means
Lynis did not decide (test skipped: no sshd running, key absent from ``sysctl -a``...).
``rootdir``: Lynis reads what this test needs under ``--rootdir`` (others read the live system).
``may_differ``: why the two may disagree on a given host; pairs without it must agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    check: str
    lynis: str
    fail: str
    passed: str
    rootdir: bool = False
    may_differ: str = ""

    def lynis_verdict(self, text: str) -> str | None:
        if re.search(self.fail, text, re.MULTILINE):
            return "fail"
        if re.search(self.passed, text, re.MULTILINE):
            return "pass"
        return None


def _sysctl(check: str, key: str, may_differ: str = "") -> Pair:
    k = re.escape(key)
    return Pair(check, f"KRNL-6000:{key}", rf"sysctl key {k} has a different value", rf"sysctl key {k} contains equal expected", may_differ=may_differ)


def _ssh(check: str, option: str, may_differ: str = "") -> Pair:
    return Pair(
        check,
        f"SSH-7408:{option}",
        rf"OpenSSH option {option} is (configured reasonably|in a weak configuration state)",
        rf"OpenSSH option {option} is configured very well",
        may_differ=may_differ,
    )


PAIRS: tuple[Pair, ...] = (
    Pair("uid0_only_root", "AUTH-9204", r"^warning\[\]=AUTH-9204\|", r"No accounts found with UID 0 other than root", rootdir=True),
    Pair("shadow_no_empty_hash", "AUTH-9283", r"^warning\[\]=AUTH-9283\|", r"all accounts seem to have a password",
         may_differ="Lynis asks passwd --status, which also reports NP for accounts in /etc/passwd without a shadow entry; ours reads /etc/shadow"),
    Pair("pam_pwquality_debian", "AUTH-9262", r"no PAM modules for password strength testing found", r"Result: pam_(cracklib|passwdqc|pwquality)\.so found",
         may_differ="Lynis looks for the module's .so file; ours requires it in the password stack of /etc/pam.d/common-password (installed but unused passes Lynis only)"),
    Pair("password_max_days", "AUTH-9286", r"password aging limits are not configured", r"max password age is \d+ days", rootdir=True,
         may_differ="Lynis accepts any PASS_MAX_DAYS below 99999; ours follows CIS 5.5.1.2 (365 or less)"),
    _sysctl("sysctl_accept_redirects", "net.ipv4.conf.all.accept_redirects"),
    _sysctl("sysctl_send_redirects", "net.ipv4.conf.all.send_redirects"),
    _sysctl("sysctl_ipv6_accept_redirects", "net.ipv6.conf.all.accept_redirects"),
    _sysctl("sysctl_source_route", "net.ipv4.conf.all.accept_source_route"),
    _sysctl("sysctl_syncookies", "net.ipv4.tcp_syncookies"),
    _sysctl("sysctl_rp_filter", "net.ipv4.conf.all.rp_filter", may_differ="Lynis wants 1 (strict); CIS 3.3.7 and ours also accept 2 (loose)"),
    _sysctl("sysctl_aslr", "kernel.randomize_va_space"),
    _sysctl("sysctl_ptrace_scope", "kernel.yama.ptrace_scope"),
    _sysctl("sysctl_dmesg_restrict", "kernel.dmesg_restrict"),
    _sysctl("sysctl_kptr_restrict", "kernel.kptr_restrict", may_differ="Lynis wants 2; ours (KSPP) accepts 1, which hides pointers from unprivileged users"),
    _sysctl("sysctl_suid_dumpable", "fs.suid_dumpable"),
    Pair("module_dccp_disabled", "NETW-3200:dccp", r"Determine if protocol 'dccp' is really needed", r"found dccp module disabled", rootdir=True,
         may_differ="Lynis recognises only 'install dccp /bin/true'; ours also accepts /bin/false (CIS's current form) and a blacklist line, "
         "and fails a module that is loaded now (/proc/modules)"),
    Pair("module_sctp_disabled", "NETW-3200:sctp", r"Determine if protocol 'sctp' is really needed", r"found sctp module disabled", rootdir=True,
         may_differ="Lynis recognises only 'install sctp /bin/true'; ours also accepts /bin/false (CIS's current form) and a blacklist line, "
         "and fails a module that is loaded now (/proc/modules)"),
    Pair("module_usb_storage_disabled", "USB-1000", r"^suggestion\[\]=USB-1000\|", r"usb-storage driver (is disabled|in disabled state)", rootdir=True,
         may_differ="Lynis 3.0.8 reads the tree's modprobe.d only when the live /etc/modprobe.d exists (it tests the live path); "
         "ours also fails a module that is loaded now (/proc/modules)"),
    Pair("core_dumps_limited", "KRNL-5820", r"core dumps are (not explicitly disabled|\(soft and hard\) are enabled|partially enabled)",
         r"core dumps are hard disabled"),
    Pair("auditd_active", "ACCT-9628", r"Result: auditd not active", r"Result: auditd running",
         may_differ="ours also requires the unit to be enabled at boot (CIS 4.1.1.2 'enabled and active')"),
    Pair("time_sync_active", "TIME-3104", r"Could not find a NTP daemon or client",
         r"Found a time syncing daemon/client|found running NTP daemon|Found running systemd-timesyncd",
         may_differ="ours also requires the unit to be enabled at boot; Lynis accepts an ntpdate cron job, which is not a daemon"),
    Pair("firewall_enabled", "FIRE-4590", r"no host based firewall/packet filter found or configured", r"host based firewall or packet filter is active",
         may_differ="Lynis looks at the rules loaded now (iptables/nft); ours at the firewall service enabled at boot"),
    Pair("tmp_mount_options", "FILE-6310:/tmp", r"/tmp not found in mount list", r"found /tmp as a separated mount point",
         may_differ="Lynis only asks for a separate /tmp; ours (CIS 1.1.2.x) also needs nodev, nosuid, noexec"),
    _ssh("ssh_root_login", "PermitRootLogin", may_differ="Lynis also accepts prohibit-password and forced-commands-only; ours (CIS 5.2.7) wants no"),
    _ssh("ssh_x11_forwarding", "X11Forwarding"),
    _ssh("ssh_permit_user_environment", "PermitUserEnvironment"),
    _ssh("ssh_max_auth_tries", "MaxAuthTries", may_differ="Lynis rates 3 'very well' and 4-6 'reasonably'; ours (CIS 5.2.18) passes 4"),
    _ssh("ssh_idle_timeout", "ClientAliveInterval", may_differ="Lynis wants 300 or less; ours (CIS 5.2.22) any interval above 0"),
)

LYNIS_TESTS = sorted({p.lynis.split(":")[0] for p in PAIRS})
