"""The agent's commands of ``hostmon`` (the parser itself is :mod:`hostmond.cli`).

    hostmon run [--config FILE] [node_exporter flags]  run the daemon (see RUN_FLAGS)
    hostmon check-config FILE                          validate a config; non-zero exit with the reason
    hostmon collect --once [--format prom|json]        print one collection and exit
    hostmon config sample                              print the sample config (every key at its default)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hostmond.agent import config as config_mod
from hostmond.agent.sdnotify import Notifier, run_watchdog

from hostmond import __version__
from hostmond.core import logs
from hostmond.core.errors import ConfigError, HostmonError

log = logging.getLogger("hostmon.cli")

DEFAULT_CONFIG_ENV = "HOSTMON_CONFIG"


def _config_path(arg: str | None) -> str | None:
    return arg or os.environ.get(DEFAULT_CONFIG_ENV) or None


def _load_or_exit(path: str | None, overrides: config_mod.Overrides | None = None) -> config_mod.Config:
    try:
        return config_mod.load(path, os.environ, overrides)
    except ConfigError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# ---------------------------------------------------------------------------
# hostmon run: node_exporter's flags
#
# Each flag sets one config key; flags win over HOSTMON_* variables, which win
# over the TOML file, which wins over the defaults. A bad value is reported as
# "command-line flag --FLAG: KEY: REASON".


@dataclasses.dataclass(frozen=True)
class RunFlag:
    flag: str
    key: tuple[str, ...]
    help: str
    aliases: tuple[str, ...] = ()
    negate: bool = False  # an include regex, given to a collector that only has an exclude key


RUN_FLAGS: tuple[RunFlag, ...] = (
    RunFlag(
        "--web.listen-address",
        ("http", "listen"),
        "HOST:PORT for /metrics (http.listen); ':9100' listens on every IPv4 address like node_exporter",
        ("--listen",),
    ),
    RunFlag("--web.telemetry-path", ("http", "telemetry_path"), "URL path of the metrics page (http.telemetry_path)"),
    RunFlag("--path.procfs", ("paths", "proc_root"), "procfs mount point (paths.proc_root)"),
    RunFlag("--path.sysfs", ("paths", "sys_root"), "sysfs mount point (paths.sys_root)"),
    RunFlag("--path.rootfs", ("paths", "rootfs"), "root file system mount point (paths.rootfs)"),
    RunFlag("--log.level", ("log_level",), "debug, info, warn(ing) or error (log_level)"),
    RunFlag("--log.format", ("log_format",), "logfmt or json (log_format)"),
    RunFlag("--collector.textfile.directory", ("collectors", "textfile", "directory"), "directory of *.prom files (collectors.textfile.directory)"),
    RunFlag(
        "--collector.filesystem.mount-points-exclude",
        ("collectors", "disk", "mount_points_exclude"),
        "regex of mount points to leave out (collectors.disk.mount_points_exclude)",
        ("--collector.filesystem.ignored-mount-points",),
    ),
    RunFlag(
        "--collector.filesystem.fs-types-exclude",
        ("collectors", "disk", "fs_types_exclude"),
        "regex of file system types to leave out (collectors.disk.fs_types_exclude)",
        ("--collector.filesystem.ignored-fs-types",),
    ),
    RunFlag(
        "--collector.diskstats.device-exclude",
        ("collectors", "disk", "device_exclude"),
        "regex of block devices to leave out (collectors.disk.device_exclude)",
        ("--collector.diskstats.ignored-devices",),
    ),
    RunFlag("--collector.diskstats.device-include", ("collectors", "disk", "device_exclude"), "regex of the only block devices to keep", negate=True),
    RunFlag(
        "--collector.netdev.device-exclude",
        ("collectors", "network", "device_exclude"),
        "regex of interfaces to leave out (collectors.network.device_exclude)",
        ("--collector.netdev.ignored-devices",),
    ),
    RunFlag("--collector.netdev.device-include", ("collectors", "network", "device_exclude"), "regex of the only interfaces to keep", negate=True),
    RunFlag(
        "--collector.netclass.ignored-devices",
        ("collectors", "network", "netclass_ignored_devices"),
        "regex of interfaces whose /sys/class/net attributes are left out (collectors.network.netclass_ignored_devices)",
    ),
    RunFlag("--collector.netstat.fields", ("collectors", "netstat", "fields"), "regex of the Proto_Field names reported (collectors.netstat.fields)"),
    RunFlag("--collector.arp.device-include", ("collectors", "arp", "device_include"), "regex of interfaces whose ARP entries are counted (collectors.arp.device_include)"),
    RunFlag("--collector.arp.device-exclude", ("collectors", "arp", "device_exclude"), "regex of interfaces whose ARP entries are left out (collectors.arp.device_exclude)"),
    RunFlag("--collector.systemd.unit-include", ("collectors", "systemd", "unit_include"), "regex of the units reported (collectors.systemd.unit_include)"),
    RunFlag("--collector.systemd.unit-exclude", ("collectors", "systemd", "unit_exclude"), "regex of the units left out (collectors.systemd.unit_exclude)"),
)

# node_exporter collector names that one hostmon collector covers (with others): --collector.NAME turns the
# hostmon collector on; --no-collector.NAME turns it off only when every name it covers is turned off.
COLLECTOR_ALIASES: dict[str, str] = {
    "loadavg": "cpu",
    "stat": "cpu",
    "meminfo": "memory",
    "vmstat": "memory",
    "filesystem": "disk",
    "diskstats": "disk",
    "netdev": "network",
    "netclass": "network",
    "timex": "time",
}

_SWITCH = re.compile(r"--(no-)?collector\.([a-z0-9_]+)")


def _split_switches(argv: Sequence[str]) -> tuple[list[tuple[str, bool]], list[str]]:
    """Pull ``--collector.NAME`` / ``--no-collector.NAME`` out of argv (their names are only known at run time)."""
    switches: list[tuple[str, bool]] = []
    rest: list[str] = []
    for i, a in enumerate(argv):
        if a == "--":
            rest.extend(argv[i:])
            break
        m = _SWITCH.fullmatch(a)
        if m:
            switches.append((m.group(2), m.group(1) is None))
        else:
            rest.append(a)
    return switches, rest


class _RunParser(argparse.ArgumentParser):
    """The ``run`` subcommand's parser: also takes ``--collector.NAME`` and ``--no-collector.NAME``."""

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:  # type: ignore[override]
        switches, rest = _split_switches(list(sys.argv[1:] if args is None else args))
        ns, extras = super().parse_known_args(rest, namespace)
        ns.collector_switches = [*getattr(ns, "collector_switches", []), *switches]
        return ns, extras


