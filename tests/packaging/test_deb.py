"""The Debian package: built with dpkg-deb, inspected, installed with apt-get on
this machine, checked (check-config, the sandboxed agent's collection), then
removed and purged. Runs as root (CI does); slow because it builds a venv."""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

RequireTool = Callable[[str, str], str]
REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

pytestmark = pytest.mark.slow


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]


def need_root() -> None:
    if os.geteuid() != 0:
        msg = "installing a .deb needs root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def package_installed() -> bool:
    proc = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "hostmon"])
    return proc.returncode == 0 and proc.stdout.strip() not in ("", "not-installed")


def test_deb_info_and_contents(deb: Path, tmp_path: Path) -> None:
    info = run(["dpkg-deb", "--info", str(deb)])
    assert info.returncode == 0, info.stderr
    fields = dict(re.findall(r"^ (\w[\w-]*): (.*)$", info.stdout, re.MULTILINE))
    assert fields["Package"] == "hostmon"
    assert fields["Version"] == VERSION
    assert "python3.11" in fields["Depends"]
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"\b{script}\b", info.stdout), script
    conffiles = run(["dpkg-deb", "--ctrl-tarfile", str(deb)])
    assert conffiles.returncode == 0

    contents = run(["dpkg-deb", "--contents", str(deb)])
    assert contents.returncode == 0, contents.stderr
    listing = contents.stdout
    for path in (
        "./opt/hostmon/bin/hostmon",
        "./lib/systemd/system/hostmon.service",
        "./lib/systemd/system/hostmon-ingest.service",
        "./usr/lib/sysusers.d/hostmon.conf",
        "./usr/lib/tmpfiles.d/hostmon.conf",
        "./etc/hostmon/hostmon.toml",
        "./usr/share/doc/hostmon/deployment.md",
        "./usr/share/doc/hostmon/examples/process-fds.conf",
    ):
        assert re.search(rf" {re.escape(path)}$", listing, re.MULTILINE), path
    assert re.search(r" \./usr/bin/hostmon -> /opt/hostmon/bin/hostmon$", listing, re.MULTILINE)
    # every file root-owned
    assert all(" root/root " in line for line in listing.splitlines())

    # the relocated venv names /opt/hostmon, never the build's staging directory
    root = tmp_path / "x"
    assert run(["dpkg-deb", "-x", str(deb), str(root)]).returncode == 0
    assert (root / "opt/hostmon/bin/hostmon").read_text().startswith("#!/opt/hostmon/bin/python\n")
    leaked = run(["grep", "-rlI", "hostmon-deb.", str(root / "opt/hostmon/bin"), str(root / "opt/hostmon/pyvenv.cfg")])
    assert leaked.stdout == "", leaked.stdout
    assert os.readlink(root / "opt/hostmon/bin/python3.11") == "/usr/bin/python3.11"
    # the packaged units are the repository's
    assert (root / "lib/systemd/system/hostmon.service").read_text() == (REPO / "systemd/hostmon.service").read_text()


