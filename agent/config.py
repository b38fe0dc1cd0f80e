"""Config: one TOML file, validated against dataclasses, overridden by ``HOSTMON_*`` variables.

Every section is a dataclass whose fields carry a one-sentence help
(``agent.api.field``). :func:`load_dataclass` turns a TOML table into an
instance, rejecting unknown keys and bad values with :class:`ConfigError`
naming the file, the dotted key and the reason. :func:`sample_config` writes the
sample config (every key at its default, a sentence on each) from the same
dataclasses, so the sample can never drift from the code.

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
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

from agent.api import field
from agent.errors import ConfigError
from agent.shipping.config import ShippingConfig
from agent.tenancy import TenantRule, validate_tenant_id
from agent.web.config import WebConfig

ENV_PREFIX = "HOSTMON_"
_ENV_ALIASES = {
    "TENANT_ID": ("tenant_id",),
    "LISTEN": ("http", "listen"),
    "LOG_LEVEL": ("log_level",),
    "STATE_DIR": ("state_dir",),
}
# Variables that are not config keys.
_ENV_IGNORED = {"HOSTMON_INGEST_FAULT"}

LOG_LEVELS = ("debug", "info", "warning", "error")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class EnvValue(str):
    """A value that came from an environment variable: parsed by the field's type."""

    source: str = ""


def _default_state_dir() -> str:
    if os.environ.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    if os.geteuid() == 0:
        return "/var/lib/hostmon"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hostmon")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); raises ValueError."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value)
    if not m:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host or "0.0.0.0", port


def _check_listen(v: str) -> None:
    parse_listen(v)


def _check_positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be greater than 0")


def _check_fraction(v: float) -> None:
    if not 0 <= v <= 0.5:
        raise ValueError("must be between 0 and 0.5")


def _check_level(v: str) -> None:
    if v.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")


def _check_tenant(v: str) -> None:
    validate_tenant_id(v)


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
        "127.0.0.1:9435",
        "Address of the /metrics, /healthz and /readyz server; loopback by default, 0.0.0.0:9435 to let other hosts scrape.",
        check=_check_listen,
    )


@dataclasses.dataclass
class RuntimeConfig:
    interval: float = field(15.0, "Default seconds between two collections of one collector.", check=_check_positive)
    timeout: float = field(5.0, "Default seconds a collection may run before it is abandoned and counted as a timeout.", check=_check_positive)
    jitter: float = field(0.1, "Random spread of each collector's schedule, as a fraction of its interval (0 to 0.5).", check=_check_fraction)


@dataclasses.dataclass
class PathsConfig:
    proc_root: str = field("/proc", "Where the host's /proc is mounted (/host/proc in a container).")
    sys_root: str = field("/sys", "Where the host's /sys is mounted (/host/sys in a container).")
    rootfs: str = field("/", "Where the host's root filesystem is mounted (/host in a container).")


@dataclasses.dataclass
class Config:
    tenant_id: str = field("default", "Tenant every sample and event belongs to unless a tenant rule says otherwise.", check=_check_tenant)
    state_dir: str = field(
        "",
        "Directory for persisted state (log positions, keys, spool); empty means $STATE_DIRECTORY, /var/lib/hostmon as root, else ~/.local/state/hostmon.",
    )
    log_level: str = field("info", "Least severe log level written to stderr: debug, info, warning or error.", check=_check_level)
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
# generic dataclass loader


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _from_env(tp: Any, raw: EnvValue) -> Any:
    s = str(raw).strip()
    if tp is bool:
        if s.lower() in ("1", "true", "yes", "on"):
            return True
        if s.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{s!r} is not a boolean (true/false)")
    if tp is int:
        return int(s)
    if tp is float:
        return float(s)
    if typing.get_origin(tp) is list:
        return [p.strip() for p in s.split(",") if p.strip()]
    return s


