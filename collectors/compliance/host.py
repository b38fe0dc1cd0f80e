"""All I/O of the compliance collector: the host's files, /proc, and allow-listed commands.

Every path a policy names is absolute on the *host* and is read under
``rootfs`` (``/host`` in a DaemonSet); symbolic links are resolved inside that
root, as ``chroot`` would, so an absolute link in the host tree never escapes to
the container's own files. ``/proc`` files are read under ``proc_root``.
Nothing here interprets what it reads: that is ``checks.py``.
"""

from __future__ import annotations

import errno
import glob as _glob
import os
import stat
import subprocess
import threading
from collections.abc import Iterator, Mapping

READ_LIMIT = 4 * 1024 * 1024  # bytes read from one file at most
PROC_READ_LIMIT = 256 * 1024  # /proc/sys refuses (ENOMEM) one read of READ_LIMIT
OUTPUT_LIMIT = 1024 * 1024  # bytes kept from one command's output

# Commands a policy may name (``kind = "command"``): fixed argument vectors, no shell,
# looked up in fixed directories. An operator enables ids with collectors.compliance.commands.
ALLOWED_COMMANDS: Mapping[str, tuple[str, ...]] = {
    "sshd_effective_config": ("sshd", "-T"),
    "nft_ruleset": ("nft", "list", "ruleset"),
    "iptables_rules": ("iptables", "-S"),
    "ufw_status": ("ufw", "status"),
    "firewalld_state": ("firewall-cmd", "--state"),
    "timedatectl_show": ("timedatectl", "show"),
    "auditctl_status": ("auditctl", "-s"),
}
COMMAND_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


class CommandUnavailable(Exception):
    """The command is not enabled, not installed, or cannot run against this root."""


class ScanStats:
    """What one directory walk did (entries seen, whether a limit stopped it)."""

    __slots__ = ("entries", "errors", "truncated")

    def __init__(self) -> None:
        self.entries = 0
        self.truncated = False
        self.errors = 0


