"""Pure parser of failed logins: log text (or journald entries) in, :class:`AuthFailure` records out.

No I/O here. :class:`AuthParser` keeps a small, bounded per-connection context
(keyed by host, program and pid) because sshd spreads one connection over
several lines, some without the client address. See docs/auth-parsing.md for
the vocabulary (services and reasons), what counts as a failure, and where we
deliberately differ from fail2ban.

Attacker-controlled text (user names, client version strings, disconnect
messages) is never trusted to locate the client address: every shape is
anchored on the part sshd writes itself (the end of the line, or the start when
the address comes first), and an address already known for the connection wins
over any other candidate.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from typing import Any

from hostmond.collectors.auth.timestamps import (
    BsdClock,
    parse_journal_realtime,
    parse_rfc3339,
)

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

    __slots__ = ("time", "service", "reason", "user", "source", "host", "port", "count", "seq")

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


def _clean_user(u: str | None) -> str | None:
    if u is None:
        return None
    if len(u) > MAX_USER_LEN:
        u = u[:MAX_USER_LEN]
    if "\x00" in u:
        u = u.replace("\x00", "\\0")
    return u


# -- headers -------------------------------------------------------------------
_TAG = r"(?:([^\s\[\]:]+)(?:\[(\d+)\])?: |\[([^\]\s]+)\]:? )"
_BSD = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)(?:\.\d+)? (?:([^\s:\[\]]+) )?" + _TAG + r"(.*)", re.S)
_ISO = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)?) (?:([^\s:\[\]]+) )?" + _TAG + r"(.*)", re.S
)
_5424 = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (.*)", re.S)
_FAST_BSD = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?:([^\s:\[\]]+) )?([\w./-]+)(?:\[(\d+)\])?: (.*)", re.S)
_MISS = object()
_TRAIL_WS = ("\n", " ", "\r", "\t")
_SOLARIS_ID = re.compile(r"\[ID \d+ [\w.]+\] ")

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
_PAM_LINE = re.compile(r"(?:pam_\w+(?:\(([\w.-]*):?auth\))?:? |\(pam_unix\) )authentication failure; (.*)$")
_PAM_FIELDS = re.compile(r".*?ruser=(.*?) rhost=(\S*)(?: +user=(.*?))?(?: \[preauth\])?$")
_CONNECTION_FROM = re.compile(r"Connection from (" + _ADDR + r") port (\d+)")
_CONN_PORT = re.compile(r"(?:Connection from )?(" + _ADDR + r") port (\d+)")
_LTYPE_REMOTE = re.compile(r";Remote: (" + _ADDR + r")-(\d+);")
_TIMEOUT = re.compile(r"Timeout before authentication for (?:connection from )?(" + _ADDR + r")(?: port (\d+))?")
_REFUSED_CONNECT = re.compile(r"refused connect from .*\((" + _ADDR + r")\)$")
_REPEATED = re.compile(r"message repeated (\d+) times: \[ ?(.*?)\]?$")
_MAX_EXCEEDED = re.compile(r"maximum authentication attempts exceeded for (invalid user |illegal user )?")
_ACCEPTED = re.compile(r"Accepted \S+ for ")

# -- other services ---------------------------------------------------------------
_SU_FAILED = re.compile(r"(?:FAILED SU \(to (.*?)\) (.*) on (\S+)|FAILED su for (.*?) by (.*))$")
_SUDO_INCORRECT = re.compile(r"\s*(.*?) : (\d+) incorrect password attempts? ;")
_SUDO_NOT_ALLOWED = re.compile(r"\s*(.*?) : (?:user NOT in sudoers|user NOT authorized on host|command not allowed) ;")
_LOGIN_FAILED = re.compile(
    r"(?:FAILED LOGIN \(?(\d+)\)?|TOO MANY LOGIN TRIES \(?(\d+)\)?)"
    r"(?: on '[^']*'(?: from '([^']*)')?| FROM (\S+))? FOR '?(.*?)'?, (.*)$"
)

_METHODS = {
    "password": "password",
    "publickey": "publickey",
    "keyboard-interactive": "keyboard_interactive",
    "keyboard-interactive/pam": "keyboard_interactive",
    "hostbased": "hostbased",
}
# First words of the sshd messages the parser looks at; any other line is dropped before any regex.
_SSHD_FIRST = frozenset(
    (
        "Failed", "Invalid", "Illegal", "Accepted", "Connection", "Received", "Disconnected", "Disconnecting",
        "Disconnecting:", "maximum", "User", "ROOT", "PAM:", "Did", "Bad", "kex_exchange_identification:",
        "banner", "ssh_dispatch_run_fatal:", "kex_protocol_error:", "Unable", "no", "Timeout", "Read", "Write",
        "refused", "SSH:", "message", "(pam_unix)",
    )
)

MAX_PENDING_USERS = 16


class _Conn:
    """What the parser remembers about one sshd connection (one pid)."""

    __slots__ = ("addr", "host", "port", "pam", "keys", "noaddr", "max_seen", "last_time")

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


class AuthParser:
    """Turns log lines (or journald entries) into :class:`AuthFailure` records.

    ``feed(line)`` returns the records decided by that line (possibly records held
    back from earlier lines of the same connection); ``flush()`` returns what is
    still held. Memory is bounded: at most ``max_connections`` connection contexts
    (the oldest is evicted, its held records released; ``evicted`` counts them).
    """

    def __init__(self, now: object = None, tz: Any = None, max_connections: int = 4096) -> None:
        self.clock = BsdClock(now, tz)
        self.tz = tz
        self.max_connections = max(1, int(max_connections))
        self.conns: OrderedDict[tuple[str | None, str], _Conn] = OrderedDict()
        self.seq = 0  # lines (or journal entries) fed so far
        self.unparsed = 0  # lines with no recognisable syslog header
        self.evicted = 0
        self._evicted_out: list[AuthFailure] = []
        self._tcache: dict[str, object] = {}
        # When set (the collector sets it to its clock before feeding a batch), a connection's
        # ``last_time`` is when the parser last READ a line of it, not that line's own time, so
        # ``flush_older_than`` waits for a silent connection, not for an old one in a backlog.
        self.read_time: float | None = None

    # -- entry points ------------------------------------------------------------
    def feed(self, line: str) -> list[AuthFailure]:
        """One log line (without or with its newline) in, zero or more records out."""
        self.seq += 1
        if "\x00" in line:
            line = line.replace("\x00", "\\0")
        # Fast path for the common BSD shape "Mmm dd hh:mm:ss [host] prog[pid]: msg": one regex in C,
        # a timestamp cache keyed by the 15 characters, and sshd lines straight to their handler.
        m = _FAST_BSD.match(line)
        if m is not None:
            ts, hostname, prog, pid, msg = m.groups()
            t = self._tcache.get(ts, _MISS)
            if t is _MISS:
                t = self.clock.convert(ts[0:3], ts[4:6], ts[7:15])
                if len(self._tcache) > 4096:
                    self._tcache.clear()
                self._tcache[ts] = t
            if prog in SSHD_PROGRAMS and msg[-1:] not in _TRAIL_WS and msg[:4] != "[ID ":
                return self._sshd(t, hostname, pid, msg, 1)  # type: ignore[arg-type]
            return self.handle(t, hostname, prog, pid, msg)  # type: ignore[arg-type]
        c0 = line[:1]
        if c0.isalpha():
            m = _BSD.match(line)
            if m is None:
                self.unparsed += 1
                return []
            mon, day, hms, hostname, prog, pid, prog2, msg = m.groups()
            t = self.clock.convert(mon, day, hms)
        elif c0.isdigit():
            m = _ISO.match(line)
            if m is None:
                self.unparsed += 1
                return []
            ts, hostname, prog, pid, prog2, msg = m.groups()
            t = parse_rfc3339(ts, self.tz)
        elif c0 == "<":
            return self._feed_5424(line)
        else:
            self.unparsed += 1
            return []
        return self.handle(t, hostname, prog or prog2, pid, msg)

    def feed_journal(self, entry: dict[str, Any]) -> list[AuthFailure]:
        """One journald entry (``journalctl -o json``) in, records out."""
        self.seq += 1
        msg = entry.get("MESSAGE")
        if isinstance(msg, list):  # journald sends non-UTF-8 messages as a byte array
            try:
                msg = bytes(int(b) & 0xFF for b in msg[:65536]).decode("utf-8", "replace")
            except (TypeError, ValueError):
                return []
        if not isinstance(msg, str):
            return []
        if "\x00" in msg:
            msg = msg.replace("\x00", "\\0")
        prog = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM")
        if not isinstance(prog, str):
            return []
        pid = entry.get("SYSLOG_PID") or entry.get("_PID")
        host = entry.get("_HOSTNAME")
        t = parse_journal_realtime(entry.get("__REALTIME_TIMESTAMP"))
        return self.handle(t, host if isinstance(host, str) else None, prog, str(pid) if pid is not None else None, msg)

    def _feed_5424(self, line: str) -> list[AuthFailure]:
        m = _5424.match(line)
        if m is None:
            self.unparsed += 1
            return []
        _pri, ts, hostname, app, procid, _msgid, rest = m.groups()
        msg = _skip_structured_data(rest)
        if msg is None:
            self.unparsed += 1
            return []
        if msg.startswith("\ufeff"):
            msg = msg[1:]
        t = parse_rfc3339(ts, self.tz) if ts != "-" else None
        return self.handle(
            t, None if hostname == "-" else hostname, app, None if procid == "-" else procid, msg
        )

    # -- persistence of held records across a restart ------------------------------
    def held_count(self) -> int:
        """Records held back, waiting for their connection's outcome."""
        n = 0
        for c in self.conns.values():
            n += sum(len(v) for v in c.pam.values()) + sum(len(v) for v in c.keys.values()) + len(c.noaddr)
        return n

    def export_state(self, limit: int = 4096) -> list[dict[str, Any]]:
        """The connections that hold records back (at most ``limit``, newest kept), as JSON-able
        dicts, so that a restart decides them as this parser would have (nothing lost, nothing
        counted twice)."""
        out: list[dict[str, Any]] = []
        for (hostname, pid), c in reversed(self.conns.items()):
            if not (c.pam or c.keys or c.noaddr):
                continue
            out.append({
                "hostname": hostname, "pid": pid, "addr": c.addr, "host": c.host, "port": c.port,
                "max_seen": c.max_seen, "last_time": c.last_time,
                "pam": {u: [_rec_out(r) for r in lst] for u, lst in c.pam.items()},
                "keys": {u: [_rec_out(r) for r in lst] for u, lst in c.keys.items()},
                "noaddr": [_rec_out(r) for r in c.noaddr],
            })
            if len(out) >= limit:
                break
        out.reverse()
        return out

    def import_state(self, data: Any) -> int:
        """Load what :meth:`export_state` saved; malformed entries are skipped. Returns how many
        connections were restored."""
        if not isinstance(data, list):
            return 0
        n = 0
        for d in data[-self.max_connections:]:
            try:
                pid = d["pid"]
                hostname = d.get("hostname")
                if not isinstance(pid, str) or not (hostname is None or isinstance(hostname, str)):
                    continue
                c = _Conn()
                c.addr = _opt_str(d.get("addr"))
                c.host = _opt_str(d.get("host"))
                port = d.get("port")
                c.port = port if isinstance(port, int) else None
                c.max_seen = bool(d.get("max_seen"))
                lt = d.get("last_time")
                c.last_time = float(lt) if isinstance(lt, (int, float)) else None
                c.pam = {str(u): [r for r in map(_rec_in, lst) if r] for u, lst in dict(d.get("pam") or {}).items()}
                c.keys = {str(u): [r for r in map(_rec_in, lst) if r] for u, lst in dict(d.get("keys") or {}).items()}
                c.noaddr = [r for r in map(_rec_in, list(d.get("noaddr") or [])) if r]
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            c.pam = {u: v for u, v in c.pam.items() if v}
            c.keys = {u: v for u, v in c.keys.items() if v}
            if not (c.pam or c.keys or c.noaddr):
                continue
            self.conns[(hostname, pid)] = c
            n += 1
        return n

    def flush(self) -> list[AuthFailure]:
        """Release every held-back record (end of input, or shutdown)."""
        out: list[AuthFailure] = []
        for conn in self.conns.values():
            self._release(conn, out)
        return out

    def flush_older_than(self, t: float) -> list[AuthFailure]:
        """Release held records of connections not seen since ``t`` (their outcome is no longer coming).

        "Seen" is ``read_time`` at the connection's last line when the caller sets it, else the
        line's own time."""
        out: list[AuthFailure] = []
        for key in list(self.conns):
            conn = self.conns[key]
            if conn.last_time is not None and conn.last_time < t:
                self._release(conn, out)
                del self.conns[key]
        return out

    # -- dispatch ------------------------------------------------------------------
    def handle(self, t: float | None, hostname: str | None, prog: str, pid: str | None, msg: str) -> list[AuthFailure]:
        if msg.endswith(("\n", " ", "\r")):
            msg = msg.rstrip()
        if msg.startswith("[ID "):
            m = _SOLARIS_ID.match(msg)
            if m:
                msg = msg[m.end():]
        if prog in SSHD_PROGRAMS:
            return self._sshd(t, hostname, pid, msg, 1)
        if prog == "sudo":
            return self._sudo(t, msg)
        if prog == "su":
            return self._su(t, msg)
        if prog == "login":
            return self._login(t, msg)
        if "authentication failure" in msg:
            return self._pam_generic(t, prog, msg)
        return []

    # -- sshd ------------------------------------------------------------------------
    def _conn(self, hostname: str | None, pid: str | None, t: float | None) -> _Conn | None:
        if pid is None:
            return None
        key = (hostname, pid)
        conns = self.conns
        conn = conns.get(key)
        if conn is None:
            conn = _Conn()
            conns[key] = conn
            if len(conns) > self.max_connections:
                # oldest connection first (insertion order): sshd connections are short-lived
                _k, old = conns.popitem(last=False)  # O(1), unlike pop(next(iter(dict)))
                self.evicted += 1
                self._release(old, self._evicted_out)
        lt = self.read_time if self.read_time is not None else t
        if lt is not None:
            conn.last_time = lt
        return conn

    @staticmethod
    def _release(conn: _Conn, out: list[AuthFailure]) -> None:
        if conn.pam:
            for lst in conn.pam.values():
                out.extend(lst)
            conn.pam = {}
        if conn.keys:
            for lst in conn.keys.values():
                out.extend(lst)
            conn.keys = {}
        if conn.noaddr:
            for r in conn.noaddr:
                if r.source is None and r.host is None:
                    r.source, r.host = conn.addr, conn.host
                    if r.port is None:
                        r.port = conn.port
            out.extend(conn.noaddr)
            conn.noaddr = []

    def _learn(self, conn: _Conn | None, addr: str | None, host: str | None, port: int | None, out: list[AuthFailure]) -> None:
        """Remember the connection's client address (first one wins) and release address-less records."""
        if conn is None or (addr is None and host is None):
            return
        if conn.addr is None and conn.host is None:
            conn.addr, conn.host, conn.port = addr, host, port
        elif (addr is not None and conn.addr is not None and addr != conn.addr) or (
            host is not None and conn.host is not None and host != conn.host
        ):
            # sshd wrote another client address for this pid: the pid was reused by a new
            # connection. What the old one held back is released; the new one starts clean.
            self._release(conn, out)
            conn.addr, conn.host, conn.port = addr, host, port
            conn.max_seen = False
        elif addr is not None and conn.addr is None:
            conn.addr, conn.port = addr, port
        if conn.noaddr:
            for r in conn.noaddr:
                r.source, r.host = conn.addr, conn.host
                if r.port is None:
                    r.port = conn.port
            out.extend(conn.noaddr)
            conn.noaddr = []

    def _pick(self, text: str, conn: _Conn | None) -> tuple[int, str | None, str | None, int | None] | None:
        """Find sshd's own ``from ADDR port N sshV`` trailer in ``text``.

        Returns (start index of the trailer, ip, host, port). Among candidates that
        end the line or are followed by ``": "`` (sshd's auth info), the most
        complete ones win; among those, the address already known for the
        connection, else the last one (a user name comes before the trailer).
        """
        if text.count(" from ") == 1:
            m = _TRAILER.search(text)
            if m is None:
                return None
            ip, host = normalise_address(m.group(1))
            if ip is None and host is None:
                return None
            p = m.group(2)
            return (m.start(), ip, host, int(p) if p else None)
        best_q = 0
        cands: list[tuple[int, str | None, str | None, int | None]] = []
        for m in _TRAILER.finditer(text):
            ip, host = normalise_address(m.group(1))
            if ip is None and host is None:
                continue
            q = 1 + (m.group(2) is not None) + (m.group(3) is not None)
            port = int(m.group(2)) if m.group(2) else None
            if q > best_q:
                best_q = q
                cands = [(m.start(), ip, host, port)]
            elif q == best_q:
                cands.append((m.start(), ip, host, port))
        if not cands:
            return None
        if len(cands) > 1 and conn is not None and (conn.addr or conn.host):
            for c in cands:
                if (c[1] is not None and c[1] == conn.addr) or (c[2] is not None and c[2] == conn.host):
                    return c
        return cands[-1]

    def _resolve_addr(self, token: str, msg: str, conn: _Conn | None) -> tuple[str | None, str | None]:
        """For shapes where attacker text precedes the address: the connection's known address
        wins when sshd's ``ADDR port`` for it is present in the line."""
        if conn is not None and conn.addr is not None and f" {conn.addr} port " in msg:
            return conn.addr, None
        return normalise_address(token)

    def _sshd(self, t: float | None, hostname: str | None, pid: str | None, msg: str, count: int) -> list[AuthFailure]:
        sp = msg.find(" ")
        first = msg[:sp] if sp > 0 else msg
        if first == "error:" or first == "fatal:":
            msg = msg[sp + 1:]
            sp = msg.find(" ")
            first = msg[:sp] if sp > 0 else msg
        if first not in _SSHD_FIRST and not (first.startswith("pam_") and first.endswith(":auth):")):
            return []
        out: list[AuthFailure] = []
        if pid is None:
            conn = None
        else:
            conn = self.conns.get((hostname, pid))
            if conn is None:
                conn = self._conn(hostname, pid, t)
                if self._evicted_out:
                    out.extend(self._evicted_out)
                    self._evicted_out = []
            else:
                lt = self.read_time if self.read_time is not None else t
                if lt is not None:
                    conn.last_time = lt
        seq = self.seq

        if first == "Received":
            m = _RECV_DISC.match(msg)
            if m is None:
                return out
            a, port_s, code = m.groups()
            preauth = msg.endswith("[preauth]")
            ip, host = normalise_address(a)
            port = int(port_s) if port_s else None
            if conn is not None and (conn.addr != ip or ip is None):
                self._learn(conn, ip, host, port, out)
            if preauth or code in ("3", "14"):
                if conn is not None and (conn.pam or conn.keys or conn.noaddr):
                    self._release(conn, out)
                out.append(AuthFailure(t, "sshd", "preauth_disconnect", None, ip, host, port, count, seq))
            return out

        if first[0] == "p" or first == "(pam_unix)":
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
                self._learn(conn, ip, None, None, out)
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

        if first == "Failed":
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
                pk = _quick_trailer(rest) or self._pick(rest, conn)
                if pk is None:
                    return out
                start, ip, host, port = pk
                user = rest[:start]
            if conn is not None and (conn.addr != ip or ip is None):
                self._learn(conn, ip, host, port, out)
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

        if first == "Invalid" or first == "Illegal":
            if not (msg.startswith("Invalid user ") or msg.startswith("Illegal user ")):
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
                pk = _quick_trailer(rest) or self._pick(rest, conn)
                if pk is None:
                    return out
                start, ip, host, port = pk
                user = rest[:start]
            if conn is not None and (conn.addr != ip or ip is None):
                self._learn(conn, ip, host, port, out)
            out.append(AuthFailure(t, "sshd", "invalid_user", _clean_user(user), ip, host, port, count, seq))
            return out

        if first == "Connection":
            m = _CLOSED.match(msg)
            if m is not None:
                _kind, _who, user, a, port_s, preauth_tag = m.groups()
                ip, host = normalise_address(a)
                port = int(port_s) if port_s else None
                if conn is not None:
                    if conn.addr != ip or ip is None:
                        self._learn(conn, ip, host, port, out)
                    if conn.pam or conn.keys or conn.noaddr:
                        self._release(conn, out)
                if preauth_tag:
                    out.append(AuthFailure(t, "sshd", "preauth_closed", _clean_user(user), ip, host, port, count, seq))
                return out
            m = _CONNECTION_FROM.match(msg)
            if m is not None:
                ip, host = normalise_address(m.group(1))
                self._learn(conn, ip, host, int(m.group(2)), out)
            return out

        if first == "Accepted":
            if conn is not None:
                m = _ACCEPTED.match(msg)
                rest = msg[m.end():] if m else ""
                pk = self._pick(rest, conn)
                user = rest[: pk[0]] if pk else None
                if pk:
                    self._learn(conn, pk[1], pk[2], pk[3], out)
                for held in (conn.pam, conn.keys):
                    for k, lst in held.items():
                        if k != user:
                            out.extend(lst)
                conn.pam, conn.keys = {}, {}
            return out

        if first == "Disconnected":
            m = _DISCONNECTED.match(msg)
            if m is None:
                return out
            _who, user, a, port_s, preauth_tag = m.groups()
            ip, host = normalise_address(a)
            port = int(port_s) if port_s else None
            if conn is not None and (conn.addr != ip or ip is None):
                self._learn(conn, ip, host, port, out)
            if preauth_tag:
                if conn is not None and (conn.pam or conn.keys or conn.noaddr):
                    self._release(conn, out)
                out.append(AuthFailure(t, "sshd", "preauth_disconnect", _clean_user(user), ip, host, port, count, seq))
            return out

        if first == "Disconnecting" or first == "Disconnecting:":
            m = _DISCONNECTING_USER.match(msg)
            if m is not None:
                user, a, port_s, why = m.groups()
                ip, host = self._resolve_addr(a, msg, conn)
                port = int(port_s)
                self._learn(conn, ip, host, port, out)
                too_many = why.startswith("Too many")
                if too_many and conn is not None and conn.max_seen:
                    self._release(conn, out)
                    return out  # already counted by "maximum authentication attempts exceeded"
                if conn is not None:
                    conn.max_seen = conn.max_seen or too_many
                    self._release(conn, out)
                out.append(
                    AuthFailure(t, "sshd", "max_attempts" if too_many else "preauth_disconnect", _clean_user(user), ip, host, port, count, seq)
                )
                return out
            m = _DISCONNECTING_TOO_MANY.match(msg)
            if m is not None:
                if conn is not None and conn.max_seen:
                    return out
                rec = AuthFailure(t, "sshd", "max_attempts", _clean_user(m.group(1)), None, None, None, count, seq)
                return self._with_conn_addr(conn, rec, out, release=True)
            return out

        if first == "maximum":
            m = _MAX_EXCEEDED.match(msg)
            if m is None:
                return out
            rest = msg[m.end():]
            if rest.endswith(" [preauth]"):
                rest = rest[:-10]
            pk = self._pick(rest, conn)
            if pk is None:
                return out
            start, ip, host, port = pk
            if conn is not None and (conn.addr != ip or ip is None):
                self._learn(conn, ip, host, port, out)
            if conn is not None:
                conn.max_seen = True
                self._release(conn, out)
            out.append(AuthFailure(t, "sshd", "max_attempts", _clean_user(rest[:start]), ip, host, port, count, seq))
            return out

        if first == "User":
            m = _USER_NOT_ALLOWED.match(msg)
            if m is not None:
                ip, host = normalise_address(m.group(2))
                if ip is None and host is None:
                    return out
                self._learn(conn, ip, host, None, out)
                out.append(AuthFailure(t, "sshd", "user_not_allowed", _clean_user(m.group(1)), ip, host, None, count, seq))
                return out
            m = _USER_NOT_ALLOWED_NOADDR.match(msg)
            if m is not None:
                rec = AuthFailure(t, "sshd", "user_not_allowed", _clean_user(m.group(1)), None, None, None, count, seq)
                return self._with_conn_addr(conn, rec, out, release=False)
            return out

        if first == "ROOT":
            m = _ROOT_REFUSED.match(msg)
            if m is not None:
                ip, host = normalise_address(m.group(1))
                port = int(m.group(2)) if m.group(2) else None
                self._learn(conn, ip, host, port, out)
                out.append(AuthFailure(t, "sshd", "root_refused", "root", ip, host, port, count, seq))
            return out

        if first == "PAM:":
            m = _PAM_SSHD.match(msg)
            if m is not None:
                ip, host = normalise_address(m.group(2))
                self._learn(conn, ip, host, None, out)
                out.append(AuthFailure(t, "sshd", "pam_auth", _clean_user(m.group(1)), ip, host, None, count, seq))
            return out

        if first == "Did" or first == "Bad":
            if msg.startswith("Did not receive identification string") or msg.startswith("Bad protocol version identification"):
                m = _FROM_END.search(msg)
                if m is not None:
                    ip, host = normalise_address(m.group(1))
                    port = int(m.group(2)) if m.group(2) else None
                    self._learn(conn, ip, host, port, out)
                    out.append(AuthFailure(t, "sshd", "bad_protocol", None, ip, host, port, count, seq))
            return out

        if first == "kex_exchange_identification:":
            if "banner line contains invalid characters" in msg or "invalid" in msg or "Connection closed" in msg or "reset" in msg or "banner line too long" in msg or "read:" in msg:
                rec = AuthFailure(t, "sshd", "bad_protocol", None, None, None, None, count, seq)
                return self._with_conn_addr(conn, rec, out, release=False)
            return out

        if first == "banner" or first == "ssh_dispatch_run_fatal:" or first == "kex_protocol_error:":
            i = msg.find("Connection from ")
            if i >= 0:
                m = _CONN_PORT.match(msg, i)
                if m is not None:
                    ip, host = normalise_address(m.group(1))
                    port = int(m.group(2))
                    self._learn(conn, ip, host, port, out)
                    out.append(AuthFailure(t, "sshd", "bad_protocol", None, ip, host, port, count, seq))
            return out

        if first == "Unable":
            if msg.startswith("Unable to negotiate with "):
                m = _CONN_PORT.match(msg, 25)
                if m is not None:
                    ip, host = normalise_address(m.group(1))
                    port = int(m.group(2))
                    self._learn(conn, ip, host, port, out)
                    out.append(AuthFailure(t, "sshd", "negotiation_failed", None, ip, host, port, count, seq))
            elif msg.startswith("Unable to negotiate a key exchange method"):
                rec = AuthFailure(t, "sshd", "negotiation_failed", None, None, None, None, count, seq)
                return self._with_conn_addr(conn, rec, out, release=False)
            return out

        if first == "no" and msg.startswith("no matching ") and " found" in msg:
            rec = AuthFailure(t, "sshd", "negotiation_failed", None, None, None, None, count, seq)
            return self._with_conn_addr(conn, rec, out, release=False)

        if first == "Timeout":
            m = _TIMEOUT.match(msg)
            if m is not None:
                ip, host = normalise_address(m.group(1))
                port = int(m.group(2)) if m.group(2) else None
                if conn is not None:
                    if conn.addr != ip or ip is None:
                        self._learn(conn, ip, host, port, out)
                    if conn.pam or conn.keys or conn.noaddr:
                        self._release(conn, out)
                out.append(AuthFailure(t, "sshd", "preauth_timeout", None, ip, host, port, count, seq))
            return out

        if first == "Read" or first == "Write":
            # "fatal: Read from socket failed: Connection reset by peer [preauth]"
            if msg.endswith("[preauth]") and ("Connection reset" in msg or "Broken pipe" in msg or "Connection timed out" in msg):
                rec = AuthFailure(t, "sshd", "preauth_closed", None, None, None, None, count, seq)
                return self._with_conn_addr(conn, rec, out, release=True)
            return out

        if first == "refused":
            m = _REFUSED_CONNECT.search(msg)
            if m is not None:
                ip, host = normalise_address(m.group(1))
                out.append(AuthFailure(t, "sshd", "connection_refused", None, ip, host, None, count, seq))
            return out

        if first == "SSH:":
            m = _LTYPE_REMOTE.search(msg)
            if m is not None:
                ip, host = normalise_address(m.group(1))
                self._learn(conn, ip, host, int(m.group(2)), out)
            return out

        if first == "message":
            m = _REPEATED.match(msg)
            if m is not None:
                n = int(m.group(1))
                inner = self._sshd(t, hostname, pid, m.group(2), max(1, min(n, 1_000_000)))
                out.extend(inner)
            return out
        return out


    def _with_conn_addr(self, conn: _Conn | None, rec: AuthFailure, out: list[AuthFailure], release: bool) -> list[AuthFailure]:
        """A failure logged without the client address: take the connection's, or hold it until known."""
        if conn is None:
            out.append(rec)
            return out
        if conn.addr is not None or conn.host is not None:
            rec.source, rec.host, rec.port = conn.addr, conn.host, conn.port
            if release:
                self._release(conn, out)
            out.append(rec)
            return out
        if len(conn.noaddr) < 64:
            conn.noaddr.append(rec)
        else:
            conn.noaddr[-1].count += rec.count
        return out

    # -- other services -----------------------------------------------------------------
    def _pam_generic(self, t: float | None, prog: str, msg: str) -> list[AuthFailure]:
        m = _PAM_LINE.search(msg)
        if m is None:
            return []
        svc = (m.group(1) or "").lower()
        if prog in SELF_LOGGING or svc in SELF_LOGGING or svc in SSHD_PROGRAMS:
            return []  # su/sudo/login log their own failure line; sshd PAM lines come through _sshd
        ruser, rhost, user = _pam_fields(m.group(2))
        ip, host = normalise_address(rhost) if rhost else (None, None)
        u = user or ruser or None
        return [AuthFailure(t, "pam", "pam_auth", _clean_user(u), ip, host, None, 1, self.seq)]

    def _sudo(self, t: float | None, msg: str) -> list[AuthFailure]:
        if "incorrect password attempt" in msg:
            m = _SUDO_INCORRECT.match(msg)
            if m is not None:
                return [AuthFailure(t, "sudo", "password", _clean_user(m.group(1)), None, None, None, int(m.group(2)) or 1, self.seq)]
        elif " NOT " in msg or "command not allowed" in msg:
            m = _SUDO_NOT_ALLOWED.match(msg)
            if m is not None:
                return [AuthFailure(t, "sudo", "user_not_allowed", _clean_user(m.group(1)), None, None, None, 1, self.seq)]
        return []

    def _su(self, t: float | None, msg: str) -> list[AuthFailure]:
        if msg.startswith("FAILED"):
            m = _SU_FAILED.match(msg)
            if m is not None:
                user = m.group(2) if m.group(2) is not None else m.group(5)
                return [AuthFailure(t, "su", "password", _clean_user(user), None, None, None, 1, self.seq)]
        return []

    def _login(self, t: float | None, msg: str) -> list[AuthFailure]:
        if msg.startswith(("FAILED LOGIN", "TOO MANY LOGIN TRIES")):
            m = _LOGIN_FAILED.match(msg)
            if m is not None:
                remote = m.group(3) or m.group(4)
                ip, host = normalise_address(remote) if remote else (None, None)
                if remote and remote.startswith("tty"):
                    ip = host = None
                reason = "max_attempts" if m.group(2) else "password"
                return [AuthFailure(t, "login", reason, _clean_user(m.group(5)), ip, host, None, 1, self.seq)]
        return []


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _rec_out(r: AuthFailure) -> list[Any]:
    return [r.time, r.service, r.reason, r.user, r.source, r.host, r.port, r.count]


