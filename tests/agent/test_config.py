"""Config: TOML validated against dataclasses; errors name file, key and reason; env overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostmond.agent import config as config_mod

from hostmond.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "hostmon.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file() -> None:
    cfg = config_mod.load(None, {})
    assert cfg.tenant_id == "default"
    assert cfg.http.listen == "127.0.0.1:19435"
    assert cfg.runtime.interval == 15.0 and cfg.runtime.timeout == 5.0
    assert cfg.paths.proc_root == "/proc"
    tags = cfg.resolved_tags()
    assert tags["tenant_id"] == "default" and tags["host"]


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("tenant = 'x'\n", "tenant", "unknown key"),
        ("[http]\nlisten = 'nope'\n", "http.listen", "is not HOST:PORT"),
        ("[runtime]\ninterval = -1\n", "runtime.interval", "must be greater than 0"),
        ("[runtime]\ninterval = 'fast'\n", "runtime.interval", "expected a number"),
        ("[runtime]\njitter = 0.9\n", "runtime.jitter", "between 0 and 0.5"),
        ("tenant_id = 'bad tenant!'\n", "tenant_id", ""),
        ("log_level = 'loud'\n", "log_level", "must be one of"),
        ("[tags]\n'bad-name' = 'x'\n", "tags", "not a valid Prometheus label name"),
        ("[paths]\nproc_root = 3\n", "paths.proc_root", "expected a string"),
    ],
)
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        config_mod.load(path, {})
    e = ei.value
    assert e.file == path and e.key == key
    assert reason in e.reason
    assert str(e).startswith(f"{path}: {key}: ")


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tenant_id = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        config_mod.load(path, {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config_mod.load(str(tmp_path / "none.toml"), {})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "tenant_id = 'from-file'\n[runtime]\ninterval = 10\n")
    env = {
        "HOSTMON_TENANT_ID": "from-env",
        "HOSTMON_LISTEN": "127.0.0.1:1234",
        "HOSTMON_RUNTIME__INTERVAL": "30",
        "HOSTMON_PATHS__PROC_ROOT": "/host/proc",
        "HOSTMON_TAGS__NODE": "worker-3",
        "HOSTMON_COLLECTORS__CPU__ENABLED": "false",
        "UNRELATED": "x",
    }
    cfg = config_mod.load(path, env)
    assert cfg.tenant_id == "from-env"
    assert cfg.http.listen == "127.0.0.1:1234"
    assert cfg.runtime.interval == 30.0
    assert cfg.paths.proc_root == "/host/proc"
    assert cfg.tags == {"node": "worker-3"}
    assert cfg.collectors["cpu"]["enabled"] == "false"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as ei:
        config_mod.load(None, {"HOSTMON_RUNTIME__TIMEOUT": "soon"})
    assert "HOSTMON_RUNTIME__TIMEOUT" in str(ei.value) and "runtime.timeout" in str(ei.value)


def test_collector_section_is_validated_by_the_collector(tmp_path: Path) -> None:
    from hostmond.agent.registry import discover
    from hostmond.agent.runtime import build_collectors

    classes, _ = discover()
    path = write(tmp_path, "[collectors.cpu]\ninterval = 'often'\nbogus = 1\n")
    cfg = config_mod.load(path, {})
    runners, errors = build_collectors(cfg, classes, persist_state=False)
    assert "cpu" not in {r.name for r in runners}, "a collector with a bad section is skipped"
    assert any(e.where == "collectors.cpu" and "collectors.cpu" in e.reason for e in errors)
    assert {"memory"} <= {r.name for r in runners}, "the other collectors still run"


def test_sample_config_is_current_and_loads() -> None:
    """The committed sample config equals `hostmon config sample` and loads cleanly."""
    out = subprocess.run([sys.executable, "-m", "hostmond.cli", "config", "sample"], capture_output=True, text=True, check=True).stdout
    committed = (REPO / "hostmon.example.toml").read_text()
    assert committed == out, "run `hostmon config sample > hostmon.example.toml`"
    cfg = config_mod.load(str(REPO / "hostmon.example.toml"), {})
    assert cfg.tenant_id == "default"
    for line in out.splitlines():
        if line and not line.startswith(("#", "[")):
            assert line.split(" = ")[0].strip(), line


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, "tenant_id = 'acme'\n")
    r = subprocess.run([sys.executable, "-m", "hostmond.cli", "check-config", good], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[runtime]\ntimeout = 0\n")
    r = subprocess.run([sys.executable, "-m", "hostmond.cli", "check-config", str(bad)], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 2
    assert f"{bad}: runtime.timeout: must be greater than 0" in r.stderr
