"""journald source: one long-lived ``journalctl --follow -o json`` with a persisted cursor.

journalctl (no library needed) is run with matches on ``SYSLOG_IDENTIFIER``
(sshd, sshd-session, sshd-auth, su, sudo, login by default) OR ``SYSLOG_FACILITY``
(4 auth and 10 authpriv by default: the PAM messages of any other program). Every
entry carries its ``__CURSOR``; the last one read is saved so a restart resumes exactly
after it (``--after-cursor``). With the agent's ``rootfs`` set (the host's / mounted in a
container) it reads the host's journal with ``--root``; ``directory``/``files`` point it
at a journal elsewhere (a container's mounted /var/log/journal, or tests).

How it runs. At the first poll one bounded ``journalctl`` run reads what is already there
(the backlog after the saved cursor; on a first start without a cursor, ``-n 1`` only
finds the newest entry so that history is skipped). Then ONE ``journalctl --follow``
child is kept running and every poll reads its stdout without blocking: a poll with
nothing new costs one ``read()`` that returns EAGAIN, no process is started. The pipe is
the queue: when the agent reads slower than entries arrive, journalctl blocks on its
write and waits (nothing is dropped, order and cursor stay exact); a poll reads at most
about ``max_entries`` entries and leaves the rest in the pipe.

The child is restarted from the last cursor, with a backoff (1 s doubling to 60 s), when
it exits (its stderr says why: the source state becomes missing/permission_denied/error)
or when it hangs: stopped (state T) or holding a partial entry, for longer than
``timeout``. Each restart is counted (``restarts``). ``close()`` kills its process group;
if the agent dies without closing (SIGKILL), journalctl sees its stdout hang up and exits.

``--merge`` is passed because ``journalctl --follow`` otherwise shows only the latest boot
(a cursor in an earlier boot would skip the rest of that boot). ``--merge`` also reads the
journals of other machines (systemd-journal-remote, containers' linked journals) that
journalctl leaves out by default for the local system journal; there (no ``--root``,
``--directory`` or ``--file``, where journalctl reads every machine's files anyway) every
match group therefore also requires ``_MACHINE_ID=`` this machine's id (``/etc/machine-id``,
as journalctl itself reads it), which keeps journalctl's "this machine only".

Why a child and not libsystemd in-process (ctypes ``sd_journal_*``): the journal files
are mmapped, so reading them in-process adds them to the agent's RSS, and a journal file
truncated under the mapping raises SIGBUS, which kills the whole agent (journalctl
installs its own SIGBUS handler for exactly this); sd_journal objects must stay on one
thread while collectors run on the runtime's pool; and the library's ABI and presence
differ between hosts and containers, where the journalctl command line is stable.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

DEFAULT_IDENTIFIERS = ("sshd", "sshd-session", "sshd-auth", "su", "sudo", "login")
DEFAULT_FACILITIES = (4, 10)  # LOG_AUTH, LOG_AUTHPRIV: where PAM (pam_syslog) writes
SYSTEM_JOURNAL_ROOTS = ("/var/log/journal", "/run/log/journal")
FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_COMM,SYSLOG_PID,_PID,_HOSTNAME"


def unreadable_system_journal(roots: tuple[str, ...] | list[str] = SYSTEM_JOURNAL_ROOTS) -> str | None:
    """A system journal file (``ROOT/MACHINE-ID/system.journal``) when there is one and this process
    can read none of them, else None. journalctl run as a user outside the ``systemd-journal`` and
    ``adm`` groups shows only that user's own journal, with no error (the hint is hidden by -q)."""
    first: str | None = None
    for root in roots:
        for f in sorted(glob.glob(os.path.join(glob.escape(root), "*", "system.journal"))):
            if os.access(f, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
                return None
            first = first or f
    return first


def local_machine_id(path: str = "/etc/machine-id") -> str:
    """This machine's id (32 hex digits), as journalctl reads it; "" when there is none."""
    try:
        with open(path, "rb") as f:
            mid = f.read(64).strip().decode("ascii", "replace").lower()
    except OSError:
        return ""
    return mid if len(mid) == 32 and all(c in "0123456789abcdef" for c in mid) else ""


class JournalReader:
    """``poll()`` returns new journal entries (dicts); ``status`` says whether the journal is readable."""

    def __init__(
        self,
        journalctl: str = "journalctl",
        identifiers: tuple[str, ...] | list[str] = DEFAULT_IDENTIFIERS,
        directory: str = "",
        files: list[str] | None = None,
        start_at_end: bool = True,
        max_entries: int = 50_000,
        timeout: float = 10.0,
        max_line_bytes: int = 1 << 20,
        facilities: tuple[int, ...] | list[int] = DEFAULT_FACILITIES,
        system_roots: tuple[str, ...] | list[str] = SYSTEM_JOURNAL_ROOTS,
        root: str = "",
        machine_id: str | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.root = "" if root in ("", "/") else root  # the host's / mounted elsewhere (journalctl --root)
        if self.root:
            system_roots = [os.path.join(self.root, r.lstrip("/")) for r in system_roots]
        self.system_roots = tuple(system_roots)
        self.journalctl = journalctl
        self.identifiers = tuple(identifiers)
        self.facilities = tuple(int(f) for f in facilities)
        self.directory = directory
        self.files = list(files or [])
        self.start_at_end = start_at_end
        self.max_entries = max_entries
        self.timeout = timeout
        self.max_line_bytes = max_line_bytes
        self.backoff = backoff
        self.max_backoff = max_backoff
        if machine_id is None and not directory and not files and not self.root:
            machine_id = local_machine_id()
        # the system journal, as journalctl reads it by default: only this machine's entries
        self.machine_id = "" if directory or files or self.root else (machine_id or "")
        self.cursor: str | None = None
        self.since: float | None = None
        self.status = "missing"
        self.error: str | None = None
        self.bad_entries = 0
        self.overlong = 0
        self.restarts = 0  # follower children started after the first
        # the follower
        self.proc: subprocess.Popen[bytes] | None = None
        self._caught_up = False  # the first bounded run (backlog or -n 1) is done
        self._retry_at = 0.0
        self._delay = backoff
        self._spawned_at = 0.0
        self._buf = b""  # a partial entry (no newline yet)
        self._skipping = False  # inside an over-long entry: discard up to its newline
        self._partial_since = 0.0  # when the pending partial entry started waiting
        self._stopped_since = 0.0
        self._check_at = 0.0  # next look at the follower's state in /proc
        self._err = b""  # the tail of the follower's stderr
        self._eof = False

    def load_state(self, cursor: Any) -> None:
        if isinstance(cursor, str) and cursor:
            self.cursor = cursor

    def available(self) -> bool:
        return (os.path.sep in self.journalctl and os.access(self.journalctl, os.X_OK)) or shutil.which(self.journalctl) is not None

    def _base(self) -> list[str]:
        cmd = [self.journalctl, "--no-pager", "-q", "--merge", "-o", "json", f"--output-fields={FIELDS}"]
        if self.directory:
            cmd.append(f"--directory={self.directory}")
        elif self.root and not self.files:
            cmd.append(f"--root={self.root}")
        for f in self.files:
            cmd.append(f"--file={f}")
        return cmd

    def _matches(self) -> list[str]:
        """journalctl ORs matches of one field and ORs the groups around ``+``."""
        groups = []
        if self.identifiers:
            groups.append([f"SYSLOG_IDENTIFIER={i}" for i in self.identifiers])
        if self.facilities:
            groups.append([f"SYSLOG_FACILITY={f}" for f in self.facilities])
        m: list[str] = []
        for g in groups:
            if m:
                m.append("+")
            m += g
            if self.machine_id:
                m.append(f"_MACHINE_ID={self.machine_id}")
        return m

    def _position(self) -> list[str]:
        if self.cursor is not None:
            return [f"--after-cursor={self.cursor}"]
        if self.since is not None:
            return [f"--since=@{int(self.since)}"]
        return []

    def _took(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            c = entries[-1].get("__CURSOR")
            if isinstance(c, str):
                self.cursor = c
                self.since = None

    def _precheck(self) -> bool:
        if not self.available():
            self.status, self.error = "missing", f"{self.journalctl}: not found"
            return False
        if not self.identifiers and not self.facilities:  # no match at all would read the whole journal
            self.status, self.error = "error", "journal: journal_identifiers and journal_facilities are both empty"
            return False
        if not self.directory and not self.files and os.geteuid() != 0:
            bad = unreadable_system_journal(self.system_roots)
            if bad is not None:
                self.status = "permission_denied"
                self.error = (
                    f"{bad}: this user (uid {os.geteuid()}) cannot read the system journal; "
                    "add it to group systemd-journal (or adm), as hostmon.service does"
                )
                return False
        return True

    def _retry_later(self) -> None:
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.max_backoff)

    # -- polling ---------------------------------------------------------------------
    def poll(self, wait: float = 0.0) -> list[dict[str, Any]]:
        """What is new since the last poll (about ``max_entries`` at most). Never blocks, except
        for the first bounded run and up to ``wait`` seconds for the follower's first bytes."""
        out: list[dict[str, Any]] = []
        if self.proc is None:
            if time.monotonic() < self._retry_at:
                return out
            if not self._precheck():
                self._retry_later()
                return out
            if not self._caught_up:
                if self.cursor is None and self.start_at_end and self.since is None:
                    # First start without a saved cursor: begin after the newest matching entry (not history).
                    last = self._run(self._base() + ["-n", "1"] + self._matches(), 1)
                    if last is None:
                        self._retry_later()
                        return out
                    self._took(last)
                    if self.cursor is None:
                        self.since = time.time()
                else:  # the backlog after the saved cursor, read at once
                    got = self._run(self._base() + self._position() + self._matches(), self.max_entries)
                    if got is None:
                        self._retry_later()
                        return out
                    self._took(got)
                    out = got
                self._caught_up = True
            if not self._spawn():
                self._retry_later()
                return out
        self._read(out, wait)
        self._watch()
        return out

    def _spawn(self) -> bool:
        cmd = self._base() + ["--follow", "--no-tail"] + self._position() + self._matches()
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                start_new_session=True,  # its own process group: close() kills it and anything it started
            )
        except OSError as e:
            self.status, self.error = "error", f"{self.journalctl}: {e.strerror}"
            return False
        assert proc.stdout is not None and proc.stderr is not None
        os.set_blocking(proc.stdout.fileno(), False)
        os.set_blocking(proc.stderr.fileno(), False)
        if self.proc is not None or self._spawned_at:
            self.restarts += 1
        self.proc = proc
        self._spawned_at = time.monotonic()
        self._buf, self._skipping, self._err, self._eof = b"", False, b"", False
        self._partial_since = self._stopped_since = 0.0
        if self.restarts == 0 and self.status != "error":
            self.status, self.error = "ok", None  # a restart keeps its failure until it proves itself
        return True

    def _read(self, out: list[dict[str, Any]], wait: float) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        if wait > 0:
            select.select([fd], [], [], wait)
        n0 = len(out)
        while len(out) < self.max_entries:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as e:
                self.error = f"{self.journalctl}: read: {e.strerror}"
                self._eof = True
                break
            if not chunk:
                self._eof = True
                break
            self._feed(chunk, out)
        if len(out) > n0:
            self._took(out)
            self._delay = self.backoff
            if self.status != "ok":
                self.status, self.error = "ok", None

    def _feed(self, chunk: bytes, out: list[dict[str, Any]]) -> None:
        buf = self._buf + chunk if self._buf else chunk
        pos = 0
        loads = json.loads
        limit = self.max_line_bytes
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            line = buf[pos:nl]
            pos = nl + 1
            if self._skipping:  # the end of an over-long entry
                self._skipping = False
                continue
            if len(line) > limit:
                self.overlong += 1
                continue
            try:
                entry = loads(line)
            except ValueError:
                self.bad_entries += 1
                continue
            if isinstance(entry, dict):
                out.append(entry)
            else:
                self.bad_entries += 1
        rest = buf[pos:]
        if self._skipping:
            rest = b""
        elif len(rest) > limit:
            self.overlong += 1
            self._skipping, rest = True, b""
        if rest or self._skipping:  # an entry is pending: how long it waits tells a hang
            if pos or not self._partial_since:  # a new pending entry (a newline came): its own time
                self._partial_since = time.monotonic()
        else:
            self._partial_since = 0.0
        self._buf = rest

    def _drain_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        try:
            while chunk := os.read(proc.stderr.fileno(), 1 << 16):
                self._err = (self._err + chunk)[-4096:]
        except OSError:  # BlockingIOError: nothing more now
            pass

    def _watch(self) -> None:
        """Restart the follower when it ended or hangs."""
        proc = self.proc
        assert proc is not None
        self._drain_stderr()  # a full stderr pipe would block journalctl
        now = time.monotonic()
        why: str | None = None
        if self._eof:
            try:
                rc: int | None = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                rc = None
            self._drain_stderr()
            err_s = self._err.decode("utf-8", "replace").strip()
            low = err_s.lower()
            if "no journal files" in low or "no such file" in low:
                self.status = "missing"
            elif "permission" in low or "access" in low:
                self.status = "permission_denied"
            else:
                self.status = "error"
            why = f"{self.journalctl}: {err_s[:200] or f'exit {rc}'} (restarting from the last cursor)"
        elif self._partial_since and now - self._partial_since > self.timeout:
            why = f"{self.journalctl}: no complete entry for {self.timeout}s, killed (restarting from the last cursor)"
        elif now >= self._check_at and self._is_stopped():
            self._check_at = now + min(self.timeout / 2, 5.0)
            self._stopped_since = self._stopped_since or now
            if now - self._stopped_since > self.timeout:
                why = f"{self.journalctl}: stopped for {self.timeout}s, killed (restarting from the last cursor)"
        else:
            if now >= self._check_at:  # /proc is read now and then, not at every poll
                self._check_at = now + min(self.timeout / 2, 5.0)
                self._stopped_since = 0.0
            up = now - self._spawned_at
            if self.status != "ok" and up >= min(1.0, self.timeout):
                self.status, self.error = "ok", None  # a restarted follower that stays up
            if up >= 30.0:
                self._delay = self.backoff  # healthy for a while: the next failure starts the backoff again
        if why is not None:
            if not self._eof:
                self.status = "error"
            self.error = why
            self._kill()
            self._retry_later()

    def _is_stopped(self) -> bool:
        assert self.proc is not None
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                st = f.read()
        except OSError:
            return False
        return st[st.rfind(b")") + 2 : st.rfind(b")") + 3] in (b"T", b"t")

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        self._buf, self._skipping, self._partial_since = b"", False, 0.0

    def close(self) -> None:
        """Stop the follower (its whole process group)."""
        self._kill()

    def __del__(self) -> None:  # a reader dropped without close() does not leave its child running
        try:
            self._kill()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    def _run(self, cmd: list[str], limit: int) -> list[dict[str, Any]] | None:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                start_new_session=True,  # its own process group: a timeout kills it and anything it started
            )
        except OSError as e:
            self.status, self.error = "error", f"{self.journalctl}: {e.strerror}"
            return None
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.timeout
        assert proc.stdout is not None
        def kill_group() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timed_out: list[bool] = []

        def on_timeout() -> None:
            timed_out.append(True)
            kill_group()

        watchdog = threading.Timer(self.timeout, on_timeout)  # a blocked read cannot outlive the timeout
        watchdog.daemon = True
        watchdog.start()
        try:
            while len(out) < limit:
                if time.monotonic() > deadline:
                    self.status, self.error = "error", f"{self.journalctl}: timed out after {self.timeout}s"
                    break
                raw = proc.stdout.readline(self.max_line_bytes + 1)
                if not raw:
                    break
                if len(raw) > self.max_line_bytes and not raw.endswith(b"\n"):
                    self.overlong += 1
                    while raw and not raw.endswith(b"\n"):  # drain the rest of the over-long entry
                        raw = proc.stdout.readline(self.max_line_bytes + 1)
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    self.bad_entries += 1
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                kill_group()
            try:
                _, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                kill_group()
                _, err = proc.communicate()
        rc = proc.returncode
        if timed_out:
            self.status, self.error = "error", f"{self.journalctl}: killed after {self.timeout}s"
            return out
        err_s = (err or b"").decode("utf-8", "replace").strip()
        if rc not in (0, None, -signal.SIGKILL) and not out:
            low = err_s.lower()
            if "no journal files" in low or "no such file" in low:
                self.status = "missing"
            elif "permission" in low or "access" in low:
                self.status = "permission_denied"
            else:
                self.status = "error"
            self.error = f"{self.journalctl}: {err_s[:200] or f'exit {rc}'}"
            return None
        if "No journal files were found" in err_s and not out:
            self.status, self.error = "missing", f"{self.journalctl}: no journal files"
            return out
        if self.status != "error" or out:
            self.status, self.error = "ok", None
        return out
