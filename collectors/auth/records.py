"""The failed-login record and its vocabulary, shared by every reader of the auth collector.

No I/O. :class:`AuthFailure` is what the parsers (:mod:`.parse`, :mod:`.sshd`,
:mod:`.btmp`) produce; the services and reasons are a fixed vocabulary (label
values are never taken from the log), and addresses are validated here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

# -- vocabulary ----------------------------------------------------------------
SERVICES: tuple[str, ...] = ("sshd", "su", "sudo", "login", "pam")
REASONS: tuple[str, ...] = (
    "password",  # wrong password (sshd "Failed password", su, sudo, login)
    "publickey",  # sshd "Failed publickey" (invalid user, or a connection that never authenticated)
    "keyboard_interactive",  # sshd "Failed keyboard-interactive[/pam]"
    "hostbased",  # sshd "Failed hostbased"
    "other_method",  # sshd "Failed none|gssapi-with-mic|unknown ..."
    "invalid_user",  # sshd "Invalid user X from A"
    "user_not_allowed",  # sshd AllowUsers/DenyUsers/groups/locked account; sudo "user NOT in sudoers"
    "root_refused",  # sshd "ROOT LOGIN REFUSED"
    "pam_auth",  # a PAM module reported an authentication failure
    "max_attempts",  # too many authentication failures on one connection
    "preauth_closed",  # connection closed/reset before authentication
    "preauth_disconnect",  # client disconnected before authentication
    "preauth_timeout",  # LoginGraceTime expired
    "bad_protocol",  # no/invalid identification string, banner/kex/MAC garbage
    "negotiation_failed",  # no common cipher/kex/MAC/host key type
    "connection_refused",  # tcp_wrappers "refused connect"
    "btmp",  # a record in /var/log/btmp (lastb)
)

SSHD_PROGRAMS = frozenset(("sshd", "sshd-session", "sshd-auth"))
SERVICE_OF_PROGRAM = {"sshd": "sshd", "sshd-session": "sshd", "sshd-auth": "sshd", "su": "su", "sudo": "sudo", "login": "login"}
# Programs that log their own failure line next to PAM's: PAM's line is not counted again.
SELF_LOGGING = frozenset(("su", "sudo", "login"))

MAX_USER_LEN = 128  # user names longer than this are cut (sshd itself cuts at 100)
MAX_HOST_LEN = 253


class AuthFailure:
    """One failed authentication. ``source`` is a validated IP address (IPv4-mapped IPv6 folded
    to IPv4), ``host`` a host name when the log gave a name instead; ``count`` > 1 when one
    line stands for several attempts (``message repeated``, sudo's ``3 incorrect password attempts``)."""

    __slots__ = ("count", "host", "port", "reason", "seq", "service", "source", "time", "user")

    def __init__(
        self,
        time: float | None,
        service: str,
        reason: str,
        user: str | None = None,
        source: str | None = None,
        host: str | None = None,
        port: int | None = None,
        count: int = 1,
        seq: int = 0,
    ) -> None:
        self.time = time
        self.service = service
        self.reason = reason
        self.user = user
        self.source = source
        self.host = host
        self.port = port
        self.count = count
        self.seq = seq

    def key(self) -> tuple[Any, ...]:
        return (self.time, self.service, self.reason, self.user, self.source, self.host, self.port, self.count)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthFailure) and self.key() == other.key()

    def __repr__(self) -> str:
        return (
            f"AuthFailure(time={self.time!r}, service={self.service!r}, reason={self.reason!r}, user={self.user!r}, "
            f"source={self.source!r}, host={self.host!r}, port={self.port!r}, count={self.count})"
        )


# -- addresses -----------------------------------------------------------------
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")
_addr_cache: dict[str, tuple[str | None, str | None]] = {}


def normalise_address(token: str) -> tuple[str | None, str | None]:
    """``(ip, None)`` for an IP literal, ``(None, name)`` for a plausible host name, else ``(None, None)``."""
    hit = _addr_cache.get(token)
    if hit is not None:
        return hit
    out: tuple[str | None, str | None]
    t = token.strip("[]")
    if "%" in t:  # IPv6 zone index
        t = t.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        out = (None, token) if len(token) <= MAX_HOST_LEN and _HOSTNAME.fullmatch(token) else (None, None)
    else:
        if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
            ip = ip.ipv4_mapped  # type: ignore[union-attr]
        out = (str(ip), None)
    if len(_addr_cache) > 8192:
        _addr_cache.clear()
    _addr_cache[token] = out
    return out


def clean_user(u: str | None) -> str | None:
    if u is None:
        return None
    if len(u) > MAX_USER_LEN:
        u = u[:MAX_USER_LEN]
    if "\x00" in u:
        u = u.replace("\x00", "\\0")
    return u

