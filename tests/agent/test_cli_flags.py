"""hostmon run's node_exporter flags: their meaning, their precedence over environment and file, and their errors."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from helpers import free_port, hostmon_process, http_get, wait_until

from hostmond.agent import config as config_mod
from hostmond.api import Collector, CollectorConfig
from hostmond.agent.cli import COLLECTOR_ALIASES, run_overrides
from hostmond.cli import build_parser
from hostmond.core.errors import ConfigError
from hostmond.agent.runtime import build_collectors


def _load(argv: list[str], env: dict[str, str] | None = None, file: Path | None = None, classes=None) -> config_mod.Config:
    args = build_parser().parse_args(["run", *argv])
    return config_mod.load(str(file) if file else None, env or {}, run_overrides(args, classes))


def test_flags_beat_environment_which_beats_the_file_which_beats_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "h.toml"
    f.write_text('log_level = "error"\n[http]\nlisten = "127.0.0.1:1001"\n[paths]\nproc_root = "/file/proc"\n')
    assert _load([]).http.listen == "127.0.0.1:19435"
    assert _load([], file=f).http.listen == "127.0.0.1:1001"
    assert _load([], {"HOSTMON_LISTEN": "127.0.0.1:1002"}, f).http.listen == "127.0.0.1:1002"
    cfg = _load(
        ["--web.listen-address=127.0.0.1:1003", "--path.procfs", "/flag/proc", "--log.level=warn"],
        {"HOSTMON_LISTEN": "127.0.0.1:1002", "HOSTMON_PATHS__PROC_ROOT": "/env/proc", "HOSTMON_LOG_LEVEL": "debug"},
        f,
    )
    assert (cfg.http.listen, cfg.paths.proc_root, cfg.log_level) == ("127.0.0.1:1003", "/flag/proc", "warning")
    assert _load(["--listen", "127.0.0.1:1004"], {"HOSTMON_LISTEN": "127.0.0.1:1002"}).http.listen == "127.0.0.1:1004"


def test_each_flag_sets_its_config_key() -> None:
    cfg = _load(
        [
            "--web.telemetry-path=/node/metrics",
            "--path.sysfs=/host/sys",
            "--path.rootfs=/host",
            "--log.format=logfmt",
            "--collector.textfile.directory=/var/lib/prometheus/node-exporter",
            "--collector.filesystem.mount-points-exclude=^/boot",
            "--collector.filesystem.fs-types-exclude=^tmpfs$",
            "--collector.diskstats.device-exclude=^loop",
            "--collector.netdev.device-exclude=^veth",
        ]
    )
    assert cfg.http.telemetry_path == "/node/metrics"
    assert (cfg.paths.sys_root, cfg.paths.rootfs, cfg.log_format) == ("/host/sys", "/host", "logfmt")
    c = cfg.collectors
    assert c["textfile"]["directory"] == "/var/lib/prometheus/node-exporter"
    assert (c["disk"]["mount_points_exclude"], c["disk"]["fs_types_exclude"], c["disk"]["device_exclude"]) == ("^/boot", "^tmpfs$", "^loop")
    assert c["network"]["device_exclude"] == "^veth"
    # node_exporter's older spellings mean the same
    old = _load(["--collector.filesystem.ignored-mount-points=^/x", "--collector.netdev.ignored-devices=^lo$"])
    assert old.collectors["disk"]["mount_points_exclude"] == "^/x" and old.collectors["network"]["device_exclude"] == "^lo$"
    # the families the node_exporter parity collectors added have their node_exporter flags too
    more = _load([
        "--collector.netclass.ignored-devices=^veth",
        "--collector.netstat.fields=^Tcp_",
        "--collector.arp.device-include=^eth",
        "--collector.arp.device-exclude=^docker",
        "--collector.systemd.unit-include=^ssh",
        "--collector.systemd.unit-exclude=^user@",
    ]).collectors
    assert more["network"]["netclass_ignored_devices"] == "^veth" and "device_exclude" not in more["network"]
    assert more["netstat"]["fields"] == "^Tcp_"
    assert (more["arp"]["device_include"], more["arp"]["device_exclude"]) == ("^eth", "^docker")
    assert (more["systemd"]["unit_include"], more["systemd"]["unit_exclude"]) == ("^ssh", "^user@")


@pytest.mark.parametrize("flag", ["--collector.netdev.device-include", "--collector.diskstats.device-include"])
def test_an_include_flag_keeps_only_what_its_regex_finds(flag: str) -> None:
    cfg = _load([f"{flag}=^(eth|sd)[a-z0-9]+$"])
    key = "network" if "netdev" in flag else "disk"
    exclude = re.compile(cfg.collectors[key]["device_exclude"])
    kept = [d for d in ("eth0", "sda", "lo", "veth12ab", "nvme0n1", "xeth0") if not exclude.search(d)]
    assert kept == ["eth0", "sda"]
    with pytest.raises(ConfigError, match="also set by"):
        _load([f"{flag}=^eth", flag.replace("include", "exclude") + "=^lo$"])


def _classes() -> dict[str, type[Collector]]:
    def make(name: str, default: bool) -> type[Collector]:
        return type(name, (Collector,), {"name": name, "default_enabled": default, "config_class": CollectorConfig, "collect": lambda self: []})

    return {n: make(n, d) for n, d in (("cpu", True), ("memory", True), ("disk", True), ("network", True), ("gpu", False), ("textfile", True))}


def _enabled(argv: list[str], file: Path | None = None) -> list[str]:
    classes = _classes()
    cfg = _load(argv, file=file, classes=classes)
    cfg.state_dir = "/nonexistent"
    runners, errs = build_collectors(cfg, classes, persist_state=False)
    assert not [e for e in errs if "no collector named" not in e.reason], errs
    return sorted(r.name for r in runners)


def test_collector_switches_and_disable_defaults(tmp_path: Path) -> None:
    everything = ["cpu", "disk", "memory", "network", "textfile"]
    assert _enabled([]) == everything
    assert _enabled(["--collector.gpu", "--no-collector.cpu"]) == ["disk", "gpu", "memory", "network", "textfile"]
    assert _enabled(["--collector.disable-defaults", "--collector.memory", "--collector.textfile"]) == ["memory", "textfile"]
    # node_exporter's names for what one hostmon collector covers
    assert _enabled(["--collector.disable-defaults", "--collector.meminfo", "--collector.netdev"]) == ["memory", "network"]
    assert _enabled(["--no-collector.filesystem", "--no-collector.diskstats"]) == ["cpu", "memory", "network", "textfile"]
    assert _enabled(["--no-collector.filesystem"]) == everything, "disk also covers diskstats, which was not turned off"
    assert _enabled(["--no-collector.wifi"]) == everything, "turning off a collector hostmon lacks is harmless"
    # disable-defaults changes defaults only: a section that says enabled = true stays on
    f = tmp_path / "h.toml"
    f.write_text("[collectors.cpu]\nenabled = true\n")
    assert _enabled(["--collector.disable-defaults"], f) == ["cpu"]
    f.write_text("[collectors.cpu]\nenabled = false\n")
    assert _enabled(["--collector.cpu"], f) == everything, "the flag wins over the file"
    with pytest.raises(ConfigError) as ei:
        _enabled(["--collector.wifi"])
    assert ei.value.file == "command-line flag --collector.wifi" and "no collector named 'wifi'" in ei.value.reason
    from hostmond.agent.registry import discover

    assert set(COLLECTOR_ALIASES.values()) <= set(discover()[0]), "every alias names an installed collector"
    assert COLLECTOR_ALIASES["timex"] == "time"


def test_tcpstat_is_a_setting_of_network_off_by_default_like_node_exporter(tmp_path: Path) -> None:
    """node_exporter's tcpstat is opt-in (its dump grows with the sockets); here it is network.tcp_states."""
    from hostmond.agent.registry import discover

    classes = {n: c for n, c in discover()[0].items() if n in ("cpu", "network")}

    def network_cfg(argv: list[str]) -> tuple[bool, bool]:
        cfg = _load(argv, classes=classes)
        cfg.state_dir = "/nonexistent"
        runners, _ = build_collectors(cfg, classes, persist_state=False)
        net = next((r for r in runners if r.name == "network"), None)
        return net is not None, bool(net and net.c.config.tcp_states)

    assert network_cfg([]) == (True, False), "off by default"
    assert network_cfg(["--collector.tcpstat"]) == (True, True)
    assert network_cfg(["--collector.disable-defaults", "--collector.tcpstat"]) == (True, True), "turns network on too"
    assert network_cfg(["--no-collector.tcpstat"]) == (True, False), "only the setting goes off, not the network collector"
    assert network_cfg(["--no-collector.netdev", "--no-collector.netclass"]) == (False, False)


