"""sshd's messages, one small handler per kind, and the table that dispatches on the first word.

Each ``on_*`` handler gets the parser (for the connection context), the line's
time, host and pid, the connection (or None without a pid), the message, how
many attempts the line stands for (``message repeated``) and the output list it
appends to and returns. :data:`HANDLERS` maps a message's first word to its
handler; :meth:`AuthParser._sshd` is the dispatch. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from hostmond.collectors.auth.records import (
    MAX_USER_LEN,
    AuthFailure,
    normalise_address,
)
from hostmond.collectors.auth.records import clean_user as _clean_user

if TYPE_CHECKING:
    from hostmond.collectors.auth.parse import AuthParser

# -- sshd message shapes ---------------------------------------------------------
_ADDR = r"[\w.:%-]*[.:][\w.:%-]*"
# sshd's own trailer: " from ADDR[ port N[ sshV]]" followed by ": info" or the end of the line.
_TRAILER = re.compile(r" from (" + _ADDR + r")(?: port (\d+)(?: (ssh[12]))?)?(?=: |$)")
_FROM_END = re.compile(r" from (" + _ADDR + r")(?: port (\d+))?$")
_FAILED = re.compile(r"Failed (\S+) for (invalid user |illegal user )?")
_CLOSED = re.compile(r"Connection (closed|reset) by (?:(authenticating|invalid) user (.*) )?(" + _ADDR + r")(?: port (\d+))?( \[preauth\])?$")
_DISCONNECTED = re.compile(r"Disconnected from (?:(authenticating|invalid) user (.*) )?(" + _ADDR + r")(?: port (\d+))?( \[preauth\])?$")
_RECV_DISC = re.compile(r"Received disconnect from ([\w.:%-]+?)(?: port (\d+))?: ?(\d+):")
_DISCONNECTING_USER = re.compile(
    r"Disconnecting (?:invalid|authenticating) user (.*) (" + _ADDR + r") port (\d+): (Too many authentication failures|Change of username or service not allowed.*?)(?: \[preauth\])?$"
)
_DISCONNECTING_TOO_MANY = re.compile(r"Disconnecting: Too many authentication failures(?: for (?:invalid user |illegal user )?(.*?))?(?: \[preauth\])?$")
_USER_NOT_ALLOWED = re.compile(r"User (.*) from (" + _ADDR + r") not allowed because (.+)$")
_USER_NOT_ALLOWED_NOADDR = re.compile(r"User (.*) not allowed because (.+)$")
_ROOT_REFUSED = re.compile(r"ROOT LOGIN REFUSED FROM (" + _ADDR + r")(?: port (\d+))?(?: \[preauth\])?$")
_PAM_SSHD = re.compile(
    r"PAM: (?:[Aa]uthentication (?:failure|error)|User not known to the underlying authentication module) for (?:illegal user |invalid user )?(.*) from (\S+?)(?: via \S+)?$"
)
_PAM_LINE = re.compile(r"(?:pam_\w+(?:\(([\w.-]*):?auth\))?:? |\(pam_\w+\) )authentication failure; (.*)$")
_PAM_FIELDS = re.compile(r".*?ruser=(.*?) rhost=(\S*)(?: +user=(.*?))?(?: \[preauth\])?$")
_CONNECTION_FROM = re.compile(r"Connection from (" + _ADDR + r") port (\d+)")
_CONN_PORT = re.compile(r"(?:Connection from )?(" + _ADDR + r") port (\d+)")
_LTYPE_REMOTE = re.compile(r";Remote: (" + _ADDR + r")-(\d+);")
_TIMEOUT = re.compile(r"Timeout before authentication for (?:connection from )?(" + _ADDR + r")(?: port (\d+))?")
_REFUSED_CONNECT = re.compile(r"refused connect from .*\((" + _ADDR + r")\)$")
_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]?$")
_MAX_EXCEEDED = re.compile(r"maximum authentication attempts exceeded for (invalid user |illegal user )?")
_ACCEPTED = re.compile(r"Accepted \S+ for ")

_METHODS = {
    "password": "password",
    "publickey": "publickey",
    "keyboard-interactive": "keyboard_interactive",
    "keyboard-interactive/pam": "keyboard_interactive",
    "hostbased": "hostbased",
}
# First words of the sshd messages the parser looks at; any other line is dropped before any regex.
MAX_PENDING_USERS = 16


class _Conn:
    """What the parser remembers about one sshd connection (one pid)."""

    __slots__ = ("addr", "host", "keys", "last_time", "max_seen", "noaddr", "pam", "port")

    def __init__(self) -> None:
        self.addr: str | None = None
        self.host: str | None = None
        self.port: int | None = None
        # user -> list[AuthFailure] held back until the connection's outcome is known
        self.pam: dict[str, list[AuthFailure]] = {}  # sshd's PAM failures by user, until sshd's own line
        self.keys: dict[str, list[AuthFailure]] = {}  # publickey/none failures of valid users, until the outcome
        # failures logged before the client address was known
        self.noaddr: list[AuthFailure] = []
        self.max_seen = False
        self.last_time: float | None = None


# One-regex fast paths for the commonest lines; anything unusual falls back to the careful path.
_FAILED_FAST = re.compile(r"Failed (\S+) for (invalid user |illegal user )?(.*) from ([\w.:%-]+) port (\d+) ssh[12]$")
_INVALID_FAST = re.compile(r"(?:Invalid|Illegal) user (.*) from ([\w.:%-]+)(?: port (\d+))?$")
_PAM_SSHD_FAST = re.compile(
    r"pam_unix\(sshd:auth\): authentication failure; logname=\S* uid=\d* euid=\d* tty=\S* ruser=(\S*) rhost=(\S*)(?: +user=(\S+))?$"
)
_QUICK = re.compile(r" from ([\w.:%-]+)(?: port (\d+)(?: ssh[12])?)?$")


def _quick_trailer(text: str) -> tuple[int, str | None, str | None, int | None] | None:
    """The usual line: exactly one " from ", and it ends with "ADDR[ port N[ sshV]]"."""
    i = text.find(" from ")
    if i < 0 or text.find(" from ", i + 6) >= 0:
        return None
    m = _QUICK.match(text, i)
    if m is None:
        return None
    ip, host = normalise_address(m.group(1))
    if ip is None and host is None:
        return None
    p = m.group(2)
    return (i, ip, host, int(p) if p else None)


def _pam_fields(text: str) -> tuple[str, str, str | None]:
    """(ruser, rhost, user) of ``logname=.. uid=.. euid=.. tty=.. ruser=.. rhost=.. [user=..]``.

    ``ruser`` and ``user`` may hold anything; ``rhost`` holds no space. The
    shortest ``ruser`` that lets the rest parse wins, so ``rhost=`` typed inside
    a user name does not move the address.
    """
    text = text.removesuffix(" [preauth]")
    i = text.find(" ruser=")
    if i >= 0 and text.count(" rhost=") == 1 and text.count("user=") <= 2:
        j = text.find(" rhost=", i)
        ruser = text[i + 7 : j]
        rest = text[j + 7 :]
        k = rest.find(" ")
        if k < 0:
            return ruser, rest, None
        tail = rest[k:].lstrip(" ")
        if tail.startswith("user="):
            return ruser, rest[:k], tail[5:]
    m = _PAM_FIELDS.match(text)
    if m is None:
        return "", "", None
    return m.group(1), m.group(2), m.group(3)


# -- one handler per message kind ------------------------------------------------------------
def on_received(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Received disconnect from A port N: CODE: ..." (a preauth disconnect when tagged or code 3/14)."""
    seq = p.seq
    m = _RECV_DISC.match(msg)
    if m is None:
        return out
    a, port_s, code = m.groups()
    preauth = msg.endswith("[preauth]")
    ip, host = normalise_address(a)
    port = int(port_s) if port_s else None
    if conn is not None and (conn.addr != ip or ip is None):
        p._learn(conn, ip, host, port, out)
    if preauth or code in ("3", "14"):
        if conn is not None and (conn.pam or conn.keys or conn.noaddr):
            p._release(conn, out)
        out.append(AuthFailure(t, "sshd", "preauth_disconnect", None, ip, host, port, count, seq))
    return out