class HostView:
    """Read-only view of one host tree. One instance per collection (it caches nothing across runs)."""

    def __init__(
        self,
        rootfs: str = "/",
        proc_root: str = "/proc",
        commands: tuple[str, ...] = (),
        command_timeout: float = 10.0,
        cancel: threading.Event | None = None,
    ) -> None:
        self.rootfs = os.path.abspath(rootfs)
        self.proc_root = proc_root
        self.commands = commands
        self.command_timeout = command_timeout
        self.cancel = cancel  # set by the collector's stop(): walks end early (reload, shutdown)
        self._cache: dict[str, str | None] = {}
        self.files_read = 0
        self.entries_scanned = 0

    # -- paths ---------------------------------------------------------------
    def resolve(self, path: str, follow_last: bool = True) -> str:
        """Host path -> path on this machine, following symbolic links inside rootfs."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if done:
                    done.pop()
                continue
            cand = os.path.join(self.rootfs, *done, name)
            if not parts and not follow_last:
                done.append(name)
                break
            try:
                st = os.lstat(cand)
            except OSError:
                done.append(name)
                done.extend(p for p in parts if p != "..")
                break
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(cand)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            else:
                done.append(name)
        return os.path.join(self.rootfs, *done)

    def host_path(self, local: str) -> str:
        """Path on this machine under rootfs -> the host path it stands for."""
        rel = os.path.relpath(local, self.rootfs)
        return "/" if rel == "." else "/" + rel

    # -- files ---------------------------------------------------------------
    def read_text(self, path: str) -> str | None:
        """A host file's text (first READ_LIMIT bytes), or None when it does not exist."""
        if path in self._cache:
            return self._cache[path]
        try:
            # O_NONBLOCK: a FIFO planted where a config file should be must not hang the collection
            fd = os.open(self.resolve(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            text = None
        else:
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISDIR(mode):  # a directory matched by a glob (apt.conf.d/*): not a file to read
                    data = None
                elif not stat.S_ISREG(mode):
                    raise OSError(errno.EINVAL, "not a regular file", path)
                else:
                    chunks, left = [], READ_LIMIT
                    while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
                        chunks.append(chunk)
                        left -= len(chunk)
                    data = b"".join(chunks)
            finally:
                os.close(fd)
            if data is None:
                text = None
            else:
                self.files_read += 1
                text = data.decode("utf-8", "replace")
        self._cache[path] = text
        return text

    def stat(self, path: str) -> os.stat_result | None:
        try:
            return os.stat(self.resolve(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def lstat(self, path: str) -> os.stat_result | None:
        try:
            return os.lstat(self.resolve(path, follow_last=False))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.resolve(path, follow_last=False))
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching a glob pattern (sorted), the directory part resolved inside rootfs."""
        if not _glob.has_magic(pattern):
            return [pattern] if self.lstat(pattern) is not None else []
        head, tail = os.path.split(pattern)
        if _glob.has_magic(head):
            local = os.path.join(self.rootfs, pattern.lstrip("/"))
            return sorted(self.host_path(p) for p in _glob.glob(local))
        d = self.resolve(head)
        return sorted(os.path.join(head, os.path.basename(p)) for p in _glob.glob(os.path.join(_glob.escape(d), tail)))

    def proc_text(self, rel: str) -> str | None:
        """A file under proc_root (``sys/net/ipv4/ip_forward``), or None when absent."""
        try:
            with open(os.path.join(self.proc_root, rel), "rb") as f:
                return f.read(PROC_READ_LIMIT).decode("utf-8", "replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def process_names(self) -> set[str]:
        """The ``comm`` of every process under proc_root (15 characters, as the kernel keeps them)."""
        names: set[str] = set()
        try:
            pids = [p for p in os.listdir(self.proc_root) if p.isdigit()]
        except OSError:
            return names
        for pid in pids:
            try:
                with open(os.path.join(self.proc_root, pid, "comm"), "rb") as f:
                    names.add(f.read(64).decode("utf-8", "replace").strip())
            except OSError:
                continue
        return names

    def walk(self, root: str, max_entries: int, max_depth: int, stats: ScanStats) -> Iterator[tuple[str, os.stat_result]]:
        """(host path, lstat) of everything under ``root``: no symlink followed, one filesystem,
        at most ``max_entries`` entries (then ``stats.truncated``) and ``max_depth`` levels."""
        local_root = self.resolve(root, follow_last=False)
        try:
            st0 = os.lstat(local_root)
        except OSError:
            return
        if not stat.S_ISDIR(st0.st_mode):  # a symlink root (merged /usr: /bin -> usr/bin) is walked where it points
            return
        stack: list[tuple[str, int]] = [(local_root, 0)]
        while stack:
            if self.cancel is not None and self.cancel.is_set():
                stats.truncated = True
                return
            d, depth = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                stats.errors += 1
                continue
            with it:
                for e in it:
                    if stats.entries >= max_entries:
                        stats.truncated = True
                        return
                    stats.entries += 1
                    self.entries_scanned += 1
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        stats.errors += 1
                        continue
                    yield self.host_path(e.path), st
                    if stat.S_ISDIR(st.st_mode) and st.st_dev == st0.st_dev:
                        if depth + 1 < max_depth:
                            stack.append((e.path, depth + 1))
                        else:
                            stats.truncated = True

    # -- commands ------------------------------------------------------------
    def run(self, command_id: str) -> tuple[int, str]:
        """Run one allow-listed, enabled command (no shell, fixed arguments, bounded time and output)."""
        argv = ALLOWED_COMMANDS.get(command_id)
        if argv is None or command_id not in self.commands:
            raise CommandUnavailable(f"command {command_id!r} is not enabled (collectors.compliance.commands)")
        if self.rootfs != "/":
            raise CommandUnavailable(f"command {command_id!r} would read this container, not the host under {self.rootfs}")
        exe = next((os.path.join(d, argv[0]) for d in COMMAND_DIRS if os.access(os.path.join(d, argv[0]), os.X_OK)), None)
        if exe is None:
            raise CommandUnavailable(f"{argv[0]} is not installed")
        try:
            p = subprocess.run(
                [exe, *argv[1:]],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.command_timeout,
                env={"PATH": ":".join(COMMAND_DIRS), "LC_ALL": "C"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CommandUnavailable(f"{' '.join(argv)} did not finish in {self.command_timeout:g} s") from None
        except OSError as e:
            raise CommandUnavailable(f"{' '.join(argv)} could not run: {e}") from None
        out = (p.stdout[:OUTPUT_LIMIT] + p.stderr[:OUTPUT_LIMIT]).decode("utf-8", "replace")
        return p.returncode, out
