"""journald source: ``journalctl -o json`` with a persisted cursor.

Runs ``journalctl`` (no library needed) with matches on ``SYSLOG_IDENTIFIER``
(sshd, sshd-session, sshd-auth, su, sudo, login by default) OR ``SYSLOG_FACILITY``
(4 auth and 10 authpriv by default: the PAM messages of any other program) and
``--after-cursor``; every entry carries its ``__CURSOR``, the last one read is
saved so a restart resumes exactly after it. With the agent's ``rootfs`` set (the
host's / mounted in a container) it reads the host's journal with ``--root``. A bounded number of entries is read
per call and the process gets a timeout. ``directory``/``files`` point it at a
journal elsewhere (a container's mounted /var/log/journal, or tests).
"""

from __future__ import annotations

import glob
import json
import os
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
        self.cursor: str | None = None
        self.since: float | None = None
        self.status = "missing"
        self.error: str | None = None
        self.bad_entries = 0
        self.overlong = 0

    def load_state(self, cursor: Any) -> None:
        if isinstance(cursor, str) and cursor:
            self.cursor = cursor

    def available(self) -> bool:
        return (os.path.sep in self.journalctl and os.access(self.journalctl, os.X_OK)) or shutil.which(self.journalctl) is not None

    def _base(self) -> list[str]:
        cmd = [self.journalctl, "--no-pager", "-q", "-o", "json", f"--output-fields={FIELDS}"]
        if self.directory:
            cmd.append(f"--directory={self.directory}")
        elif self.root and not self.files:
            cmd.append(f"--root={self.root}")
        for f in self.files:
            cmd.append(f"--file={f}")
        return cmd

    def _matches(self) -> list[str]:
        """journalctl ORs matches of one field and ORs the groups around ``+``."""
        m = [f"SYSLOG_IDENTIFIER={i}" for i in self.identifiers]
        if self.facilities:
            if m:
                m.append("+")
            m += [f"SYSLOG_FACILITY={f}" for f in self.facilities]
        return m

    def poll(self) -> list[dict[str, Any]]:
        if not self.available():
            self.status, self.error = "missing", f"{self.journalctl}: not found"
            return []
        if not self.identifiers and not self.facilities:  # no match at all would read the whole journal
            self.status, self.error = "error", "journal: journal_identifiers and journal_facilities are both empty"
            return []
        if not self.directory and not self.files and os.geteuid() != 0:
            bad = unreadable_system_journal(self.system_roots)
            if bad is not None:
                self.status = "permission_denied"
                self.error = (
                    f"{bad}: this user (uid {os.geteuid()}) cannot read the system journal; "
                    "add it to group systemd-journal (or adm), as hostmon.service does"
                )
                return []
        if self.cursor is None and self.start_at_end and self.since is None:
            # First start without a saved cursor: begin at the newest matching entry (not history).
            last = self._run(self._base() + ["-n", "1"] + self._matches(), 1)
            if last is None:
                return []
            if last:
                c = last[-1].get("__CURSOR")
                if isinstance(c, str):
                    self.cursor = c
            if self.cursor is None:
                self.since = time.time()
            return []
        cmd = self._base()
        if self.cursor is not None:
            cmd.append(f"--after-cursor={self.cursor}")
        elif self.since is not None:
            cmd.append(f"--since=@{int(self.since)}")
        entries = self._run(cmd + self._matches(), self.max_entries)
        if entries is None:
            return []
        if entries:
            c = entries[-1].get("__CURSOR")
            if isinstance(c, str):
                self.cursor = c
                self.since = None
        return entries

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
