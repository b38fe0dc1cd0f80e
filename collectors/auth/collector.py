"""The ``auth`` collector: failed logins from journald, auth.log/secure and btmp.

Each collection reads what is new in every source, parses it (hostmond.collectors.auth.parse),
counts failures by service and reason, keeps bounded sliding windows per client
address and per user, detects brute force, and returns samples plus one
``auth_failure`` event per failure (and ``auth_bruteforce`` when a source crosses
the threshold). Positions (file inode/offset, journal cursor, btmp offset) are
saved in the collector's StateStore after a collection that moved them, and on stop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Callable
from typing import Any

from hostmond.collectors.auth.bruteforce import SlidingCounts
from hostmond.collectors.auth.btmp import BtmpFollower
from hostmond.collectors.auth.journal import (
    DEFAULT_FACILITIES,
    DEFAULT_IDENTIFIERS,
    JournalReader,
)
from hostmond.collectors.auth.parse import REASONS, SERVICES, AuthFailure, AuthParser
from hostmond.collectors.auth.tail import STATUSES as SOURCE_STATES
from hostmond.collectors.auth.tail import FileTailer

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    Event,
    KeyFileError,
    MetricSpec,
    Sample,
    field,
)

DEFAULT_FILES = ["/var/log/auth.log", "/var/log/secure"]
DEFAULT_BTMP = "/var/log/btmp"
TOP_K_MAX = 50
OTHER = "other"
CONNECTION_GRACE_S = 600.0  # held-back sshd records of a silent connection are released after this


@dataclasses.dataclass
class AuthConfig(CollectorConfig):
    files: list[str] = field(
        list(DEFAULT_FILES),
        "Log files to follow; of the defaults only those that exist are used (under the agent's rootfs), a path you list is always watched and reported.",
    )
    journal: bool | None = field(None, "Read journald through journalctl; unset means on when journalctl exists.")
    journalctl: str = field("journalctl", "The journalctl program to run.")
    journal_directory: str = field("", "Read the journal files in this directory instead of the system journal.")
    journal_files: list[str] = field([], "Read these journal files instead of the system journal.")
    journal_identifiers: list[str] = field(list(DEFAULT_IDENTIFIERS), "SYSLOG_IDENTIFIER values read from journald.")
    journal_facilities: list[int] = field(
        list(DEFAULT_FACILITIES), "Syslog facilities also read from journald (4 auth, 10 authpriv: PAM messages of any program); empty turns it off."
    )
    journal_timeout: float = field(
        10.0,
        "Seconds the first journalctl run may take, and that the following journalctl may stay stopped or hold a partial entry, before it is killed (and restarted from the last cursor).",
    )
    btmp: str = field(DEFAULT_BTMP, "The btmp file of failed logins (as lastb reads it); empty turns it off.")
    read_from_start: bool = field(False, "On the very first start (no saved position), read existing history instead of only new lines.")
    window_seconds: float = field(900.0, "Sliding window for distinct failing sources and the top-K gauges.")
    bruteforce_threshold: int = field(10, "Failures from one source within bruteforce_window_seconds that count as brute force.")
    bruteforce_window_seconds: float = field(600.0, "Window of the brute-force rule.")
    top_k: int = field(10, "How many sources and users get their own label value in the top gauges (at most 50); the rest are folded into \"other\".")
    hash_usernames: bool = field(False, "Replace user names by a keyed hash (HMAC-SHA256, 16 hex digits) in labels and events.")
    user_hash_key_file: str = field("", "Key file for hash_usernames; empty means auth-user-hash.key in the agent's state directory (created 0600).")
    max_tracked: int = field(10000, "At most this many sources (and as many users) are tracked in the windows; the least recent are evicted and counted.")
    max_connections: int = field(4096, "At most this many sshd connections are remembered by the parser.")
    max_line_bytes: int = field(65536, "Longer log lines are skipped and counted.")
    max_read_bytes: int = field(16 * 1024 * 1024, "At most this many bytes are read from one file per collection; the rest waits for the next.")
    max_events: int = field(10000, "At most this many events per collection; the rest are dropped and counted.")
    events: bool = field(True, "Emit an auth_failure event per failure.")


def _spec(name: str, type_: str, help_: str, labels: tuple[str, ...] = (), unit: str = "") -> MetricSpec:
    return MetricSpec(name, type_, help_, labels, unit)


METRICS = (
    _spec("hostmon_auth_failures_total", COUNTER, "Failed authentications by service and reason (fixed vocabulary, see docs/auth-parsing.md).", ("service", "reason")),
    _spec("hostmon_auth_failing_sources", GAUGE, "Distinct client addresses with at least one failure in the sliding window.", ()),
    _spec("hostmon_auth_bruteforce_sources", GAUGE, "Client addresses currently at or over the brute-force threshold.", ()),
    _spec("hostmon_auth_bruteforce_detections_total", COUNTER, "Times a client address crossed the brute-force threshold.", ()),
    _spec("hostmon_auth_window_failures_by_source", GAUGE, "Failures in the sliding window for the top-K client addresses; all others summed under source=\"other\".", ("source",)),
    _spec("hostmon_auth_window_failures_by_user", GAUGE, "Failures in the sliding window for the top-K user names (or their hashes); all others summed under user=\"other\".", ("user",)),
    _spec("hostmon_auth_source_up", GAUGE, "1 when the log source could be read at the last collection, else 0.", ("source",)),
    _spec(
        "hostmon_auth_source_state", GAUGE,
        "1 for the log source's state at the last collection (ok, missing, permission_denied, not_regular, error), 0 for the other states.",
        ("source", "state"),
    ),
    _spec("hostmon_auth_lines_read_total", COUNTER, "Lines, journal entries or btmp records read per log source.", ("source",)),
    _spec("hostmon_auth_overlong_lines_total", COUNTER, "Lines skipped for exceeding max_line_bytes per log source.", ("source",)),
    _spec("hostmon_auth_rotations_total", COUNTER, "Rotations (rename) and truncations (copytruncate) seen per log source.", ("source", "kind")),
    _spec("hostmon_auth_unparsed_lines_total", COUNTER, "Lines without a recognisable syslog header per log source.", ("source",)),
    _spec("hostmon_auth_tracked_keys", GAUGE, "Sources or users held in the sliding windows.", ("kind",)),
    _spec("hostmon_auth_tracked_keys_limit", GAUGE, "Limit of sources or users held in the sliding windows.", ("kind",)),
    _spec("hostmon_auth_tracked_keys_evicted_total", COUNTER, "Sources or users evicted from the windows because the limit was reached.", ("kind",)),
    _spec("hostmon_auth_journal_restarts_total", COUNTER, "Times the following journalctl was restarted from the last cursor after it exited or hung.", ()),
    _spec("hostmon_auth_journal_bad_entries_total", COUNTER, "journalctl output lines that were not a JSON object, skipped.", ()),
    _spec("hostmon_auth_connections_evicted_total", COUNTER, "sshd connection contexts evicted from the parser because max_connections was reached.", ()),
    _spec("hostmon_auth_events_dropped_total", COUNTER, "auth events dropped because a collection produced more than max_events.", ()),
)


def load_or_create_key(path: str) -> bytes:
    """The HMAC key for user hashing: created (32 random bytes, mode 0600) when absent, refused when
    readable by group or others (like ssh refuses a private key)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        key = secrets.token_bytes(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(key.hex().encode() + b"\n")
        return key
    except OSError as e:
        raise KeyFileError(f"{path}: cannot open user hash key: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path}: user hash key is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(f"{path}: user hash key is readable by group or others (mode {st.st_mode & 0o777:o}); chmod 600 it")
        data = f.read(4096).strip()
    try:
        key = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise KeyFileError(f"{path}: user hash key must be hex") from e
    if len(key) < 16:
        raise KeyFileError(f"{path}: user hash key is shorter than 16 bytes")
    return key


class _Source:
    """One configured log source with its reader, its parser and what was reported about it."""

    def __init__(self, label: str, kind: str, reader: Any, required: bool) -> None:
        self.label = label  # "file:/var/log/auth.log", "journal", "btmp:/var/log/btmp"
        self.kind = kind
        self.reader = reader
        self.required = required
        self.parser: AuthParser | None = None
        self.reported: str | None = None
        self.lines = 0
        self.unparsed = 0


class AuthCollector(Collector[AuthConfig]):
    name = "auth"
    default_enabled = True
    config_class = AuthConfig
    metrics = METRICS

    def __init__(self, config: AuthConfig, ctx: CollectorContext, now: Callable[[], float] | None = None) -> None:
        super().__init__(config, ctx)
        self.cfg = config
        self.now = now or time.time
        self.sources: list[_Source] = []
        self.failures: dict[tuple[str, str], float] = {}
        k = max(0, min(int(config.top_k), TOP_K_MAX))
        self.top_k = k
        self.by_source = SlidingCounts(config.window_seconds, 0, config.max_tracked)
        self.by_user = SlidingCounts(config.window_seconds, 0, config.max_tracked)
        self.brute = SlidingCounts(config.bruteforce_window_seconds, max(1, config.bruteforce_threshold), config.max_tracked)
        self.detections = 0
        self.events_dropped = 0
        self.rotations: dict[tuple[str, str], int] = {}
        self.key: bytes | None = None
        self._started = False
        self._saved: dict[str, Any] | None = None  # what the state file holds (written by this process)
        self._absent_defaults: list[str] = []  # default log files not present at start, watched for
        self.floor: float | None = None  # after a state reset: records older than this were counted before

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        if cfg.hash_usernames:
            path = cfg.user_hash_key_file or (os.path.join(self.ctx.state_dir, "auth-user-hash.key") if self.ctx.state_dir else "")
            if not path:
                raise KeyFileError("auth: hash_usernames needs user_hash_key_file or the agent's state_dir")
            self.key = load_or_create_key(path)
        state = self.ctx.state.load()
        files_state = state.get("files", {}) if isinstance(state.get("files"), dict) else {}
        start_at_end = not cfg.read_from_start
        explicit = cfg.files != DEFAULT_FILES
        root = self.ctx.rootfs if self.ctx.rootfs not in ("", "/") else ""

        def on_host(p: str) -> str:  # a default path, under the agent's rootfs (/host in a container)
            return os.path.join(root, p.lstrip("/")) if root else p

        # The state was lost (garbled, empty, no earlier save): re-read the logs from their start and
        # count only what was logged after the lost state was last written, rather than skip the gap.
        self.floor = self.ctx.state.reset_floor
        for path in cfg.files:
            if not explicit:
                path = on_host(path)
            if not explicit and not os.path.lexists(path) and path not in files_state:
                self._absent_defaults.append(path)  # auto-detection: not used unless it appears later
                continue
            saved = files_state.get(path)
            t = FileTailer(path, max_line_bytes=cfg.max_line_bytes, max_read_bytes=cfg.max_read_bytes,
                           start_at_end=start_at_end and self.floor is None)
            t.load_state(saved)
            if saved is not None and t.saved is None:  # present but malformed: from the start, with the floor
                self.ctx.state.note_reset(f"{path}: saved position malformed")
                t.start_at_end = False
                self.floor = self.floor or self._state_time()
            self.sources.append(_Source(f"file:{path}", "file", t, True))
        use_journal = cfg.journal
        jr = JournalReader(
            cfg.journalctl,
            cfg.journal_identifiers,
            cfg.journal_directory,
            cfg.journal_files,
            start_at_end=start_at_end,
            timeout=cfg.journal_timeout,
            facilities=cfg.journal_facilities,
            root=root,
        )
        if use_journal is None:
            use_journal = jr.available()
        if use_journal:
            jr.load_state(state.get("journal_cursor"))
            self.sources.append(_Source("journal", "journal", jr, cfg.journal is True))
        if cfg.btmp:
            btmp = on_host(cfg.btmp) if cfg.btmp == DEFAULT_BTMP else cfg.btmp
            b = BtmpFollower(btmp, start_at_end=start_at_end)
            b.load_state(state.get("btmp"))
            self.sources.append(_Source(f"btmp:{btmp}", "btmp", b, True))
        held_raw = state.get("held")
        held: dict[str, Any] = held_raw if isinstance(held_raw, dict) else {}
        for s in self.sources:
            s.parser = AuthParser(max_connections=cfg.max_connections, now=self.now)
            # records held back for connections still undecided at the last save (see parse.py)
            s.parser.import_state(held.get(s.label))
        self._started = True

    def stop(self) -> None:
        self._save(force=True)
        for s in self.sources:
            if s.kind in ("file", "journal"):
                s.reader.close()

    def _save(self, force: bool = False) -> None:
        """Write the positions when they changed since the last write (or ``force``)."""
        st: dict[str, Any] = {"files": {}, "held": {}}
        for s in self.sources:
            if s.parser is not None and s.parser.conns:
                h = s.parser.export_state(self.cfg.max_connections)
                if h:
                    st["held"][s.label] = h
            if s.kind == "file":
                v = s.reader.state()
                if v is not None:
                    st["files"][s.reader.path] = v
            elif s.kind == "journal" and s.reader.cursor:
                st["journal_cursor"] = s.reader.cursor
            elif s.kind == "btmp":
                v = s.reader.state()
                if v is not None:
                    st["btmp"] = v
        if not force and st == self._saved:
            return
        self.ctx.state.save(st)
        self._saved = st

    # -- helpers ---------------------------------------------------------------------
    def user_label(self, user: str | None) -> str | None:
        if user is None:
            return None
        if self.key is not None:
            return hmac.new(self.key, user.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:16]
        return user

    def _report(self, s: _Source, status: str, error: str | None) -> None:
        """Log a source's state once per change: missing at info, unreadable at warning."""
        if status == s.reported:
            return
        s.reported = status
        if status == "ok":
            self.log.info("auth source readable", extra={"source": s.label})
        elif status == "missing":
            self.log.info("auth source not present: %s", error or s.label, extra={"source": s.label})
        else:
            self.log.warning("auth source unreadable (%s): %s", status, error or s.label, extra={"source": s.label})
            self.partial_error(f"source_{status}" if status in ("permission_denied", "not_regular") else "source_error")

    # -- collection -----------------------------------------------------------------------
    def _adopt_new_defaults(self) -> None:
        """A default log file created after start (rsyslog installed later) is followed from its start."""
        for path in list(self._absent_defaults):
            if not os.path.lexists(path):
                continue
            self._absent_defaults.remove(path)
            cfg = self.cfg
            t = FileTailer(path, max_line_bytes=cfg.max_line_bytes, max_read_bytes=cfg.max_read_bytes, start_at_end=False)
            src = _Source(f"file:{path}", "file", t, True)
            src.parser = AuthParser(max_connections=cfg.max_connections, now=self.now)
            self.sources.append(src)
            self.log.info("auth source appeared: %s", path, extra={"source": src.label})

    def read_sources(self) -> list[AuthFailure]:
        recs: list[AuthFailure] = []
        if self._absent_defaults:
            self._adopt_new_defaults()
        for s in self.sources:
            p = s.parser
            assert p is not None
            p.read_time = read_at = self.now()
            try:
                if s.kind == "file":
                    lines = s.reader.poll()
                    s.lines += len(lines)
                    feed = p.feed
                    for line in lines:
                        r = feed(line)
                        if r:
                            recs.extend(r)
                    self.rotations[(s.label, "rename")] = s.reader.rotations
                    self.rotations[(s.label, "truncate")] = s.reader.truncations
                elif s.kind == "journal":
                    for e in s.reader.poll():
                        s.lines += 1
                        r = p.feed_journal(e)
                        if r:
                            recs.extend(r)
                else:
                    got = s.reader.poll()
                    s.lines += len(got)
                    recs.extend(got)
                    self.rotations[(s.label, "rename")] = s.reader.rotations
                    self.rotations[(s.label, "truncate")] = s.reader.truncations
            except Exception as e:  # noqa: BLE001 - one broken source must not stop the others
                self.log.warning("auth source failed: %r", e, extra={"source": s.label})
                self.partial_error("source_error")
                s.reader.status, s.reader.error = "error", repr(e)
            recs.extend(p.flush_older_than(read_at - CONNECTION_GRACE_S))
            s.unparsed = p.unparsed
            self._report(s, s.reader.status, s.reader.error)
        return recs

    def _state_time(self) -> float | None:
        try:
            return os.stat(self.ctx.state.path).st_mtime if self.ctx.state.path else None
        except OSError:
            return None

    def account(self, recs: list[AuthFailure]) -> list[Event]:
        events: list[Event] = []
        now = self.now()
        cfg = self.cfg
        if self.floor is not None:  # after a state reset: what was logged before the lost state was counted then
            recs = [r for r in recs if r.time is None or r.time >= self.floor]
        for r in recs:
            key = (r.service, r.reason)
            self.failures[key] = self.failures.get(key, 0) + r.count
            t = r.time if r.time is not None else now
            if r.reason != "btmp":  # btmp repeats what the logs already said: counted, not windowed
                if r.source is not None:
                    self.by_source.add(r.source, t, r.count)
                    if self.brute.add(r.source, t, r.count):
                        self.detections += 1
                        if len(events) < cfg.max_events:
                            events.append(
                                Event(
                                    "auth_bruteforce",
                                    t,
                                    {
                                        "source": r.source,
                                        "failures": self.brute.count(r.source),
                                        "threshold": cfg.bruteforce_threshold,
                                        "window_seconds": cfg.bruteforce_window_seconds,
                                    },
                                )
                            )
                        else:
                            self.events_dropped += 1
                ul = self.user_label(r.user)
                if ul is not None:
                    self.by_user.add(ul, t, r.count)
            if cfg.events:
                if len(events) >= cfg.max_events:
                    self.events_dropped += 1
                    continue
                f: dict[str, Any] = {"service": r.service, "reason": r.reason, "source": r.source, "port": r.port}
                if self.key is not None:
                    f["user_hash"] = self.user_label(r.user)
                else:
                    f["user"] = r.user
                if r.host is not None:  # the client's host name when sshd logged a name, not an address
                    f["source_host"] = r.host
                if r.count != 1:
                    f["count"] = r.count
                events.append(Event("auth_failure", t, f))
        for w in (self.by_source, self.by_user, self.brute):
            w.expire(now)
        return events

    def collect(self) -> list[Sample | Event]:
        if not self._started:
            self.start()
        events = self.account(self.read_sources())
        self._save()
        return [*self.samples(), *events]

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        sm = self.sample
        for (svc, reason), v in sorted(self.failures.items()):
            if svc in SERVICES and reason in REASONS:
                out.append(sm("hostmon_auth_failures_total", v, {"service": svc, "reason": reason}))
        out.append(sm("hostmon_auth_failing_sources", self.by_source.active()))
        out.append(sm("hostmon_auth_bruteforce_sources", self.brute.over()))
        out.append(sm("hostmon_auth_bruteforce_detections_total", self.detections))
        for win, label in ((self.by_source, "source"), (self.by_user, "user")):
            head, rest = win.top(self.top_k)
            name = f"hostmon_auth_window_failures_by_{label}"
            for k, v in head:
                out.append(sm(name, v, {label: k}))
            out.append(sm(name, rest, {label: OTHER}))
        conn_evicted = 0
        for s in self.sources:
            up = 1 if s.reader.status == "ok" else 0
            out.append(sm("hostmon_auth_source_up", up, {"source": s.label}))
            st = s.reader.status if s.reader.status in SOURCE_STATES else "error"
            for state in SOURCE_STATES:
                out.append(sm("hostmon_auth_source_state", 1 if state == st else 0, {"source": s.label, "state": state}))
            out.append(sm("hostmon_auth_lines_read_total", s.lines, {"source": s.label}))
            out.append(sm("hostmon_auth_overlong_lines_total", getattr(s.reader, "overlong", 0), {"source": s.label}))
            out.append(sm("hostmon_auth_unparsed_lines_total", s.unparsed, {"source": s.label}))
            if s.parser is not None:
                conn_evicted += s.parser.evicted
        for (label, kind), v in sorted(self.rotations.items()):
            out.append(sm("hostmon_auth_rotations_total", v, {"source": label, "kind": kind}))
        for kind, w in (("source", self.by_source), ("user", self.by_user), ("bruteforce_source", self.brute)):
            out.append(sm("hostmon_auth_tracked_keys", len(w.keys), {"kind": kind}))
            out.append(sm("hostmon_auth_tracked_keys_limit", w.max_keys, {"kind": kind}))
            out.append(sm("hostmon_auth_tracked_keys_evicted_total", w.evicted, {"kind": kind}))
        journals = [s.reader for s in self.sources if s.kind == "journal"]
        if journals:
            out.append(sm("hostmon_auth_journal_restarts_total", sum(j.restarts for j in journals)))
            out.append(sm("hostmon_auth_journal_bad_entries_total", sum(j.bad_entries for j in journals)))
        out.append(sm("hostmon_auth_connections_evicted_total", conn_evicted))
        out.append(sm("hostmon_auth_events_dropped_total", self.events_dropped))
        return out

