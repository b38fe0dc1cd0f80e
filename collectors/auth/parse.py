"""Pure parser of failed logins: log text (or journald entries) in, :class:`AuthFailure` records out.

No I/O here. :class:`AuthParser` reads the syslog header (BSD, RFC 3339, RFC 5424
or a journald entry), keeps a small, bounded per-connection context (keyed by
host and pid) because sshd spreads one connection over several lines, some
without the client address, and dispatches each message: sshd's by their first
word to one small handler each (:mod:`collectors.auth.sshd`), su, sudo, login
and other PAM users here. The record and its vocabulary live in
:mod:`collectors.auth.records`. See docs/auth-parsing.md for the vocabulary
(services and reasons), what counts as a failure, and where we deliberately
differ from fail2ban.

Attacker-controlled text (user names, client version strings, disconnect
messages) is never trusted to locate the client address: every shape is
anchored on the part sshd writes itself (the end of the line, or the start when
the address comes first), and an address already known for the connection wins
over any other candidate.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from hostmond.collectors.auth.records import (
    MAX_HOST_LEN,
    MAX_USER_LEN,
    REASONS,
    SELF_LOGGING,
    SERVICE_OF_PROGRAM,
    SERVICES,
    SSHD_PROGRAMS,
    AuthFailure,
    normalise_address,
)
from hostmond.collectors.auth.records import clean_user as _clean_user
from hostmond.collectors.auth.sshd import (
    _PAM_LINE,
    _TRAILER,
    HANDLERS,
    _Conn,
    _pam_fields,
    on_pam,
)
from hostmond.collectors.auth.timestamps import (
    BsdClock,
    parse_journal_realtime,
    parse_rfc3339,
)

__all__ = [
    "MAX_HOST_LEN",
    "MAX_USER_LEN",
    "REASONS",
    "SELF_LOGGING",
    "SERVICES",
    "SERVICE_OF_PROGRAM",
    "SSHD_PROGRAMS",
    "AuthFailure",
    "AuthParser",
    "normalise_address",
    "parse_line",
]

# -- headers -------------------------------------------------------------------
_TAG = r"(?:([^\s\[\]:]+)(?:\[(\d+)\])?: |\[([^\]\s]+)\]:? )"
_BSD = re.compile(r"([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d:\d\d:\d\d)(?:\.\d+)? (?:([^\s:\[\]]+) )?" + _TAG + r"(.*)", re.DOTALL)
_ISO = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)?) (?:([^\s:\[\]]+) )?" + _TAG + r"(.*)", re.DOTALL
)
_5424 = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (.*)", re.DOTALL)
_FAST_BSD = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?:([^\s:\[\]]+) )?([\w./-]+)(?:\[(\d+)\])?: (.*)", re.DOTALL)
_MISS = object()
_TRAIL_WS = ("\n", " ", "\r", "\t")
_SOLARIS_ID = re.compile(r"\[ID \d+ [\w.]+\] ")
# a kernel-log style prefix some relays put before the message: "kernel:[  970.699396]: Failed password ..."
_KERNEL_PREFIX = re.compile(r"kernel: ?\[ *\d+\.\d+\]:? ?")
# ... or between the syslog header and the program's tag: "Jun 14 15:16:01 host kernel: [  970.699396] sshd[12]: ..."
_KERNEL_HEADER = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?:[^\s:\[\]]+ )?)kernel: ?\[ *\d+\.\d+\]:? ")

# -- other services ---------------------------------------------------------------
_SU_FAILED = re.compile(r"(?:FAILED SU \(to (.*?)\) (.*) on (\S+)|FAILED su for (.*?) by (.*))$")
_SUDO_INCORRECT = re.compile(r"\s*(.*?) : (\d+) incorrect password attempts? ;")
_SUDO_NOT_ALLOWED = re.compile(r"\s*(.*?) : (?:user NOT in sudoers|user NOT authorized on host|command not allowed) ;")
_LOGIN_FAILED = re.compile(
    r"(?:FAILED LOGIN \(?(\d+)\)?|TOO MANY LOGIN TRIES \(?(\d+)\)?)"
    r"(?: on '[^']*'(?: from '([^']*)')?| FROM (\S+))? FOR '?(.*?)'?, (.*)$"
)


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
            if prog == "kernel":
                return self._feed_without_kernel_prefix(line)
            return self.handle(t, hostname, prog, pid, msg)  # type: ignore[arg-type]
        if "kernel:" in line[:80]:
            return self._feed_without_kernel_prefix(line)
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

    def _feed_without_kernel_prefix(self, line: str) -> list[AuthFailure]:
        """``Jun 14 15:16:01 host kernel:[  970.699396]: sshd[12]: ...``: the line without its kernel prefix."""
        k = _KERNEL_HEADER.match(line)
        if k is not None:
            line = k.group(1) + line[k.end():]
        if k is None or _KERNEL_HEADER.match(line) is not None:  # no prefix, or more than one: not a shape we read
            self.unparsed += 1
            return []
        self.seq -= 1  # the same line, fed again
        return self.feed(line)

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
        msg = msg.removeprefix("\ufeff")
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
        elif msg.startswith("kernel:"):
            msg = _strip_prefix(msg, 0)
        if prog[-1:] == ")" and "(pam_" in prog:
            # the older syslog form names the PAM module in the tag: "sshd(pam_unix)[19939]: authentication failure; ..."
            i = prog.index("(pam_")
            prog, msg = prog[:i], f"{prog[i:]} {msg}"
            if prog in SELF_LOGGING:  # su(pam_unix): in this form PAM's line is the only failure line
                return self._pam_generic(t, prog, msg, SERVICE_OF_PROGRAM[prog])
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
        """An sshd message: its first word (after an ``error:``, ``fatal:`` or kernel prefix) picks the handler."""
        sp = msg.find(" ")
        first = msg[:sp] if sp > 0 else msg
        if first == "error:" or first == "fatal:" or first.startswith("kernel:"):
            msg = _strip_prefix(msg, sp)
            sp = msg.find(" ")
            first = msg[:sp] if sp > 0 else msg
        handler = HANDLERS.get(first)
        if handler is None:
            if not ((first.startswith("pam_") and first.endswith(":auth):")) or first.startswith("(pam_")):
                return []
            handler = on_pam
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
        return handler(self, t, hostname, pid, conn, msg, count, out)

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
    def _pam_generic(self, t: float | None, prog: str, msg: str, service: str = "pam") -> list[AuthFailure]:
        m = _PAM_LINE.search(msg)
        if m is None:
            return []
        svc = (m.group(1) or "").lower()
        if service == "pam" and (prog in SELF_LOGGING or svc in SELF_LOGGING or svc in SSHD_PROGRAMS):
            return []  # su/sudo/login log their own failure line; sshd PAM lines come through _sshd
        ruser, rhost, user = _pam_fields(m.group(2))
        ip, host = normalise_address(rhost) if rhost else (None, None)
        u = user or ruser or None
        return [AuthFailure(t, service, "pam_auth", _clean_user(u), ip, host, None, 1, self.seq)]

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



def _strip_prefix(msg: str, sp: int) -> str:
    """The message without a leading ``error:``/``fatal:`` word or a ``kernel:[ 970.699396]:`` prefix."""
    if msg.startswith("kernel:"):
        m = _KERNEL_PREFIX.match(msg)
        return msg[m.end():] if m is not None else msg
    return msg[sp + 1:]


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
