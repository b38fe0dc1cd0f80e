"""Key files: creation modes, permission refusal, formats, the keys CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hostmond.core import keys
from hostmond.core import keys_cli as cli
from hostmond.core.errors import KeyFileError


def test_agent_identity_files_have_safe_modes_and_the_id_is_the_public_key_id(tmp_path) -> None:
    kf = keys.generate_agent_identity(tmp_path / "k")
    assert stat.S_IMODE(os.stat(kf.private_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o700
    priv = keys.load_private_key(kf.private_path)
    pub = keys.load_public_key(kf.public_path)
    assert priv.alg == "ed25519" and priv.public == pub
    assert kf.key_id == pub.key_id == keys.agent_id_of(pub)
    assert len(kf.key_id) == 16 and int(kf.key_id, 16) >= 0


def test_private_key_created_0600_even_with_a_permissive_umask(tmp_path) -> None:
    old = os.umask(0)
    try:
        kf = keys.generate_ingest_keypair(tmp_path, "x25519")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(kf.private_path).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o700 | 0o004, 0o620])
def test_group_or_other_accessible_private_key_is_refused(tmp_path, mode) -> None:
    kf = keys.generate_agent_identity(tmp_path)
    os.chmod(kf.private_path, mode)
    with pytest.raises(KeyFileError, match="too open"):
        keys.load_private_key(kf.private_path)
    os.chmod(kf.private_path, 0o400)
    assert keys.load_private_key(kf.private_path).key_id == kf.key_id


def test_existing_keys_are_never_overwritten(tmp_path) -> None:
    kf = keys.generate_ingest_keypair(tmp_path)
    before = Path(kf.private_path).read_text()
    with pytest.raises(KeyFileError, match="already exists"):
        keys.generate_ingest_keypair(tmp_path)
    assert Path(kf.private_path).read_text() == before


def test_hybrid_ingest_key_round_trips_through_files(tmp_path) -> None:
    kf = keys.generate_ingest_keypair(tmp_path, "mlkem768-x25519")
    priv = keys.load_private_key(kf.private_path, keys.INGEST_ALGORITHMS)
    pub = keys.load_public_key(kf.public_path)
    assert priv.public == pub and pub.alg == "mlkem768-x25519" and len(pub.raw) == 1216
    assert kf.key_id == pub.key_id


def test_malformed_and_mismatched_key_files_get_clear_errors(tmp_path) -> None:
    bad = tmp_path / "bad.key"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"hostmon-ed25519-private !!!notbase64\n")
    os.close(fd)
    with pytest.raises(KeyFileError, match="base64"):
        keys.load_private_key(bad)
    with pytest.raises(KeyFileError, match="not found"):
        keys.load_private_key(tmp_path / "missing.key")
    kf = keys.generate_agent_identity(tmp_path / "a")
    with pytest.raises(KeyFileError, match="not accepted here"):
        keys.load_public_key(kf.public_path, keys.INGEST_ALGORITHMS)
    with pytest.raises(KeyFileError, match="private key"):
        keys.load_public_key(kf.private_path)
    short = tmp_path / "short.pub"
    short.write_text("hostmon-x25519 AAAA\n")
    with pytest.raises(KeyFileError, match="32 bytes"):
        keys.load_public_key(short)


def test_keys_cli_creates_and_shows_keys(tmp_path, capsys) -> None:
    assert cli.main(["keys", "agent", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    agent_id = out.split()[1]
    assert cli.main(["keys", "ingest", "--dir", str(tmp_path), "--suite", "mlkem768-x25519"]) == 0
    out = capsys.readouterr().out
    assert "mlkem768-x25519" in out
    assert cli.main(["keys", "show", str(tmp_path / "agent.key")]) == 0
    assert f"agent_id {agent_id}" in capsys.readouterr().out
    assert cli.main(["keys", "agent", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    os.chmod(tmp_path / "agent.key", 0o644)
    assert cli.main(["keys", "show", str(tmp_path / "agent.key")]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_keys_cli_runs_as_a_module(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "hostmond.core.keys_cli", "keys", "ingest", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ingest.pub").read_text().startswith("hostmon-x25519 ")


def test_hostmon_keys_command_creates_both_pairs_with_private_halves_0600(tmp_path) -> None:
    """`hostmon keys agent|ingest` through the real `hostmon` command, under a permissive umask."""

    def hostmon(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0); from hostmond.cli import main; sys.exit(main(sys.argv[1:]))", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    r = hostmon("keys", "agent", "--dir", str(tmp_path / "agent"))
    assert r.returncode == 0, r.stderr
    agent_id = r.stdout.split()[1]
    r = hostmon("keys", "ingest", "--dir", str(tmp_path / "ingest"), "--suite", "mlkem768-x25519")
    assert r.returncode == 0, r.stderr
    for d, name in (("agent", "agent"), ("ingest", "ingest")):
        assert stat.S_IMODE(os.stat(tmp_path / d / f"{name}.key").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / d / f"{name}.pub").st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / d).st_mode) == 0o700
    assert keys.load_private_key(tmp_path / "agent" / "agent.key").key_id == agent_id
    assert keys.load_private_key(tmp_path / "ingest" / "ingest.key").alg == "mlkem768-x25519"
    r = hostmon("keys", "show", str(tmp_path / "agent" / "agent.pub"))
    assert r.returncode == 0 and f"agent_id {agent_id}" in r.stdout