MDWE_HELPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("prctl(PR_SET_MDWE): " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""


def mdwe_supported() -> bool:
    """Linux >= 6.3 has prctl(PR_SET_MDWE), the kernel's own MemoryDenyWriteExecute."""
    proc = run([sys.executable, "-c", "import ctypes; print(ctypes.CDLL(None).prctl(66, 0, 0, 0, 0))"])
    return proc.returncode == 0 and proc.stdout.strip() not in ("", "-1")


def sandboxed(argv: list[str], groups: list[str], caps: str = "") -> subprocess.CompletedProcess[str]:
    """Run as the hostmon user the way hostmon.service does, as far as this machine can.

    From the unit: User/Group=hostmon, SupplementaryGroups, an empty (or the
    drop-in's) capability set, NoNewPrivileges, and MemoryDenyWriteExecute
    (the kernel's PR_SET_MDWE, where available). Mount-namespace directives
    (ProtectSystem, ...) only take away writes the agent does not make.
    """
    inh = "+" + caps.replace(",", ",+") if caps else "-all"
    capset = f"-all,{inh}" if caps else "-all"
    cmd = [
        "setpriv",
        "--reuid=hostmon",
        "--regid=hostmon",
        f"--groups={','.join(groups)}",
        f"--inh-caps={inh}",
        f"--bounding-set={capset}",
        "--no-new-privs",
    ]
    if caps:
        cmd.append(f"--ambient-caps={inh}")
    if mdwe_supported():
        cmd += ["/usr/bin/python3.11", "-c", MDWE_HELPER]
    return run(cmd + argv)


def unit_groups() -> list[str]:
    text = Path("/lib/systemd/system/hostmon.service").read_text()
    (line,) = re.findall(r"^SupplementaryGroups=(.*)$", text, re.MULTILINE)
    return line.split()


TLS_CHECK_CONFIG = Path("/etc/hostmon/tls-check.toml")


def check_tls_directory_and_settings(user: pwd.struct_passwd) -> None:
    """/etc/hostmon/tls is root:hostmon 0750; uncommenting the default config's cert_file and
    key_file, with a certificate there, passes check-config run as hostmon with the unit's groups."""
    from packaging_testutil import write_tls_files

    tls_dir = Path("/etc/hostmon/tls")
    st = tls_dir.stat()
    assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)) == (0, "hostmon", 0o750)
    text = Path("/etc/hostmon/hostmon.toml").read_text()
    # the default config says, first, what a host without ingest_url keeps locally and how to stop it
    head = text.split("\n\n", 1)[0]
    assert head.startswith("# LOCAL HISTORY.") and "local_history_max_bytes (256 MiB" in head and "shipping.enabled = false" in head
    assert "local_history_max_bytes = 268435456" in text
    named = dict(re.findall(r'^# (cert_file|key_file) = "([^"]+)"', text, re.MULTILINE))
    assert named == {"cert_file": str(tls_dir / "tls.crt"), "key_file": str(tls_dir / "tls.key")}
    files = write_tls_files(tls_dir, 0o644)
    try:
        key = files["tls.key"]
        os.chown(key, user.pw_uid, user.pw_gid)
        key.chmod(0o600)
        TLS_CHECK_CONFIG.write_text(re.sub(r"^# ((?:cert|key)_file = )", r"\1", text, flags=re.MULTILINE))
        TLS_CHECK_CONFIG.chmod(0o644)
        argv = ["/opt/hostmon/bin/hostmon", "check-config", str(TLS_CHECK_CONFIG)]
        ok = sandboxed(argv, unit_groups())
        assert ok.returncode == 0, ok.stdout + ok.stderr
        # and the check is real: a key the hostmon user cannot read is refused, by name
        os.chown(key, 0, 0)
        refused = sandboxed(argv, unit_groups())
        assert refused.returncode != 0 and "tls.key" in refused.stderr, refused.stdout + refused.stderr
    finally:
        for f in [*files.values(), TLS_CHECK_CONFIG]:
            f.unlink(missing_ok=True)


INGEST_CONFIG = Path("/etc/hostmon-ingest/ingest.toml")