def on_pam(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "pam_unix(sshd:auth): authentication failure; ... rhost=A user=U" (also "(pam_unix) ..."): held until sshd's own line."""
    seq = p.seq
    m = _PAM_SSHD_FAST.match(msg)
    if m is not None:
        ruser, rhost, user = m.groups()
    else:
        m = _PAM_LINE.match(msg)
        if m is None:
            return out
        ruser, rhost, user = _pam_fields(m.group(2))
    ip, host = normalise_address(rhost) if rhost else (None, None)
    u = user or ruser or ""
    rec = AuthFailure(t, "sshd", "pam_auth", _clean_user(u) if u else None, ip, host, None, count, seq)
    if conn is None:
        out.append(rec)
        return out
    if ip is not None and conn.addr is None and conn.host is None:
        p._learn(conn, ip, None, None, out)
    if conn.addr is not None:
        rec.source, rec.host = conn.addr, None
    # A different user on the same connection: the earlier users' failures are real.
    pam = conn.pam
    if pam and (len(pam) > 1 or u not in pam):
        for k in [k for k in pam if k != u]:
            out.extend(pam.pop(k))
    lst = pam.setdefault(u, [])
    if len(lst) < 64:
        lst.append(rec)
    else:
        lst[-1].count += count
    return out


def on_failed(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Failed METHOD for [invalid user ]U from A port N sshV"."""
    seq = p.seq
    m = _FAILED_FAST.match(msg)
    if m is not None and " from " not in m.group(3):
        method, inv, user, a, port_s = m.groups()
        invalid = inv is not None
        ip, host = normalise_address(a)
        port = int(port_s)
        if ip is None and host is None:
            return out
    else:
        m = _FAILED.match(msg)
        if m is None:
            return out
        method, invalid = m.group(1), m.group(2) is not None
        rest = msg[m.end():]
        pk = _quick_trailer(rest) or p._pick(rest, conn)
        if pk is None:
            return out
        start, ip, host, port = pk
        user = rest[:start]
    if conn is not None and (conn.addr != ip or ip is None):
        p._learn(conn, ip, host, port, out)
    if len(user) > MAX_USER_LEN or "\x00" in user:
        user = _clean_user(user)
    reason = _METHODS.get(method, "other_method")
    rec = AuthFailure(t, "sshd", reason, user, ip, host, port, count, seq)
    if conn is not None and conn.pam and reason in ("password", "keyboard_interactive"):
        conn.pam = {}  # PAM's line for this attempt was held back; sshd's own line now counts it
    if not invalid and reason in ("publickey", "other_method") and conn is not None:
        # a client offers keys (and "none") before the one that works: hold back until the outcome
        lst = conn.keys.setdefault(user or "", [])
        if len(lst) < MAX_PENDING_USERS * 4 and len(conn.keys) <= MAX_PENDING_USERS:
            lst.append(rec)
        else:
            out.append(rec)
        return out
    out.append(rec)
    return out


def on_invalid_user(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Invalid user U from A [port N]" (older: "Illegal user")."""
    seq = p.seq
    if not (msg.startswith(("Invalid user ", "Illegal user "))):
        return out
    m = _INVALID_FAST.match(msg)
    if m is not None and " from " not in m.group(1):
        user, a, port_s = m.groups()
        ip, host = normalise_address(a)
        if ip is None and host is None:
            return out
        port = int(port_s) if port_s else None
    else:
        rest = msg[13:]
        pk = _quick_trailer(rest) or p._pick(rest, conn)
        if pk is None:
            return out
        start, ip, host, port = pk
        user = rest[:start]
    if conn is not None and (conn.addr != ip or ip is None):
        p._learn(conn, ip, host, port, out)
    out.append(AuthFailure(t, "sshd", "invalid_user", _clean_user(user), ip, host, port, count, seq))
    return out


def on_connection(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Connection closed|reset by [authenticating|invalid user U] A port N [preauth]", or "Connection from A port N"."""
    seq = p.seq
    m = _CLOSED.match(msg)
    if m is not None:
        _kind, _who, user, a, port_s, preauth_tag = m.groups()
        ip, host = normalise_address(a)
        port = int(port_s) if port_s else None
        if conn is not None:
            if conn.addr != ip or ip is None:
                p._learn(conn, ip, host, port, out)
            if conn.pam or conn.keys or conn.noaddr:
                p._release(conn, out)
        if preauth_tag:
            out.append(AuthFailure(t, "sshd", "preauth_closed", _clean_user(user), ip, host, port, count, seq))
        return out
    m = _CONNECTION_FROM.match(msg)
    if m is not None:
        ip, host = normalise_address(m.group(1))
        p._learn(conn, ip, host, int(m.group(2)), out)
    return out


def on_accepted(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Accepted METHOD for U from A port N": what was held back for other users now counts."""
    if conn is not None:
        m = _ACCEPTED.match(msg)
        rest = msg[m.end():] if m else ""
        pk = p._pick(rest, conn)
        user = rest[: pk[0]] if pk else None
        if pk:
            p._learn(conn, pk[1], pk[2], pk[3], out)
        for held in (conn.pam, conn.keys):
            for k, lst in held.items():
                if k != user:
                    out.extend(lst)
        conn.pam, conn.keys = {}, {}
    return out


def on_disconnected(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Disconnected from [authenticating|invalid user U] A port N [preauth]"."""
    seq = p.seq
    m = _DISCONNECTED.match(msg)
    if m is None:
        return out
    _who, user, a, port_s, preauth_tag = m.groups()
    ip, host = normalise_address(a)
    port = int(port_s) if port_s else None
    if conn is not None and (conn.addr != ip or ip is None):
        p._learn(conn, ip, host, port, out)
    if preauth_tag:
        if conn is not None and (conn.pam or conn.keys or conn.noaddr):
            p._release(conn, out)
        out.append(AuthFailure(t, "sshd", "preauth_disconnect", _clean_user(user), ip, host, port, count, seq))
    return out


def on_disconnecting(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Disconnecting invalid user U A port N: Too many authentication failures" and the older "Disconnecting: ..."."""
    seq = p.seq
    m = _DISCONNECTING_USER.match(msg)
    if m is not None:
        user, a, port_s, why = m.groups()
        ip, host = p._resolve_addr(a, msg, conn)
        port = int(port_s)
        p._learn(conn, ip, host, port, out)
        too_many = why.startswith("Too many")
        if too_many and conn is not None and conn.max_seen:
            p._release(conn, out)
            return out  # already counted by "maximum authentication attempts exceeded"
        if conn is not None:
            conn.max_seen = conn.max_seen or too_many
            p._release(conn, out)
        out.append(
            AuthFailure(t, "sshd", "max_attempts" if too_many else "preauth_disconnect", _clean_user(user), ip, host, port, count, seq)
        )
        return out
    m = _DISCONNECTING_TOO_MANY.match(msg)
    if m is not None:
        if conn is not None and conn.max_seen:
            return out
        rec = AuthFailure(t, "sshd", "max_attempts", _clean_user(m.group(1)), None, None, None, count, seq)
        return p._with_conn_addr(conn, rec, out, release=True)
    return out


def on_max_exceeded(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "maximum authentication attempts exceeded for [invalid user ]U from A port N sshV"."""
    seq = p.seq
    m = _MAX_EXCEEDED.match(msg)
    if m is None:
        return out
    rest = msg[m.end():]
    rest = rest.removesuffix(" [preauth]")
    pk = p._pick(rest, conn)
    if pk is None:
        return out
    start, ip, host, port = pk
    if conn is not None and (conn.addr != ip or ip is None):
        p._learn(conn, ip, host, port, out)
    if conn is not None:
        conn.max_seen = True
        p._release(conn, out)
    out.append(AuthFailure(t, "sshd", "max_attempts", _clean_user(rest[:start]), ip, host, port, count, seq))
    return out


def on_user_not_allowed(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "User U from A not allowed because ..." (AllowUsers, DenyUsers, groups, locked)."""
    seq = p.seq
    m = _USER_NOT_ALLOWED.match(msg)
    if m is not None:
        ip, host = normalise_address(m.group(2))
        if ip is None and host is None:
            return out
        p._learn(conn, ip, host, None, out)
        out.append(AuthFailure(t, "sshd", "user_not_allowed", _clean_user(m.group(1)), ip, host, None, count, seq))
        return out
    m = _USER_NOT_ALLOWED_NOADDR.match(msg)
    if m is not None:
        rec = AuthFailure(t, "sshd", "user_not_allowed", _clean_user(m.group(1)), None, None, None, count, seq)
        return p._with_conn_addr(conn, rec, out, release=False)
    return out


def on_root_refused(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "ROOT LOGIN REFUSED FROM A [port N]"."""
    seq = p.seq
    m = _ROOT_REFUSED.match(msg)
    if m is not None:
        ip, host = normalise_address(m.group(1))
        port = int(m.group(2)) if m.group(2) else None
        p._learn(conn, ip, host, port, out)
        out.append(AuthFailure(t, "sshd", "root_refused", "root", ip, host, port, count, seq))
    return out


def on_pam_message(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "PAM: Authentication failure for U from A" (sshd's own PAM message)."""
    seq = p.seq
    m = _PAM_SSHD.match(msg)
    if m is not None:
        ip, host = normalise_address(m.group(2))
        p._learn(conn, ip, host, None, out)
        out.append(AuthFailure(t, "sshd", "pam_auth", _clean_user(m.group(1)), ip, host, None, count, seq))
    return out


def on_bad_identification(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Did not receive identification string from A" and "Bad protocol version identification ... from A"."""
    seq = p.seq
    if msg.startswith(("Did not receive identification string", "Bad protocol version identification")):
        m = _FROM_END.search(msg)
        if m is not None:
            ip, host = normalise_address(m.group(1))
            port = int(m.group(2)) if m.group(2) else None
            p._learn(conn, ip, host, port, out)
            out.append(AuthFailure(t, "sshd", "bad_protocol", None, ip, host, port, count, seq))
    return out


def on_kex_identification(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "kex_exchange_identification: ..." (garbage or an early close instead of an SSH banner)."""
    seq = p.seq
    if "banner line contains invalid characters" in msg or "invalid" in msg or "Connection closed" in msg or "reset" in msg or "banner line too long" in msg or "read:" in msg:
        rec = AuthFailure(t, "sshd", "bad_protocol", None, None, None, None, count, seq)
        return p._with_conn_addr(conn, rec, out, release=False)
    return out


def on_protocol_error(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "banner exchange: Connection from A port N: ...", "ssh_dispatch_run_fatal: Connection from ...", "kex_protocol_error: ..."."""
    seq = p.seq
    i = msg.find("Connection from ")
    if i >= 0:
        m = _CONN_PORT.match(msg, i)
        if m is not None:
            ip, host = normalise_address(m.group(1))
            port = int(m.group(2))
            p._learn(conn, ip, host, port, out)
            out.append(AuthFailure(t, "sshd", "bad_protocol", None, ip, host, port, count, seq))
    return out


def on_unable_to_negotiate(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Unable to negotiate with A port N: no matching ..." (no common algorithm)."""
    seq = p.seq
    if msg.startswith("Unable to negotiate with "):
        m = _CONN_PORT.match(msg, 25)
        if m is not None:
            ip, host = normalise_address(m.group(1))
            port = int(m.group(2))
            p._learn(conn, ip, host, port, out)
            out.append(AuthFailure(t, "sshd", "negotiation_failed", None, ip, host, port, count, seq))
    elif msg.startswith("Unable to negotiate a key exchange method"):
        rec = AuthFailure(t, "sshd", "negotiation_failed", None, None, None, None, count, seq)
        return p._with_conn_addr(conn, rec, out, release=False)
    return out


def on_no_matching(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "no matching cipher found ..." (address known from the connection)."""
    seq = p.seq
    if not (msg.startswith("no matching ") and " found" in msg):
        return out
    rec = AuthFailure(t, "sshd", "negotiation_failed", None, None, None, None, count, seq)
    return p._with_conn_addr(conn, rec, out, release=False)


def on_timeout(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "Timeout before authentication for A [port N]" (LoginGraceTime)."""
    seq = p.seq
    m = _TIMEOUT.match(msg)
    if m is not None:
        ip, host = normalise_address(m.group(1))
        port = int(m.group(2)) if m.group(2) else None
        if conn is not None:
            if conn.addr != ip or ip is None:
                p._learn(conn, ip, host, port, out)
            if conn.pam or conn.keys or conn.noaddr:
                p._release(conn, out)
        out.append(AuthFailure(t, "sshd", "preauth_timeout", None, ip, host, port, count, seq))
    return out


def on_socket_error(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "fatal: Read from socket failed: Connection reset by peer [preauth]" (and Write)."""
    seq = p.seq
    # "fatal: Read from socket failed: Connection reset by peer [preauth]"
    if msg.endswith("[preauth]") and ("Connection reset" in msg or "Broken pipe" in msg or "Connection timed out" in msg):
        rec = AuthFailure(t, "sshd", "preauth_closed", None, None, None, None, count, seq)
        return p._with_conn_addr(conn, rec, out, release=True)
    return out


def on_refused_connect(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "refused connect from NAME (A)" (tcp_wrappers)."""
    seq = p.seq
    m = _REFUSED_CONNECT.search(msg)
    if m is not None:
        ip, host = normalise_address(m.group(1))
        out.append(AuthFailure(t, "sshd", "connection_refused", None, ip, host, None, count, seq))
    return out


def on_ltype_remote(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "SSH: Server;Ltype: ...;Remote: A-N;..." (old SSH.com servers): learns the address."""
    m = _LTYPE_REMOTE.search(msg)
    if m is not None:
        ip, host = normalise_address(m.group(1))
        p._learn(conn, ip, host, int(m.group(2)), out)
    return out


def on_repeated(
    p: AuthParser, t: float | None, hostname: str | None, pid: str | None, conn: _Conn | None, msg: str, count: int,
    out: list[AuthFailure],
) -> list[AuthFailure]:
    """Message: "message repeated N times: [ MSG ]": MSG counted N times."""
    m = _REPEATED.match(msg)
    if m is not None:
        n = int(m.group(1))
        inner = p._sshd(t, hostname, pid, m.group(2), max(1, min(n, 1_000_000)))
        out.extend(inner)
    return out


# The dispatch: a message's first word -> its handler (``pam_*(sshd:auth):`` prefixes go to on_pam too).
HANDLERS: dict[str, Callable[..., list[AuthFailure]]] = {
    "Failed": on_failed,
    "Invalid": on_invalid_user,
    "Illegal": on_invalid_user,
    "Accepted": on_accepted,
    "Connection": on_connection,
    "Received": on_received,
    "Disconnected": on_disconnected,
    "Disconnecting": on_disconnecting,
    "Disconnecting:": on_disconnecting,
    "maximum": on_max_exceeded,
    "User": on_user_not_allowed,
    "ROOT": on_root_refused,
    "PAM:": on_pam_message,
    "(pam_unix)": on_pam,
    "Did": on_bad_identification,
    "Bad": on_bad_identification,
    "kex_exchange_identification:": on_kex_identification,
    "banner": on_protocol_error,
    "ssh_dispatch_run_fatal:": on_protocol_error,
    "kex_protocol_error:": on_protocol_error,
    "Unable": on_unable_to_negotiate,
    "no": on_no_matching,
    "Timeout": on_timeout,
    "Read": on_socket_error,
    "Write": on_socket_error,
    "refused": on_refused_connect,
    "SSH:": on_ltype_remote,
    "message": on_repeated,
}
