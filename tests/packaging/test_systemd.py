"""systemd units, sysusers.d and tmpfiles.d checked with systemd's own tools."""

from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

RequireTool = Callable[[str, str], str]
REPO = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = REPO / "systemd"
UNITS = ("hostmon.service", "hostmon-ingest.service")
MAX_EXPOSURE = 2.0
INSTALLED_BINARY = "/opt/hostmon/bin/hostmon"
# Where each service's TLS certificate and key go (tmpfiles.d/hostmon.conf; docs/deployment.md).
TLS_DIRS = {"hostmon.service": "/etc/hostmon/tls", "hostmon-ingest.service": "/etc/hostmon-ingest/tls"}


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned (repeatable directives keep all)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key)
    assert values, f"{key} missing"
    return values[-1]


def unit_copy_with_stub_binary(tmp_path: Path, name: str) -> Path:
    """A copy of the unit whose ExecStart points at an executable stub.

    `systemd-analyze verify` insists that ExecStart's binary exists; on a
    build machine /opt/hostmon is not installed (the .deb test installs and
    removes it), so the copy swaps only that path and checks everything else.
    """
    stub = tmp_path / "opt" / "hostmon" / "bin" / "hostmon"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (SYSTEMD_DIR / name).read_text()
    assert INSTALLED_BINARY in text
    unit = tmp_path / "units" / name
    unit.parent.mkdir(exist_ok=True)
    unit.write_text(text.replace(INSTALLED_BINARY, str(stub)))
    return unit


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_is_clean(name: str, tmp_path: Path, require_tool: RequireTool) -> None:
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    unit = unit_copy_with_stub_binary(tmp_path, name)
    proc = subprocess.run([exe, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # no warnings either


def test_verify_would_catch_a_broken_unit(tmp_path: Path, require_tool: RequireTool) -> None:
    """The verify check above can fail: an unknown directive is reported."""
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    unit = unit_copy_with_stub_binary(tmp_path, "hostmon.service")
    unit.write_text(unit.read_text().replace("LockPersonality=yes", "LockPersonality=yes\nProtectEverything=yes"))
    proc = subprocess.run([exe, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert "ProtectEverything" in proc.stderr


def exposure(exe: str, unit: Path) -> float:
    proc = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(unit)],
        check=False, capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    return float(m.group(1))


@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_at_most_2(name: str, require_tool: RequireTool) -> None:
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    level = exposure(exe, SYSTEMD_DIR / name)
    assert level <= MAX_EXPOSURE, f"{name}: exposure {level} > {MAX_EXPOSURE}"


def test_exposure_parser_sees_an_unhardened_unit(tmp_path: Path, require_tool: RequireTool) -> None:
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(exe, bare) > 9.0


def test_agent_unit_contract() -> None:
    u = parse_unit(SYSTEMD_DIR / "hostmon.service")
    assert one(u, "Service.Type") == "notify"
    assert one(u, "Service.NotifyAccess") == "main"
    assert one(u, "Service.WatchdogSec") == "30"
    assert one(u, "Service.ExecStart") == f"{INSTALLED_BINARY} run --config /etc/hostmon/hostmon.toml"
    assert one(u, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(u, "Service.User") == "hostmon"
    assert one(u, "Service.Group") == "hostmon"
    assert set(one(u, "Service.SupplementaryGroups").split()) == {"adm", "systemd-journal", "utmp"}
    assert one(u, "Service.StateDirectory") == "hostmon"
    assert one(u, "Service.StateDirectoryMode") == "0700"
    assert one(u, "Service.UMask") == "0077"
    # The processes collector must see every process; the network collector
    # and shipping need the host's network; a user namespace would map the
    # log-reading groups to nobody.
    assert one(u, "Service.ProtectProc") == "default"
    assert one(u, "Service.ProcSubset") == "all"
    assert u.get("Service.PrivateNetwork", ["no"])[-1] == "no"
    assert u.get("Service.PrivateUsers", ["no"])[-1] == "no"
    assert one(u, "Service.CapabilityBoundingSet") == ""
    assert one(u, "Service.NoNewPrivileges") == "yes"
    assert one(u, "Service.ProtectSystem") == "strict"


def test_ingest_unit_contract() -> None:
    u = parse_unit(SYSTEMD_DIR / "hostmon-ingest.service")
    assert one(u, "Service.ExecStart") == f"{INSTALLED_BINARY} ingest run --config /etc/hostmon-ingest/ingest.toml"
    assert one(u, "Service.User") == "hostmon-ingest"
    assert "Service.SupplementaryGroups" not in u  # reads no host logs
    assert one(u, "Service.StateDirectory") == "hostmon-ingest"
    assert one(u, "Service.ProtectProc") == "invisible"
    assert one(u, "Service.CapabilityBoundingSet") == ""
    # the ingest has no SIGHUP handler: a "kill -HUP" reload ended it for good (test_deb_systemd.py)
    assert "Service.ExecReload" not in u


def test_supplementary_groups_exist_and_own_the_auth_sources() -> None:
    """The groups named in the unit are the ones that can read the auth sources here."""
    groups = one(parse_unit(SYSTEMD_DIR / "hostmon.service"), "Service.SupplementaryGroups").split()
    for g in groups:
        try:
            grp.getgrnam(g)
        except KeyError:
            pytest.fail(f"group {g} from SupplementaryGroups= does not exist on this Debian system")
    for path, group in (("/var/log/btmp", "utmp"), ("/var/log/auth.log", "adm")):
        if os.path.exists(path):
            st = os.stat(path)
            assert grp.getgrgid(st.st_gid).gr_name == group, path
            assert st.st_mode & stat.S_IRGRP, f"{path} not group-readable"


def test_sysusers_creates_both_users(tmp_path: Path, require_tool: RequireTool) -> None:
    exe = require_tool("systemd-sysusers", "apt-get install systemd")
    (tmp_path / "etc").mkdir()
    conf = SYSTEMD_DIR / "sysusers.d" / "hostmon.conf"
    proc = subprocess.run([exe, f"--root={tmp_path}", str(conf)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    for user, home in (("hostmon", "/var/lib/hostmon"), ("hostmon-ingest", "/var/lib/hostmon-ingest")):
        assert user in passwd
        assert int(passwd[user][2]) < 1000  # a system user
        assert passwd[user][5] == home
        assert passwd[user][6] == "/usr/sbin/nologin"


def test_tmpfiles_creates_private_state_directories(tmp_path: Path, require_tool: RequireTool) -> None:
    sysusers = require_tool("systemd-sysusers", "apt-get install systemd")
    tmpfiles = require_tool("systemd-tmpfiles", "apt-get install systemd")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD_DIR / "sysusers.d" / "hostmon.conf")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    proc = subprocess.run(
        [tmpfiles, "--create", f"--root={tmp_path}", str(SYSTEMD_DIR / "tmpfiles.d" / "hostmon.conf")],
        check=False, capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    uids = {line.split(":")[0]: int(line.split(":")[2]) for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    gids = {line.split(":")[0]: int(line.split(":")[2]) for line in (tmp_path / "etc/group").read_text().splitlines()}
    for name, user in (("hostmon", "hostmon"), ("hostmon-ingest", "hostmon-ingest")):
        st = (tmp_path / "var/lib" / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o700
        assert st.st_uid == uids[user]
    # the TLS directories: root's (the service cannot swap its own certificate), readable by the service's group only
    for unit_name, tls_dir in TLS_DIRS.items():
        group = one(parse_unit(SYSTEMD_DIR / unit_name), "Service.Group")
        st = (tmp_path / tls_dir.lstrip("/")).stat()
        assert (st.st_uid, st.st_gid) == (0, gids[group]), tls_dir
        assert stat.S_IMODE(st.st_mode) == 0o750, tls_dir


DROP_INS = sorted(p.name for p in (SYSTEMD_DIR / "examples").glob("*.conf"))


@pytest.mark.parametrize("name", DROP_INS)
def test_example_drop_in_verifies_and_keeps_exposure_at_most_2(
    name: str, tmp_path: Path, require_tool: RequireTool
) -> None:
    """Each optional drop-in (systemd/examples/), merged the way systemd merges it."""
    exe = require_tool("systemd-analyze", "apt-get install systemd")
    unit = unit_copy_with_stub_binary(tmp_path, "hostmon.service")
    dropin = unit.parent / "hostmon.service.d" / name
    dropin.parent.mkdir()
    dropin.write_text((SYSTEMD_DIR / "examples" / name).read_text())
    proc = subprocess.run([exe, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    proc = subprocess.run(
        [exe, "security", "--offline=true", "--no-pager", str(unit)], check=False, capture_output=True, text=True, timeout=60
    )
    # the drop-in was applied
    if name == "process-fds.conf":
        assert re.search(r"✗ CapabilityBoundingSet=~CAP_\(DAC_\*", proc.stdout), proc.stdout
    if name == "gpu.conf":
        assert re.search(r"✗ PrivateDevices=", proc.stdout), proc.stdout
    assert exposure(exe, unit) <= MAX_EXPOSURE
    assert exposure(exe, SYSTEMD_DIR / "hostmon.service") < exposure(exe, unit)


@pytest.mark.parametrize("name", UNITS)
def test_sandbox_leaves_the_tls_directory_readable(name: str) -> None:
    """ProtectSystem= makes /etc read-only, never unreadable; no directive of the unit or of an
    example drop-in hides the TLS directory, and the directory's group is the service's."""
    tls_dir = TLS_DIRS[name]
    units = [SYSTEMD_DIR / name] + (sorted((SYSTEMD_DIR / "examples").glob("*.conf")) if name == "hostmon.service" else [])
    for path in units:
        u = parse_unit(path)
        assert u.get("Service.ProtectSystem", ["strict"])[-1] in ("strict", "full", "yes", "no"), path
        for key in ("InaccessiblePaths", "TemporaryFileSystem", "RootDirectory", "RootImage", "BindPaths"):
            for value in u.get(f"Service.{key}", []):
                for hidden in value.split():
                    hidden = hidden.lstrip("-+").split(":")[0]
                    assert not (tls_dir + "/").startswith(hidden.rstrip("/") + "/"), f"{path.name}: {key}={value}"
    tmpfiles = (SYSTEMD_DIR / "tmpfiles.d" / "hostmon.conf").read_text()
    group = one(parse_unit(SYSTEMD_DIR / name), "Service.Group")
    assert re.search(rf"^d\s+{re.escape(tls_dir)}\s+0750\s+root\s+{re.escape(group)}\s", tmpfiles, re.MULTILINE), tls_dir


def test_units_set_a_file_descriptor_limit_the_servers_are_sized_for() -> None:
    """Issue 12: without LimitNOFILE, 1,100 idle connections took every descriptor (systemd's soft default is
    1024, and @resources forbids raising it). Each unit's limit must leave web.max_connections (the default)
    whole, with the quarter hostmond.web.listen keeps for the rest."""
    from hostmond.web.config import WebConfig
    from hostmond.web.listen import connection_limit

    default = WebConfig().max_connections
    for name in UNITS:
        unit = parse_unit(REPO / "systemd" / name)
        nofile = int(one(unit, "Service.LimitNOFILE"))
        assert connection_limit(default, nofile) == default, (name, nofile)
