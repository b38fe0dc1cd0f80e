"""Config: one TOML file, validated against dataclasses, overridden by ``HOSTMON_*`` variables.

Every section is a dataclass whose fields carry a one-sentence help
(``hostmond.core.config.field``). :func:`hostmond.core.config.load_dataclass` turns a TOML table into an
instance, rejecting unknown keys and bad values with :class:`ConfigError`
naming the file, the dotted key and the reason. :func:`sample_config` writes the
sample config (every key at its default, a sentence on each) from the same
dataclasses, so the sample can never drift from the code.

Precedence, highest first: command-line flags (``hostmon run --web.listen-address``
...; see :data:`hostmond.agent.cli.RUN_FLAGS`), then environment variables, then the
TOML file, then the defaults. A value from a flag or a variable is an
:class:`~hostmond.core.config.EnvValue` that remembers where it came from, so a bad
one is blamed on its flag or variable, not on the file.

Environment overrides, applied over the file:

* ``HOSTMON_TENANT_ID`` -> ``tenant_id``, ``HOSTMON_LISTEN`` -> ``http.listen``,
  ``HOSTMON_LOG_LEVEL`` -> ``log_level``, ``HOSTMON_STATE_DIR`` -> ``state_dir``;
* ``HOSTMON_<SECTION>__<KEY>`` (double underscore between levels), e.g.
  ``HOSTMON_PATHS__PROC_ROOT=/host/proc``, ``HOSTMON_TAGS__NODE=worker-3``,
  ``HOSTMON_COLLECTORS__CPU__INTERVAL=30``. Lists are comma-separated.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.tenancy import TenantRule

from hostmond.core.config import EnvValue, emit_table, field, load_dataclass, read_toml
from hostmond.core.errors import ConfigError
from hostmond.core.validate import (
    LOG_LEVELS,
    check_fraction,
    check_listen,
    check_log_level,
    check_positive,
    parse_listen,
    validate_tenant_id,
)
from hostmond.web.config import WebConfig, load_web_yaml

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Config",
    "ConfigError",
    "EnvValue",
    "Overrides",
    "collector_config",
    "load",
    "load_dataclass",
    "parse_listen",
    "sample_config",
]

ENV_PREFIX = "HOSTMON_"
_ENV_ALIASES = {
    "TENANT_ID": ("tenant_id",),
    "LISTEN": ("http", "listen"),
    "LOG_LEVEL": ("log_level",),
    "STATE_DIR": ("state_dir",),
}

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
LOG_LEVEL_ALIASES = {"warn": "warning"}  # node_exporter's --log.level spelling
LOG_FORMATS = ("json", "logfmt")


def _check_level(v: str) -> None:
    if v.lower() not in LOG_LEVEL_ALIASES:
        check_log_level(v)


def _check_log_format(v: str) -> None:
    if v not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")


def _check_url_path(v: str) -> None:
    if not v.startswith("/") or any(c in v for c in "?#\n \"'<>") or v in ("/healthz", "/readyz", "/"):
        raise ValueError("must be an absolute URL path such as /metrics (not /, /healthz or /readyz), without query or spaces")


def _default_state_dir() -> str:
    if os.environ.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    if os.geteuid() == 0:
        return "/var/lib/hostmon"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hostmon")


def _check_tags(v: dict[str, str]) -> None:
    for k, val in v.items():
        if not _LABEL_NAME.match(k) or k.startswith("__"):
            raise ValueError(f"tag name {k!r} is not a valid Prometheus label name")
        if k == "tenant_id":
            raise ValueError("tenant_id is set with the top-level tenant_id key, not as a tag")
        if len(val) > 256 or "\n" in val:
            raise ValueError(f"tag {k}: value must be one line of at most 256 characters")


@dataclasses.dataclass
class HttpConfig:
    listen: str = field(
        "127.0.0.1:19435",
        "Address of the /metrics, /healthz and /readyz server; loopback by default, 0.0.0.0:19435 to let other hosts scrape.",
        check=check_listen,
    )
    telemetry_path: str = field("/metrics", "URL path of the metrics page (node_exporter's --web.telemetry-path).", check=_check_url_path)
    host_label: bool = field(
        False,
        "Also put the 'host' tag on /metrics; off by default because Prometheus' own 'instance' label names the target (shipped batches always carry 'host').",
    )


@dataclasses.dataclass
class RuntimeConfig:
    interval: float = field(15.0, "Default seconds between two collections of one collector.", check=check_positive)
    timeout: float = field(5.0, "Default seconds a collection may run before it is abandoned and counted as a timeout.", check=check_positive)
    jitter: float = field(0.1, "Random spread of each collector's schedule, as a fraction of its interval (0 to 0.5).", check=check_fraction)
    disable_default_collectors: bool = field(
        False,
        "Run only the collectors whose section says enabled = true (node_exporter's --collector.disable-defaults).",
    )


@dataclasses.dataclass
class PathsConfig:
    proc_root: str = field("/proc", "Where the host's /proc is mounted (/host/proc in a container).")
    sys_root: str = field("/sys", "Where the host's /sys is mounted (/host/sys in a container).")
    rootfs: str = field("/", "Where the host's root filesystem is mounted (/host in a container).")


@dataclasses.dataclass
class Config:
    tenant_id: str = field("default", "Tenant every sample and event belongs to unless a tenant rule says otherwise.", check=validate_tenant_id)
    state_dir: str = field(
        "",
        "Directory for persisted state (log positions, keys, spool); empty means $STATE_DIRECTORY, /var/lib/hostmon as root, else ~/.local/state/hostmon.",
    )
    log_level: str = field("info", "Least severe log level written to stderr: debug, info, warning or error.", check=_check_level)
    log_format: str = field("json", "Log line format on stderr: json (one object per line) or logfmt (node_exporter's).", check=_check_log_format)
    tags: dict[str, str] = field({}, "Static labels added to every sample and event; 'host' defaults to this machine's host name.", check=_check_tags)
    http: HttpConfig = dataclasses.field(default_factory=HttpConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    tenant_rules: list[TenantRule] = field([], "Rules assigning processes to other tenants (by user, cgroup or container id); first match wins.")
    collectors: dict[str, dict[str, Any]] = field({}, "Per-collector sections, [collectors.NAME].", raw=True)
    shipping: ShippingConfig = dataclasses.field(default_factory=ShippingConfig)
    web: WebConfig = dataclasses.field(default_factory=WebConfig)

    # filled by load(): not config keys
    source: str = dataclasses.field(default="<defaults>", metadata={"internal": True})

    def resolved_state_dir(self) -> str:
        return self.state_dir or _default_state_dir()

    def resolved_tags(self) -> dict[str, str]:
        """Static tags with the host default and ``tenant_id`` applied."""
        tags = dict(self.tags)
        tags.setdefault("host", socket.gethostname())
        tags["tenant_id"] = self.tenant_id
        return tags


# Tables whose keys are data, not config keys (user names, header names): compared as one value.
_OPAQUE_TABLES = frozenset({"basic_auth_users", "headers"})
MAX_CHANGED_KEYS = 100


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if not f.metadata.get("internal"):
                _flatten(getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name, out)
        return
    if isinstance(obj, dict) and prefix.rsplit(".", 1)[-1] not in _OPAQUE_TABLES:
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
        return
    if isinstance(obj, list) and any(dataclasses.is_dataclass(x) for x in obj):
        out[prefix] = [dataclasses.asdict(x) for x in obj]
        return
    out[prefix] = obj


def changed_keys(old: Any, new: Any) -> list[str]:
    """Dotted config keys whose values differ between two loaded configs (added and removed ones too).

    Only names: the values are never returned, so a changed password hash or token file shows as
    ``web.basic_auth_users`` and nothing more. Used for the agent's ``config_change`` event.
    """
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


# ---------------------------------------------------------------------------
# the agent config


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    cur = data
    for p in path[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[path[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], EnvValue]]:
    out = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :]
        if rest in _ENV_ALIASES:
            path = _ENV_ALIASES[rest]
        elif "__" in rest:
            parts = rest.split("__")
            # tag names and collector names keep their case rules: lower-case everything
            path = tuple(p.lower() for p in parts)
        else:
            continue  # e.g. HOSTMON_CONFIG handled by the CLI
        out.append((path, EnvValue.make(raw, f"environment variable {name}")))
    return out


@dataclasses.dataclass
class Overrides:
    """What the command line sets over the file and the environment.

    ``values``: (config path, value, flag) triples; ``web_config_file``:
    exporter-toolkit YAML that replaces the whole ``[web]`` section.
    """

    values: list[tuple[tuple[str, ...], str, str]] = dataclasses.field(default_factory=list)
    web_config_file: str | None = None

    def set(self, path: tuple[str, ...], value: str, flag: str) -> None:
        self.values.append((path, value, flag))


def load(path: str | None, environ: Mapping[str, str] | None = None, overrides: Overrides | None = None) -> Config:
    """Read, override and validate the agent config. ``path=None`` means defaults + environment.

    Precedence: ``overrides`` (command-line flags) > ``environ`` (HOSTMON_*) > the file > defaults.
    """
    environ = os.environ if environ is None else environ
    file = path or "<defaults>"
    data: dict[str, Any] = {}
    if path:
        data = read_toml(path)
    for p, v in env_overrides(environ):
        if p[0] == "tags" and len(p) == 2:
            v = EnvValue.make(str(v), v.source)  # tag values stay strings
        _set_path(data, p, v)
    web = None
    if overrides is not None:
        for p, value, flag in overrides.values:
            _set_path(data, p, EnvValue.make(value, f"command-line flag {flag}"))
        if overrides.web_config_file:
            web = load_web_yaml(overrides.web_config_file)
            data.pop("web", None)  # the YAML replaces [web] whole, as node_exporter's file is its whole web config
    cfg = load_dataclass(data, Config, file)
    if web is not None:
        cfg.web = web
    cfg.log_level = LOG_LEVEL_ALIASES.get(cfg.log_level.lower(), cfg.log_level)
    cfg.collectors = {str(k): _plain(v, file, f"collectors.{k}") for k, v in cfg.collectors.items()}
    cfg.source = file
    return cfg


def _plain(v: Any, file: str, key: str) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(file, key, "expected a table [collectors.NAME]")
    return dict(v)


def collector_config(cfg: Config, name: str, cls: type) -> Any:
    """Validate ``[collectors.NAME]`` against the collector's config class."""
    return load_dataclass(cfg.collectors.get(name, {}), cls, cfg.source, f"collectors.{name}")


# ---------------------------------------------------------------------------
# sample config


def sample_config(collector_classes: Mapping[str, type]) -> str:
    """The sample config: every key at its default with its help sentence."""
    lines = [
        "# hostmon agent configuration. Every key is shown at its default.",
        "# Generated by `hostmon config sample`; environment variables HOSTMON_* override (see README).",
        "",
    ]
    emit_table(lines, Config, None)
    for name in sorted(collector_classes):
        cls = collector_classes[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"# {doc[0] if doc else name} (on by default: {'yes' if cls.default_enabled else 'no'})")
        emit_table(lines, cls.config_class, f"collectors.{name}")
    return "\n".join(lines).rstrip() + "\n"
