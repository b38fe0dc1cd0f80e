"""Compliance policies: the TOML format, its validation, and the typed result.

Pure: :func:`parse_policy` turns TOML text into a :class:`Policy` or raises
:class:`PolicyError` naming the file, the check id and the key. Only
:func:`load_policy` touches the disk. The format is documented in
``docs/compliance.md``; in short::

    [policy]
    name = "default"            # label value: [a-z0-9_]{1,40}
    title = "hostmon default host baseline"
    version = "1"

    [[check]]
    id = "ssh_root_login"        # unique in the policy: [a-z0-9_]{1,64}
    title = "SSH root login is disabled"
    severity = "high"            # low | medium | high | critical
    cis = "5.2.7"                # optional: CIS section number ...
    cis_title = "Ensure SSH root login is disabled"   # ... and its title
    applies_to = ["debian", "rhel"]   # optional OS families; absent: every host
    rationale = "..."
    remediation = "..."
    kind = "sshd_option"         # one of KINDS below; its keys sit beside the others
    option = "PermitRootLogin"
    op = "in"
    value = ["no"]
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any

SEVERITIES = ("low", "medium", "high", "critical")
FAMILIES = ("debian", "rhel")
OPS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "regex", "none_of")
MISSING = ("pass", "fail", "not_applicable")
_ID = re.compile(r"^[a-z0-9_]{1,64}$")
_POLICY_NAME = re.compile(r"^[a-z0-9_]{1,40}$")

# Common keys of every check table, and whether each is required.
COMMON_KEYS: dict[str, bool] = {
    "id": True,
    "title": True,
    "severity": True,
    "kind": True,
    "rationale": True,
    "remediation": True,
    "cis": False,
    "cis_title": False,
    "applies_to": False,
}

_STR, _STRS, _INT, _BOOL, _VALUE, _MODE = "string", "list of strings", "integer", "boolean", "value", "octal mode string"

# kind -> {key: (type, required)}. Defaults live in the evaluators (checks.py).
KINDS: dict[str, dict[str, tuple[str, bool]]] = {
    "file_exists": {"path": (_STR, True)},
    "file_absent": {"path": (_STR, True)},
    "file_mode": {"path": (_STR, True), "max_mode": (_MODE, True), "missing": (_STR, False)},
    "file_owner": {"path": (_STR, True), "owner": (_STRS, False), "group": (_STRS, False), "missing": (_STR, False)},
    "file_content": {
        "paths": (_STRS, True),
        "pattern": (_STR, True),
        "expect": (_STR, True),
        "missing": (_STR, False),
        "skip_comments": (_BOOL, False),
        "show_line": (_BOOL, False),
    },
    "config_value": {
        "paths": (_STRS, True),
        "key": (_STR, True),
        "op": (_STR, True),
        "value": (_VALUE, True),
        "separator": (_STR, False),
        "default": (_STR, False),
        "missing": (_STR, False),
        "ignore_case": (_BOOL, False),
    },
    "sshd_option": {"option": (_STR, True), "op": (_STR, True), "value": (_VALUE, True)},
    "dir_scan": {
        "roots": (_STRS, True),
        "find": (_STR, True),
        "allow": (_STRS, False),
        "max_entries": (_INT, False),
        "max_depth": (_INT, False),
    },
    "sysctl": {"key": (_STR, True), "op": (_STR, True), "value": (_VALUE, True), "missing": (_STR, False)},
    "kernel_module": {"module": (_STR, True), "expect": (_STR, True)},
    "systemd_unit": {"units": (_STRS, True), "expect": (_STR, True), "process": (_STRS, False)},
    "package": {"packages": (_STRS, True), "expect": (_STR, True)},
    "mount_option": {"mountpoint": (_STR, True), "options": (_STRS, True), "missing": (_STR, False)},
    "command": {"command": (_STR, True), "pattern": (_STR, True), "expect": (_STR, True)},
}

# Allowed values of enumerated keys, per key name.
_ENUMS: dict[str, tuple[str, ...]] = {
    "op": OPS,
    "missing": MISSING,
}
_KIND_ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("file_content", "expect"): ("match", "no_match"),
    ("command", "expect"): ("match", "no_match"),
    ("dir_scan", "find"): ("world_writable", "suid", "sgid", "setid"),
    ("kernel_module", "expect"): ("loaded", "not_loaded", "disabled"),
    ("systemd_unit", "expect"): ("enabled", "active", "enabled_active"),
    ("package", "expect"): ("installed", "absent"),
    ("config_value", "separator"): ("=", "space"),
}


class PolicyError(ValueError):
    """A policy file that cannot be used. ``str()`` reads ``FILE: check ID: KEY: REASON``."""

    def __init__(self, source: str, check_id: str | None, key: str | None, reason: str) -> None:
        self.source = source
        self.check_id = check_id
        self.key = key
        self.reason = reason
        where = [source]
        if check_id is not None:
            where.append(f"check {check_id}")
        if key:
            where.append(key)
        super().__init__(": ".join([*where, reason]))


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    kind: str
    rationale: str
    remediation: str
    cis: str = ""
    cis_title: str = ""
    applies_to: tuple[str, ...] = ()
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    title: str
    version: str
    source: str
    checks: tuple[Check, ...]


def _type_ok(tp: str, v: Any) -> bool:
    if tp == _STR:
        return isinstance(v, str)
    if tp == _STRS:
        return isinstance(v, list) and all(isinstance(x, str) for x in v) and len(v) > 0
    if tp == _INT:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0
    if tp == _BOOL:
        return isinstance(v, bool)
    if tp == _MODE:
        return isinstance(v, str) and re.fullmatch(r"0?[0-7]{3,4}", v) is not None
    if tp == _VALUE:
        if isinstance(v, list):
            return len(v) > 0 and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v)
        return isinstance(v, (str, int)) and not isinstance(v, bool)
    raise AssertionError(tp)


def _check_value_for_op(op: str, value: Any) -> str | None:
    if op in ("in", "not_in", "none_of"):
        return None if isinstance(value, list) else f"op {op!r} needs a list value"
    if isinstance(value, list):
        return f"op {op!r} needs a single value, not a list"
    if op in ("lt", "le", "gt", "ge") and not isinstance(value, int):
        return f"op {op!r} needs an integer value"
    if op == "regex":
        try:
            re.compile(str(value))
        except re.error as e:
            return f"invalid regular expression: {e}"
    return None


def _parse_check(raw: Any, source: str, index: int) -> Check:
    if not isinstance(raw, dict):
        raise PolicyError(source, None, f"check[{index}]", "expected a table")
    cid = raw.get("id")
    if not isinstance(cid, str) or not _ID.match(cid):
        raise PolicyError(source, None, f"check[{index}].id", f"required, letters a-z, digits and '_' (1-64), got {cid!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PolicyError(source, cid, "kind", f"unknown kind {kind!r} (valid kinds: {', '.join(KINDS)})")
    spec = KINDS[kind]
    for key, required in COMMON_KEYS.items():
        if required and key not in raw:
            raise PolicyError(source, cid, key, "required key is missing")
    for key, (_, required) in spec.items():
        if required and key not in raw:
            raise PolicyError(source, cid, key, f"required for kind {kind!r}")
    params: dict[str, Any] = {}
    for key, v in raw.items():
        if key in COMMON_KEYS:
            if key == "applies_to":
                if not isinstance(v, list) or not v or any(x not in FAMILIES for x in v):
                    raise PolicyError(source, cid, key, f"expected a list of OS families from {FAMILIES}, got {v!r}")
            elif not isinstance(v, str) or (COMMON_KEYS[key] and not v.strip()):
                raise PolicyError(source, cid, key, f"expected a non-empty string, got {v!r}")
            continue
        if key not in spec:
            valid = ", ".join(sorted([*COMMON_KEYS, *spec]))
            raise PolicyError(source, cid, key, f"unknown key for kind {kind!r} (valid keys: {valid})")
        tp = spec[key][0]
        if not _type_ok(tp, v):
            raise PolicyError(source, cid, key, f"expected {tp}, got {v!r}")
        allowed = _KIND_ENUMS.get((kind, key)) or _ENUMS.get(key)
        if allowed is not None and v not in allowed:
            raise PolicyError(source, cid, key, f"must be one of {', '.join(allowed)}, not {v!r}")
        if key == "pattern":
            try:
                re.compile(v)
            except re.error as e:
                raise PolicyError(source, cid, key, f"invalid regular expression: {e}") from None
        params[key] = v
    if "op" in params:
        problem = _check_value_for_op(params["op"], params["value"])
        if problem:
            raise PolicyError(source, cid, "value", problem)
    if raw["severity"] not in SEVERITIES:
        raise PolicyError(source, cid, "severity", f"must be one of {', '.join(SEVERITIES)}, not {raw['severity']!r}")
    for key in ("path", "paths", "roots", "mountpoint"):
        vals = params.get(key)
        for p in [vals] if isinstance(vals, str) else (vals or []):
            if not p.startswith("/") or "\x00" in p or "/../" in p + "/":
                raise PolicyError(source, cid, key, f"paths are absolute and without '..' (read under paths.rootfs), got {p!r}")
    if "sysctl" == kind and not re.fullmatch(r"[a-z0-9_.\-/]+", params["key"]):
        raise PolicyError(source, cid, "key", f"not a sysctl name: {params['key']!r}")
    return Check(
        id=cid,
        title=raw["title"],
        severity=raw["severity"],
        kind=kind,
        rationale=raw["rationale"],
        remediation=raw["remediation"],
        cis=raw.get("cis", ""),
        cis_title=raw.get("cis_title", ""),
        applies_to=tuple(raw.get("applies_to", ())),
        params=params,
    )


def parse_policy(text: str, source: str) -> Policy:
    """Parse and validate one policy. Raises PolicyError(file, check id, key, reason)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(source, None, None, f"not valid TOML: {e}") from None
    unknown = set(data) - {"policy", "check"}
    if unknown:
        raise PolicyError(source, None, min(unknown), "unknown top-level key (valid: policy, check)")
    head = data.get("policy")
    if not isinstance(head, dict):
        raise PolicyError(source, None, "policy", "a [policy] table with name, title and version is required")
    for key in ("name", "title", "version"):
        if not isinstance(head.get(key), str) or not head[key]:
            raise PolicyError(source, None, f"policy.{key}", "required string is missing or empty")
    extra = set(head) - {"name", "title", "version"}
    if extra:
        raise PolicyError(source, None, f"policy.{min(extra)}", "unknown key (valid: name, title, version)")
    if not _POLICY_NAME.match(head["name"]):
        raise PolicyError(source, None, "policy.name", f"letters a-z, digits and '_' (1-40), got {head['name']!r}")
    raw_checks = data.get("check")
    if not isinstance(raw_checks, list) or not raw_checks:
        raise PolicyError(source, None, "check", "a policy needs at least one [[check]] table")
    checks: list[Check] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_checks):
        c = _parse_check(raw, source, i)
        if c.id in seen:
            raise PolicyError(source, c.id, "id", "duplicate check id")
        seen.add(c.id)
        checks.append(c)
    return Policy(head["name"], head["title"], head["version"], source, tuple(checks))


def load_policy(path: str) -> Policy:
    """Read and parse one policy file (the only I/O of this module)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(path, None, None, f"cannot read: {e}") from None
    return parse_policy(text, path)


def default_policy_path() -> str:
    """The default policy shipped as package data (next to this module; read with open(), so a file path:
    importlib.resources would give the same path and cost every agent ~1 MB of RSS to import)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies", "default.toml")