def _rec_in(v: Any) -> AuthFailure | None:
    """A record saved by ``_rec_out``; only the fixed vocabulary is accepted back."""
    if not isinstance(v, list) or len(v) != 8:
        return None
    t, svc, reason, user, src, host, port, count = v
    if svc not in SERVICES or reason not in REASONS or not isinstance(count, int) or count < 1:
        return None
    return AuthFailure(
        float(t) if isinstance(t, (int, float)) else None, svc, reason, _opt_str(user), _opt_str(src), _opt_str(host),
        port if isinstance(port, int) else None, count,
    )


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
    if text.endswith(" [preauth]"):
        text = text[:-10]
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


def _skip_structured_data(rest: str) -> str | None:
    """RFC 5424: skip ``-`` or ``[id k="v" ...]...`` (values may hold ``\\"``, ``\\]`` and ``]``)."""
    if rest.startswith("- "):
        return rest[2:]
    if rest == "-":
        return ""
    i, n = 0, len(rest)
    if not rest.startswith("["):
        return None
    while i < n and rest[i] == "[":
        i += 1
        in_q = False
        while i < n:
            c = rest[i]
            if in_q:
                if c == "\\":
                    i += 2
                    continue
                if c == '"':
                    in_q = False
            elif c == '"':
                in_q = True
            elif c == "]":
                break
            i += 1
        if i >= n:
            return None
        i += 1  # past "]"
    if i < n and rest[i] == " ":
        i += 1
    return rest[i:]


def parse_line(line: str, now: float | None = None) -> list[AuthFailure]:
    """Parse one line with a fresh parser (no connection context); held records are flushed."""
    p = AuthParser(now=(lambda: now) if now is not None else None)
    return p.feed(line) + p.flush()
