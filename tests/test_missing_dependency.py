"""A required library that cannot be imported stops the command at once, naming it and how to install it.

Before, ImportErrors were swallowed: with cryptography unimportable, `hostmon check-config` passed a
config naming a missing ingest key and `hostmon run` silently did not ship. Each case runs the real
command in a fresh interpreter where the library is blocked (``sys.modules[name] = None``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BLOCK = "import sys; sys.modules[{name!r}] = None; from hostmond.cli import main; sys.exit(main({argv!r}))"


def run_without(name: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = BLOCK.format(name=name, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    ("library", "argv"),
    [
        ("cryptography", ["check-config", "{cfg}"]),  # imported when the shipping keys are checked
        ("aiohttp", ["ingest", "run", "--config", "{cfg}"]),  # the ingest's server (the agent does not use it)
        ("msgpack", ["check-config", "{cfg}"]),
    ],
)
def test_a_missing_required_library_is_named_and_the_command_fails(tmp_path: Path, library: str, argv: list[str]) -> None:
    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[shipping]\ningest_url = "https://ingest.example:19436"\n'
                   f'ingest_public_key = "{tmp_path / "missing.pub"}"\n')
    r = run_without(library, [a.format(cfg=cfg) for a in argv], tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert f"required library '{library}' is not installed" in r.stderr and "pip install hostmond" in r.stderr
    assert "Traceback" not in r.stderr


def test_with_the_library_present_the_same_config_is_refused_for_its_missing_key(tmp_path: Path) -> None:
    """The control: the failure above is the library's, not the config's (which is bad for another reason)."""
    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[shipping]\ningest_url = "https://ingest.example:19436"\n'
                   f'ingest_public_key = "{tmp_path / "missing.pub"}"\n')
    r = subprocess.run([sys.executable, "-m", "hostmond.cli", "check-config", str(cfg)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and "missing.pub" in r.stderr and "required library" not in r.stderr


def test_the_agent_needs_no_aiohttp(tmp_path: Path) -> None:
    """`hostmon run` with aiohttp blocked gets as far as the same config's real fault (issue 14: no aiohttp in the agent)."""
    from helpers import free_port

    cfg = tmp_path / "hostmon.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[http]\nlisten = "127.0.0.1:{free_port()}"\n'
                   f'[shipping]\ningest_url = "https://ingest.example:19436"\ningest_public_key = "{tmp_path / "missing.pub"}"\n')
    r = run_without("aiohttp", ["run", "--config", str(cfg)], tmp_path)
    assert r.returncode != 0 and "missing.pub" in r.stderr, (r.returncode, r.stderr[-2000:])
    assert "required library" not in r.stderr and "Traceback" not in r.stderr