@pytest.mark.parametrize(
    ("argv", "env", "source", "key"),
    [
        (["--listen", "19437"], {}, "command-line flag --listen", "http.listen"),
        (["--web.listen-address=nope"], {"HOSTMON_LISTEN": "127.0.0.1:1"}, "command-line flag --web.listen-address", "http.listen"),
        ([], {"HOSTMON_LISTEN": "nope"}, "environment variable HOSTMON_LISTEN", "http.listen"),
        (["--log.level=loud"], {}, "command-line flag --log.level", "log_level"),
        (["--log.format=xml"], {}, "command-line flag --log.format", "log_format"),
        (["--web.telemetry-path=metrics"], {}, "command-line flag --web.telemetry-path", "http.telemetry_path"),
        (["--collector.filesystem.fs-types-exclude=(("], {}, "command-line flag --collector.filesystem.fs-types-exclude", "collectors.disk.fs_types_exclude"),
        (["--listen=127.0.0.1:1", "--web.listen-address=127.0.0.1:2"], {}, "command-line flag --web.listen-address", "http.listen"),
    ],
)
def test_an_error_names_the_flag_or_variable_it_came_from(argv: list[str], env: dict[str, str], source: str, key: str) -> None:
    classes = {"disk": type("disk", (Collector,), {"name": "disk", "config_class": __import__("hostmond.collectors.disk", fromlist=["DiskConfig"]).DiskConfig})}
    with pytest.raises(ConfigError) as ei:
        cfg = _load(argv, env, classes=classes)
        build_collectors(cfg, classes, persist_state=False)
        config_mod.collector_config(cfg, "disk", classes["disk"].config_class)
    assert (ei.value.file, ei.value.key) == (source, key), str(ei.value)