def _negate_include(regex: str) -> str:
    """An include regex as an exclude regex: left out is what the include does not find (same search semantics)."""
    return f"^(?!.*(?:{regex}))" if regex else ""


def run_overrides(args: argparse.Namespace, classes: Mapping[str, type] | None = None) -> config_mod.Overrides:
    """The config overrides that ``hostmon run``'s flags ask for. Raises ConfigError naming the flag."""
    ov = config_mod.Overrides()
    given: dict[tuple[str, ...], str] = {}
    for rf in RUN_FLAGS:
        values = getattr(args, _dest(rf.flag), None) or []
        for flag, value in values:
            if rf.key in given:
                why = "given more than once; hostmon takes one value" if given[rf.key] == flag else f"also set by {given[rf.key]}; give one of them"
                raise ConfigError(f"command-line flag {flag}", ".".join(rf.key), why)
            given[rf.key] = flag
            if rf.negate:
                try:
                    re.compile(value)
                except re.error as e:
                    raise ConfigError(f"command-line flag {flag}", ".".join(rf.key), f"{value!r} is not a valid regular expression: {e}") from None
                value = _negate_include(value)
            ov.set(rf.key, value, flag)
    if getattr(args, "web_config_file", None):
        ov.web_config_file = args.web_config_file
    if getattr(args, "disable_defaults", False):
        ov.set(("runtime", "disable_default_collectors"), "true", "--collector.disable-defaults")
    switches = getattr(args, "collector_switches", [])
    if switches:
        if classes is None:
            from hostmond.agent.registry import discover

            classes, _ = discover()
        _apply_switches(ov, switches, classes)
    return ov


# node_exporter collectors that are a setting of one of ours, not a collector of their own:
# --collector.NAME turns the setting (and its collector) on, --no-collector.NAME only the setting off.
COLLECTOR_SETTINGS: dict[str, tuple[str, str]] = {
    "tcpstat": ("network", "tcp_states"),
}


