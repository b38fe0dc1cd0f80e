"""The config framework shared by the agent and the ingest.

Every section is a dataclass whose fields carry a one-sentence help
(:func:`field`). :func:`load_dataclass` turns a TOML table into an instance,
rejecting unknown keys and bad values with :class:`ConfigError` naming the file,
the dotted key and the reason. :func:`emit_table` writes a sample config (every
key at its default, a sentence on each) from the same dataclasses, so a sample
can never drift from the code. :func:`read_toml` reads a file with the same
errors. Validators for ``check=`` live in :mod:`hostmond.core.validate`.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

from hostmond.core.errors import ConfigError


def field(default: Any, help: str, **kw: Any) -> Any:
    """A config dataclass field with its one-sentence help (used by the sample config).

    ``check=callable`` validates the converted value (raise ValueError with the reason);
    ``raw=True`` keeps a table as given; ``secret=True`` marks a value never to be logged.
    """
    if isinstance(default, (list, dict, set)):
        factory = (lambda d=default: type(d)(d))  # noqa: E731
        return dataclasses.field(default_factory=factory, metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


class EnvValue(str):
    """A value that came from an environment variable or a command-line flag: parsed by the field's type.

    ``source`` says where it came from ("environment variable HOSTMON_LISTEN",
    "command-line flag --web.listen-address"); errors name it instead of the file.
    """

    source: str = ""

    @classmethod
    def make(cls, value: str, source: str) -> EnvValue:
        v = cls(value)
        v.source = source
        return v


# ---------------------------------------------------------------------------
# loader


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



def read_toml(path: str) -> dict[str, Any]:
    """Read a TOML file; every failure is a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
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


# ---------------------------------------------------------------------------
# sample config helpers


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


def emit_table(lines: list[str], cls: type, header: str | None, obj: Any = None) -> None:
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
            emit_table(lines, tp, name, value)