def test_listen_address_in_node_exporter_form() -> None:
    assert config_mod.parse_listen(":9100") == ("0.0.0.0", 9100)
    assert config_mod.parse_listen("[::1]:9100") == ("::1", 9100)


def test_hostmon_run_with_node_exporter_flags_serves_and_logs_as_asked(tmp_path: Path) -> None:
    port = free_port()
    prom = tmp_path / "textfile"
    prom.mkdir()
    args = [
        "run",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.telemetry-path=/node-metrics",
        "--log.format=logfmt",
        "--log.level=info",
        "--collector.disable-defaults",
        "--collector.meminfo",
        "--collector.loadavg",
    ]
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state"), "HOSTMON_SHIPPING__ENABLED": "false", "HOSTMON_CONFIG": ""}
    with hostmon_process(args, env=env) as p:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=60, what="agent ready")
        # renders are coalesced: the body follows the last collection within a moment
        text = wait_until(
            lambda: (b := http_get(f"http://127.0.0.1:{port}/node-metrics"))[0] == 200 and "node_load1" in b[2].decode() and "node_memory_MemTotal_bytes" in b[2].decode() and b[2].decode(),
            timeout=30,
            what="memory and load on /node-metrics",
        )
        assert "node_memory_MemTotal_bytes" in text and "node_load1" in text
        assert "node_filesystem_size_bytes" not in text, "disk is not a default any more"
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 404
        p.terminate()
        p.wait(timeout=20)
        err = p.stderr.read().decode()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and all(re.match(r"^ts=\S+ level=(debug|info|warning|error) logger=\S+ msg=", ln) for ln in lines), err
    assert any(f'address=127.0.0.1:{port}' in ln for ln in lines)
    assert not any(ln.startswith("{") for ln in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


FIXTURE_PROC = Path(__file__).resolve().parents[1] / "collectors" / "fixtures" / "proc"


def test_path_procfs_is_where_the_collectors_read(tmp_path: Path) -> None:
    port = free_port()
    args = ["run", f"--web.listen-address=127.0.0.1:{port}", f"--path.procfs={FIXTURE_PROC}", "--collector.disable-defaults", "--collector.meminfo"]
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state"), "HOSTMON_SHIPPING__ENABLED": "false", "HOSTMON_CONFIG": ""}
    with hostmon_process(args, env=env):
        text = wait_until(
            lambda: (b := http_get(f"http://127.0.0.1:{port}/metrics"))[0] == 200 and "node_memory_MemTotal_bytes{" in b[2].decode() and b[2].decode(),
            timeout=60,
            what="memory metrics",
        )
    line = next(ln for ln in text.splitlines() if ln.startswith("node_memory_MemTotal_bytes{"))
    assert float(line.rsplit(" ", 1)[1]) == 24683656 * 1024, "the fixture's MemTotal, not this machine's"


async def test_a_reload_reads_the_file_again_and_applies_the_flags_over_it(tmp_path: Path) -> None:
    from hostmond.agent.runtime import Agent

    f = tmp_path / "h.toml"
    f.write_text('log_level = "info"\n[http]\nlisten = "127.0.0.1:0"\n[runtime]\ninterval = 60.0\n')
    args = build_parser().parse_args(["run", "--log.level=error", "--collector.disable-defaults", "--collector.memory"])
    ov = run_overrides(args)
    cfg = config_mod.load(str(f), {}, ov)
    cfg.state_dir = str(tmp_path / "state")
    agent = Agent(cfg, str(f), [], environ={}, overrides=ov)
    level = logging.getLogger().level  # reload sets the root level: put it back
    await agent.start()
    try:
        f.write_text(f'log_level = "debug"\nstate_dir = "{tmp_path / "state"}"\n[http]\nlisten = "127.0.0.1:0"\n[runtime]\ninterval = 30.0\n')
        assert await agent.reload()
        assert agent.cfg.runtime.interval == 30.0, "the file was read again"
        assert agent.cfg.log_level == "error", "the flag still wins"
        assert [r.name for r in agent.runners] == ["memory"]
    finally:
        await agent.stop()
        logging.getLogger().setLevel(level)