def _apply_switches(ov: config_mod.Overrides, switches: list[tuple[str, bool]], classes: Mapping[str, type]) -> None:
    state: dict[str, tuple[bool, str]] = {}
    for name, on in switches:
        flag = f"--{'' if on else 'no-'}collector.{name}"
        setting = COLLECTOR_SETTINGS.get(name)
        if setting is not None and setting[0] in classes:
            ov.set(("collectors", setting[0], setting[1]), "true" if on else "false", flag)
            if on:
                ov.set(("collectors", setting[0], "enabled"), "true", flag)
            continue
        target = name if name in classes else COLLECTOR_ALIASES.get(name)
        if target is None or target not in classes:
            if on:
                known = ", ".join(sorted(set(classes) | set(COLLECTOR_ALIASES) | set(COLLECTOR_SETTINGS)))
                raise ConfigError(f"command-line flag {flag}", f"collectors.{name}", f"no collector named {name!r} (known: {known})")
            log.warning("no such collector; nothing to turn off", extra={"flag": flag})
            continue
        state[name] = (on, flag)
    targets: dict[str, list[str]] = {}
    for name in state:
        targets.setdefault(name if name in classes else COLLECTOR_ALIASES[name], []).append(name)
    for target, names in targets.items():
        ons = [state[n][1] for n in names if state[n][0]]
        if ons:
            ov.set(("collectors", target, "enabled"), "true", ons[0])
            continue
        covered = {a for a, t in COLLECTOR_ALIASES.items() if t == target}
        offs = {n for n in names if not state[n][0]}
        if target in offs or covered <= offs:
            ov.set(("collectors", target, "enabled"), "false", state[names[0]][1])
        else:
            log.warning(
                "collector stays on: it also covers what was not turned off",
                extra={"collector": target, "turned_off": sorted(offs), "covers": sorted(covered), "hint": f"--no-collector.{target}"},
            )


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace(".", "_").replace("-", "_")


