"""Validators shared by every config section (``field(..., check=...)``) and by the wire protocol.

Each raises ``ValueError`` with the reason; the config loader adds the file and key.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

TENANT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
LOG_LEVELS = ("debug", "info", "warning", "error")


def check_positive(v: float) -> None:
    """Greater than 0."""
    if v <= 0:
        raise ValueError("must be greater than 0")


def check_not_negative(v: float) -> None:
    """0 or more (0 usually means "no limit")."""
    if v < 0:
        raise ValueError("must be 0 or more")


def check_fraction(v: float) -> None:
    """A jitter fraction: 0 to 0.5."""
    if not 0 <= v <= 0.5:
        raise ValueError("must be between 0 and 0.5")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); raises ValueError. An empty host means all addresses."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value)
    if not m:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host or "0.0.0.0", port


def check_listen(v: str) -> None:
    parse_listen(v)


def check_url(v: str) -> None:
    """Empty (unset), or an http:// or https:// URL with a host."""
    if not v:
        return
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://ingest.example.com:19436")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"bad port: {e}") from None


def check_regex(pattern: str) -> None:
    """``pattern`` compiles as a Python regular expression (empty is allowed: unset)."""
    if pattern:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {e}") from None


def validate_tenant_id(s: str) -> str:
    """Return ``s`` if it is a safe label value (``[A-Za-z0-9_.-]{1,64}``), else raise ValueError saying why."""
    if not isinstance(s, str):
        raise ValueError(f"tenant id must be a string, not {type(s).__name__}")  # noqa: TRY004 - one error type for callers
    if not TENANT_ID_RE.fullmatch(s):
        raise ValueError(
            f"tenant id {s!r} is not allowed: use 1 to 64 characters among letters, digits, '_', '.' and '-'"
        )
    return s


def check_log_level(v: str) -> None:
    if v.lower() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