def _convert(tp: Any, value: Any, file: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, file, key)
    if isinstance(value, EnvValue) and not dataclasses.is_dataclass(tp) and typing.get_origin(tp) is not dict:
        try:
            value = _from_env(tp, value)
        except ValueError as e:
            raise ConfigError(value.source or file, key, str(e)) from None
        if typing.get_origin(tp) is list:
            return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(file, key, f"expected a table, got {type(value).__name__}")
        return load_dataclass(value, tp, file, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected {_type_name(tp)}, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(file, key, f"expected a table, got {type(value).__name__}")
        kt, vt = typing.get_args(tp)
        if vt is Any:
            return dict(value)
        return {str(k): _convert(vt, v, file, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(file, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {value!r}")
        return str(value)
    if tp is Any:
        return value
    raise ConfigError(file, key, f"unsupported field type {tp!r}")  # a programming error in a section


def load_dataclass(data: Mapping[str, Any], cls: type, file: str, prefix: str = "") -> Any:
    """Build ``cls`` from a TOML table. Raises ConfigError(file, dotted key, reason)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        f = fields.get(key)
        if f is None:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(file, dotted, f"unknown key (valid keys here: {known})")
        converted = _convert(hints[f.name], value, file, dotted)
        check = f.metadata.get("check")
        if check is not None and converted is not None:
            try:
                check(converted)
            except (ValueError, TypeError) as e:
                src = value.source if isinstance(value, EnvValue) and value.source else file
                raise ConfigError(src, dotted, str(e)) from None
        kwargs[key] = converted
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(file, prefix, str(e)) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise ConfigError(file, prefix, str(e)) from None
    return obj


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
        if not name.startswith(ENV_PREFIX) or name in _ENV_IGNORED:
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
        v = EnvValue(raw)
        v.source = f"environment variable {name}"
        out.append((path, v))
    return out


def load(path: str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override and validate the agent config. ``path=None`` means defaults + environment."""
    environ = os.environ if environ is None else environ
    file = path or "<defaults>"
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(path, "", "file not found") from None
        except PermissionError:
            raise ConfigError(path, "", "permission denied") from None
        except IsADirectoryError:
            raise ConfigError(path, "", "is a directory, not a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(path, "", f"not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(path, "", f"not valid UTF-8: {e}") from None
    for p, v in env_overrides(environ):
        if p[0] == "tags" and len(p) == 2:
            v = EnvValue(str(v))  # tag values stay strings
        _set_path(data, p, v)
    cfg = load_dataclass(data, Config, file)
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


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _emit_table(lines: list[str], cls: type, header: str | None, obj: Any = None) -> None:
    scalars: list[tuple[dataclasses.Field[Any], Any]] = []
    tables: list[tuple[dataclasses.Field[Any], Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or f.metadata.get("raw"):
            continue
        tp = hints[f.name]
        value = getattr(obj, f.name) if obj is not None else _default_of(f)
        if dataclasses.is_dataclass(tp):
            tables.append((f, value))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            tables.append((f, value))
        else:
            scalars.append((f, value))
    if header and (scalars or not tables):
        lines.append(f"[{header}]")
    for f, value in scalars:
        lines.append(f"# {f.metadata.get('help', '')}")
        if value is None:
            lines.append(f"# {f.name} =")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    if scalars:
        lines.append("")
    for f, value in tables:
        tp = hints[f.name]
        name = f"{header}.{f.name}" if header else f.name
        if typing.get_origin(tp) is list:
            item = typing.get_args(tp)[0]
            lines.append(f"# {f.metadata.get('help', '')} Example:")
            lines.append(f"# [[{name}]]")
            for sf in dataclasses.fields(item):
                lines.append(f"# {sf.name} = {_toml_value(_default_of(sf))}    # {sf.metadata.get('help', '')}")
            lines.append("")
        else:
            doc = (tp.__doc__ or "").strip().splitlines()
            if doc and not doc[0].startswith(tp.__name__ + "("):
                lines.append(f"# {doc[0]}")
            _emit_table(lines, tp, name, value)


def sample_config(collector_classes: Mapping[str, type]) -> str:
    """The sample config: every key at its default with its help sentence."""
    lines = [
        "# hostmon agent configuration. Every key is shown at its default.",
        "# Generated by `hostmon config sample`; environment variables HOSTMON_* override (see README).",
        "",
    ]
    _emit_table(lines, Config, None)
    for name in sorted(collector_classes):
        cls = collector_classes[name]
        doc = (cls.__doc__ or "").strip().splitlines()
        lines.append(f"# {doc[0] if doc else name} (on by default: {'yes' if cls.default_enabled else 'no'})")
        _emit_table(lines, cls.config_class, f"collectors.{name}")
    return "\n".join(lines).rstrip() + "\n"