class _Given(argparse.Action):
    """Stores (flag as given, value) pairs, so errors name the flag the user typed."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        items = list(getattr(ns, self.dest, None) or [])
        items.append((option_string or self.dest, values))
        setattr(ns, self.dest, items)


def add_run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--config", "-c", help=f"TOML config file (default: ${DEFAULT_CONFIG_ENV}, else built-in defaults)")
    for rf in RUN_FLAGS:
        r.add_argument(rf.flag, *rf.aliases, dest=_dest(rf.flag), action=_Given, metavar="VALUE", help=rf.help)
    r.add_argument("--web.config.file", dest="web_config_file", metavar="FILE", help="exporter-toolkit web-config.yml; replaces the [web] section")
    r.add_argument(
        "--collector.disable-defaults",
        dest="disable_defaults",
        action="store_true",
        help="run only the collectors turned on by --collector.NAME or enabled = true",
    )
    r.epilog = (
        "--collector.NAME / --no-collector.NAME turn a collector on or off (hostmon's names, or node_exporter's: "
        + ", ".join(f"{a}={t}" for a, t in COLLECTOR_ALIASES.items())
        + ", ".join(f"; {a}={c}.{f}" for a, (c, f) in COLLECTOR_SETTINGS.items())
        + "). Precedence: flags > HOSTMON_* environment > config file > defaults."
    )


def cmd_run(args: argparse.Namespace) -> int:
    from hostmond.agent.runtime import Agent, hung_threads
    from hostmond.core import memory

    memory.limit_arenas()

    path = _config_path(args.config)
    try:
        overrides = run_overrides(args)
    except ConfigError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        return 2
    cfg = _load_or_exit(path, overrides)
    logs.setup(cfg.log_level, fmt=cfg.log_format)
    log.info("starting", extra={"version": __version__, "config": cfg.source, "tenant_id": cfg.tenant_id})

    async def main() -> None:
        check_state_dir(cfg)
        consumers: list[Any] = []
        agent = Agent(cfg, path, consumers, environ=dict(os.environ), overrides=overrides)
        agent.notifier = Notifier.from_env()
        from hostmond.agent.anomaly.stage import make_stage

        stage = make_stage(cfg, agent)
        if stage is not None:
            agent.consumers.append(stage)
        shipper = await _make_shipper(cfg, agent, args.embedded)
        if shipper is not None:
            agent.consumers.append(shipper)
        if agent.notifier is not None:
            agent.add_task(run_watchdog(agent.notifier, agent.healthy), "watchdog")
        await agent.run_forever()

    try:
        asyncio.run(main())
    except HostmonError as e:
        log.error("cannot start", extra={"error": str(e)})
        return 1
    except OSError as e:
        log.error("cannot start", extra={"error": str(e)})
        return 1
    if hung_threads():
        # A collector thread stuck in the kernel (dead NFS) cannot be joined; don't hang the exit.
        log.warning("exiting with collector threads still blocked", extra={"threads": hung_threads()})
        logging.shutdown()
        os._exit(0)
    return 0


def check_state_dir(cfg: config_mod.Config) -> None:
    """Create the state directory 0700, or refuse one another user could write into (ConfigError)."""
    from hostmond.agent.safedir import UnsafeDirError, ensure_private_dir

    try:
        ensure_private_dir(cfg.resolved_state_dir())
    except UnsafeDirError as e:
        raise ConfigError(cfg.source, "state_dir", e.strerror) from None


async def _make_shipper(cfg: config_mod.Config, agent: Any, embedded: Any) -> Any:
    """The shipper (and, with no ingest_url, the embedded ingest), unless shipping is off."""
    if not cfg.shipping.enabled:
        return None
    from hostmond.agent.shipping.runtime import make_shipper

    return await make_shipper(cfg, agent, embedded)


def cmd_check_config(args: argparse.Namespace) -> int:
    from hostmond.agent.registry import discover
    from hostmond.agent.runtime import build_collectors

    cfg = _load_or_exit(args.file)
    classes, plugin_errors = discover()
    _, errs = build_collectors(cfg, classes, persist_state=False)
    bad = 0
    for e in plugin_errors + errs:
        if "no collector named" in e.reason:
            print(f"hostmon: warning: {e}", file=sys.stderr)
        else:
            print(f"hostmon: config error: {e}", file=sys.stderr)
            bad += 1
    from hostmond.agent.shipping.runtime import check_shipping

    try:
        check_shipping(cfg)
    except HostmonError as e:
        print(f"hostmon: config error: {e}", file=sys.stderr)
        bad += 1
    if bad:
        return 2
    print(f"{args.file}: OK")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from hostmond.agent.runtime import Agent

    cfg = _load_or_exit(_config_path(args.config))
    logs.setup(cfg.log_level if args.verbose else "error", fmt=cfg.log_format)
    if not args.once:
        print("hostmon: collect needs --once", file=sys.stderr)
        return 2

    async def main() -> tuple[Agent, list[Any], list[Any]]:
        agent = Agent(cfg, None, [])
        unknown = sorted(set(args.collector or ()) - set(agent.classes))
        if unknown:
            raise ConfigError(None, "--collector", f"no collector named {', '.join(map(repr, unknown))}; "
                              f"installed: {', '.join(sorted(agent.classes))}")
        samples, events = await agent.collect_once(only=args.collector or None)
        for e in agent.plugin_errors:
            print(f"hostmon: warning: {e}", file=sys.stderr)
        return agent, samples, events

    agent, samples, events = asyncio.run(main())
    idle = [r for r in agent.runners if r.unavailable]
    for r in idle:  # said at every log level: asked for a collector and got nothing, the user needs the reason
        print(f"hostmon: {r.name}: nothing to collect on this host: {r.unavailable_reason}", file=sys.stderr)
    if args.format == "json":
        out = {
            "samples": [s.to_dict() for s in samples],
            "events": [e.to_dict() for e in events],
        }
        json.dump(out, sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(agent.collected_text.decode())
    if args.collector and len(idle) == len(agent.runners):
        return 1  # every collector asked for had nothing to collect here
    return 0


def cmd_config_sample(args: argparse.Namespace) -> int:
    from hostmond.agent.registry import discover

    classes, _ = discover()
    sys.stdout.write(config_mod.sample_config(classes))
    return 0


def register_run(sub: Any) -> argparse.ArgumentParser:
    """Add ``hostmon run`` (and node_exporter's flags) to a subparsers action."""
    old = sub._parser_class  # noqa: SLF001 - the run parser takes --collector.NAME switches
    sub._parser_class = _RunParser  # noqa: SLF001
    try:
        r = sub.add_parser(
            "run",
            help="run the agent daemon",
            description="Run the agent. Takes node_exporter's flags; see docs/command-line.md.",
            allow_abbrev=False,
        )
    finally:
        sub._parser_class = old  # noqa: SLF001
    add_run_arguments(r)
    r.set_defaults(func=cmd_run)
    return r


def register(sub: Any, embedded: Any = None) -> None:
    """Add the agent's commands to the ``hostmon`` parser (:mod:`hostmond.cli`).

    ``embedded`` is the embedded ingest ``hostmon run`` ships to when no
    ``shipping.ingest_url`` is set (see :func:`hostmond.agent.shipping.runtime.make_shipper`).
    """
    r = register_run(sub)
    r.set_defaults(embedded=embedded)

    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    o = sub.add_parser("collect", help="run the collectors once and print the result")
    o.add_argument("--once", action="store_true", help="collect once and exit (required)")
    o.add_argument("--format", choices=("prom", "json"), default="prom")
    o.add_argument("--config", "-c")
    o.add_argument("--collector", action="append", help="only this collector (repeatable)")
    o.add_argument("--verbose", "-v", action="store_true", help="log to stderr at the configured level")
    o.set_defaults(func=cmd_collect)

    cf = sub.add_parser("config", help="config helpers")
    cfs = cf.add_subparsers(dest="config_command", required=True)
    s = cfs.add_parser("sample", help="print the sample config")
    s.set_defaults(func=cmd_config_sample)
