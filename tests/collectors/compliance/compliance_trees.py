"""Host trees for the compliance tests: a hardened one and one with deliberately bad settings.

``make_tree(base, bad)`` writes ``base/root`` (read through paths.rootfs) and
``base/proc`` (a fake proc_root: sysctls, modules, mounts, process names) and
returns both paths. The bad tree has: sshd allowing root and passwords (set in an
Include'd file, as Debian's sshd_config.d does), a world-writable file under
/etc, weak sysctls, an empty password hash, a second UID 0 account, a set-uid
shell under /usr/local/bin, a 0644 /etc/shadow.
"""

from __future__ import annotations

import os
from pathlib import Path

GOOD_SYSCTL = {
    "net/ipv4/conf/all/accept_redirects": "0",
    "net/ipv4/conf/all/secure_redirects": "0",
    "net/ipv4/conf/all/send_redirects": "0",
    "net/ipv4/conf/all/accept_source_route": "0",
    "net/ipv4/conf/all/rp_filter": "1",
    "net/ipv4/tcp_syncookies": "1",
    "kernel/randomize_va_space": "2",
    "kernel/yama/ptrace_scope": "1",
    "kernel/dmesg_restrict": "1",
    "kernel/kptr_restrict": "1",
    "fs/suid_dumpable": "0",
}
BAD_SYSCTL = {
    **GOOD_SYSCTL,
    "net/ipv4/conf/all/accept_redirects": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/tcp_syncookies": "0",
    "kernel/randomize_va_space": "0",
    "kernel/yama/ptrace_scope": "0",
}


def _w(root: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    p = root / rel.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    os.chmod(p, mode)
    return p


def make_tree(base: Path, bad: bool) -> tuple[str, str]:
    root, proc = base / "root", base / "proc"
    root.mkdir(parents=True)
    _w(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    _w(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nsshd:x:105:65534::/run/sshd:/usr/sbin/nologin\n"
       + ("toor:x:0:0::/root:/bin/sh\n" if bad else "") + "alice:x:1000:1000::/home/alice:/bin/bash\n")
    _w(root, "/etc/group", "root:x:0:\nshadow:x:42:\nalice:x:1000:\n")
    shadow = "root:$y$j9T$abc$def:19700:0:99999:7:::\n" + ("alice::19700:0:99999:7:::\n" if bad else "alice:$y$j9T$x$y:19700:0:99999:7:::\n")
    sh = _w(root, "/etc/shadow", shadow, 0o644 if bad else 0o640)
    os.chown(sh, 0, 42)
    _w(root, "/etc/gshadow", "root:*::\n", 0o640)
    _w(root, "/etc/ssh/sshd_config",
       "Include /etc/ssh/sshd_config.d/*.conf\n"
       + ("" if bad else "PermitRootLogin no\nPasswordAuthentication no\nMaxAuthTries 3\nClientAliveInterval 300\n")
       + "LoginGraceTime 60\nMACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com\n"
       "Match User backup\n    PermitRootLogin yes\n    PasswordAuthentication yes\n", 0o600)
    if bad:
        _w(root, "/etc/ssh/sshd_config.d/50-cloud.conf", "PermitRootLogin yes\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n", 0o600)
    _w(root, "/etc/login.defs", "ENCRYPT_METHOD " + ("MD5" if bad else "YESCRYPT") + "\n" + ("PASS_MAX_DAYS 99999\n" if bad else "PASS_MAX_DAYS 365\n"))
    _w(root, "/etc/security/pwquality.conf", "# minlen = 8\n" + ("" if bad else "minlen = 14\n"))
    _w(root, "/etc/security/limits.conf", "" if bad else "*    hard    core    0\n")
    _w(root, "/etc/pam.d/common-password", "password [success=1 default=ignore] pam_unix.so obscure yescrypt remember=5\n"
       + ("" if bad else "password requisite pam_pwquality.so retry=3\n"))
    _w(root, "/etc/pam.d/common-auth", "auth required pam_faillock.so preauth\nauth [success=1 default=ignore] pam_unix.so\n")
    _w(root, "/etc/apt/apt.conf.d/20auto-upgrades", 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "'
       + ("0" if bad else "1") + '";\n')
    _w(root, "/etc/motd", "hello\n", 0o666 if bad else 0o644)
    if not bad:
        # /bin/false is CIS's current form; dccp uses the older /bin/true (the only one Lynis recognises)
        for m in ("cramfs", "dccp", "sctp", "usb-storage"):
            _w(root, f"/etc/modprobe.d/{m}.conf", f"install {m} /bin/{'true' if m == 'dccp' else 'false'}\nblacklist {m}\n")
    tool = _w(root, "/usr/local/bin/rootshell", "#!/bin/sh\n", 0o755)
    if bad:
        os.chmod(tool, 0o4755)
    su = _w(root, "/usr/bin/su", "binary\n", 0o755)
    os.chmod(su, 0o4755)  # a well-known set-uid program: allowed
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)  # world-writable with the sticky bit: fine
    # packages (dpkg status) and units
    pkgs = ["openssh-server", "nftables", "chrony"] + ([] if bad else ["auditd"]) + (["telnetd"] if bad else [])
    _w(root, "/var/lib/dpkg/status", "\n".join(f"Package: {p}\nStatus: install ok installed\nVersion: 1\n" for p in pkgs)
       + "\nPackage: auditd-old\nStatus: deinstall ok config-files\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    units = ["chrony.service", "nftables.service"] + ([] if bad else ["auditd.service"])
    for u in units:
        os.symlink(f"/lib/systemd/system/{u}", wants / u)
    # proc_root
    for k, v in (BAD_SYSCTL if bad else GOOD_SYSCTL).items():
        _w(proc, f"/sys/{k}", v + "\n")
    _w(proc, "/modules", "ext4 1 0 - Live 0x0\n" + ("dccp 1 0 - Live 0x0\n" if bad else ""))
    tmp_opts = "rw,nosuid,nodev" if bad else "rw,nosuid,nodev,noexec"
    _w(proc, "/1/mounts", f"/dev/sda1 / ext4 rw,relatime 0 0\ntmpfs /tmp tmpfs {tmp_opts} 0 0\n")
    _w(proc, "/1/comm", "systemd\n")
    _w(proc, "/42/comm", "chronyd\n")
    if not bad:
        _w(proc, "/43/comm", "auditd\n")
    return str(root), str(proc)