def check_ingest_setup_as_documented(runuser: str) -> None:
    """`runuser -u hostmon-ingest -- hostmon keys ingest --dir /var/lib/hostmon-ingest/keys`, then an
    ingest.toml naming that key passes `hostmon ingest check-config` as the ingest's user."""
    doc = (REPO / "docs" / "deployment.md").read_text()
    keys_cmd = "runuser -u hostmon-ingest -- hostmon keys ingest --dir /var/lib/hostmon-ingest/keys"
    assert keys_cmd in doc
    proc = run([runuser, "-u", "hostmon-ingest", "--", "/usr/bin/hostmon", "keys", "ingest", "--dir", "/var/lib/hostmon-ingest/keys"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    key = Path("/var/lib/hostmon-ingest/keys/ingest.key")
    st = key.stat()
    assert (pwd.getpwuid(st.st_uid).pw_name, stat.S_IMODE(st.st_mode)) == ("hostmon-ingest", 0o600)
    # the documented ingest.toml, verbatim
    (config,) = re.findall(rf"^```toml\n# {re.escape(str(INGEST_CONFIG))} for hostmon-ingest.service\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
    assert f'private_keys = ["{key}"]' in config
    try:
        INGEST_CONFIG.write_text(config)
        INGEST_CONFIG.chmod(0o644)
        proc = run([runuser, "-u", "hostmon-ingest", "--", "/usr/bin/hostmon", "ingest", "check-config", str(INGEST_CONFIG)])
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        INGEST_CONFIG.unlink(missing_ok=True)


def test_install_check_config_sandboxed_collection_remove_purge(
    deb: Path, require_tool: RequireTool
) -> None:
    need_root()
    apt = require_tool("apt-get", "Debian's apt")
    require_tool("setpriv", "apt-get install util-linux")
    if package_installed():
        pytest.fail("a hostmon package is already installed here; purge it first (apt-get purge hostmon)")
    proc = run([apt, "install", "-y", f"./{deb.name}"], cwd=deb.parent, env=APT_ENV)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr

        # -- installed layout
        assert os.path.realpath("/usr/bin/hostmon") == "/opt/hostmon/bin/hostmon"
        user = pwd.getpwnam("hostmon")
        assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
        pwd.getpwnam("hostmon-ingest")
        st = os.stat("/var/lib/hostmon")
        assert st.st_uid == user.pw_uid and stat.S_IMODE(st.st_mode) == 0o700
        # enabled (not started: no systemd here, and the operator reviews the config first)
        wants = Path("/etc/systemd/system/multi-user.target.wants")
        assert (wants / "hostmon.service").is_symlink()
        assert not (wants / "hostmon-ingest.service").exists()

        # -- the default config passes the installed binary's own check
        check = run(["/usr/bin/hostmon", "check-config", "/etc/hostmon/hostmon.toml"])
        assert check.returncode == 0, check.stdout + check.stderr
        assert "OK" in check.stdout

        # -- TLS for /metrics: the package's certificate directory, and the default config's
        # commented settings that name it, work as the unit's user
        check_tls_directory_and_settings(user)
        # -- the ingest's setup on a systemd host, as docs/deployment.md gives it
        check_ingest_setup_as_documented(require_tool("runuser", "apt-get install util-linux"))

        # -- the agent's collection under the unit's real sandbox, the process-fds drop-in, and
        # remove/purge with systemd running: test_deb_systemd.py (a systemd container), which
        # replaced the setpriv approximation that stood here
        for g in unit_groups():
            grp.getgrnam(g)

        # -- remove: code and units go, the conffile stays
        proc = run([apt, "remove", "-y", "hostmon"], env=APT_ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for gone in ("/opt/hostmon", "/usr/bin/hostmon", "/lib/systemd/system/hostmon.service"):
            assert not os.path.lexists(gone), gone
        assert Path("/etc/hostmon/hostmon.toml").exists()

        # -- purge: config, state and enablement go too
        proc = run([apt, "purge", "-y", "hostmon"], env=APT_ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for gone in (
            "/etc/hostmon",
            "/var/lib/hostmon",
            "/var/lib/hostmon-ingest",
            "/etc/hostmon/tls",
            "/etc/hostmon-ingest",
            str(wants / "hostmon.service"),
            "/var/lib/systemd/deb-systemd-helper-enabled/hostmon.service.dsh-also",
        ):
            assert not os.path.lexists(gone), gone
        assert not package_installed()
    finally:
        if package_installed():
            run([apt, "purge", "-y", "hostmon"], env=APT_ENV)
