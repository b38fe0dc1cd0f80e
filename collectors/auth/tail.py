"""Follow a text log file through rotation, truncation and agent restarts.

Position = (device, inode, offset) plus a hash of the file's first bytes (an inode
number can be reused by a new file). Only complete lines are consumed: a line
whose newline has not been written yet is read again on the next poll. Lines
longer than ``max_line_bytes`` are skipped (counted in ``overlong``) without
ever holding more than one read chunk in memory.

Rotation handled:
* rename-and-create (logrotate default): the old file is read to its end, then
  the new one from offset 0. The old file is the open descriptor, or after a
  restart the file among ``PATH.1``, ``PATH.0``, ``PATH-*`` with the saved inode.
* copytruncate: the file shrinks below the saved offset, or its first bytes change
  (truncated and refilled past the offset between two polls): start again at 0.

Never opens anything but a regular file, and opens with O_NONBLOCK, so a FIFO
or a device put in the log's place can't block the collector.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import stat
from typing import Any

HEAD_BYTES = 256
OK = "ok"
MISSING = "missing"
DENIED = "permission_denied"
NOT_REGULAR = "not_regular"
ERROR = "error"
STATUSES = (OK, MISSING, DENIED, NOT_REGULAR, ERROR)


def _head_hash(fd: int, n: int) -> str:
    data = os.pread(fd, n, 0) if n > 0 else b""
    return hashlib.sha256(data).hexdigest()[:32]


class _Open:
    __slots__ = ("fd", "dev", "ino", "offset", "head_len", "head_hash", "skipping")

    def __init__(self, fd: int, dev: int, ino: int, offset: int) -> None:
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.offset = offset
        self.head_len = 0
        self.head_hash = ""
        self.skipping = False


class FileTailer:
    """Tails one path. ``poll()`` returns new complete lines (str, newline stripped)."""

    def __init__(
        self,
        path: str,
        *,
        max_line_bytes: int = 64 * 1024,
        max_read_bytes: int = 16 * 1024 * 1024,
        chunk_bytes: int = 256 * 1024,
        start_at_end: bool = True,
    ) -> None:
        self.path = path
        self.max_line_bytes = max(256, int(max_line_bytes))
        self.max_read_bytes = max(1, int(max_read_bytes))
        self.chunk_bytes = max(self.max_line_bytes + 1, int(chunk_bytes))
        self.start_at_end = start_at_end
        self.cur: _Open | None = None
        self.saved: dict[str, Any] | None = None
        self.status = MISSING
        self.error: str | None = None
        self.overlong = 0  # lines skipped for being longer than max_line_bytes
        self.truncations = 0  # copytruncate (or any shrink) seen
        self.rotations = 0  # rename-and-create seen
        self.lost_rotations = 0  # a rotated file we could not find again after a restart
        self.bytes_read = 0
        self.lines_read = 0
        self._first_open = True

    # -- state -------------------------------------------------------------------
    def load_state(self, d: dict[str, Any] | None) -> None:
        if isinstance(d, dict) and all(isinstance(d.get(k), int) for k in ("dev", "ino", "offset")):
            self.saved = dict(d)
            self._first_open = False

    def state(self) -> dict[str, Any] | None:
        c = self.cur
        if c is None:
            return self.saved
        self._refresh_head(c)
        return {"dev": c.dev, "ino": c.ino, "offset": c.offset, "head_len": c.head_len, "head_hash": c.head_hash,
                "skipping": c.skipping}

    def _refresh_head(self, c: _Open) -> None:
        if c.head_len < HEAD_BYTES:
            try:
                n = min(HEAD_BYTES, os.fstat(c.fd).st_size)
                if n != c.head_len:
                    c.head_len, c.head_hash = n, _head_hash(c.fd, n)
            except OSError:
                pass

    def close(self) -> None:
        if self.cur is not None:
            self.saved = self.state()
            try:
                os.close(self.cur.fd)
            except OSError:
                pass
            self.cur = None

    # -- opening -----------------------------------------------------------------
    def _open_path(self, path: str) -> tuple[int, os.stat_result] | None:
        """Open a regular file without blocking; set status on failure."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._set(MISSING, f"{path}: no such file")
            return None
        except PermissionError as e:
            self._set(DENIED, f"{path}: {e.strerror}")
            return None
        except OSError as e:
            self._set(ERROR, f"{path}: {e.strerror}")
            return None
        if not stat.S_ISREG(st.st_mode):
            self._set(NOT_REGULAR, f"{path}: not a regular file")
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        except PermissionError as e:
            self._set(DENIED, f"{path}: {e.strerror}")
            return None
        except FileNotFoundError:
            self._set(MISSING, f"{path}: no such file")
            return None
        except OSError as e:
            self._set(ERROR, f"{path}: {e.strerror}")
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between stat and open
            os.close(fd)
            self._set(NOT_REGULAR, f"{path}: not a regular file")
            return None
        return fd, st

    def _set(self, status: str, error: str | None) -> None:
        self.status = status
        self.error = error

    def _find_rotated(self, dev: int, ino: int) -> str | None:
        cands = [self.path + ".1", self.path + ".0"] + sorted(glob.glob(glob.escape(self.path) + "-*"), reverse=True)
        for c in cands:
            if c.endswith((".gz", ".xz", ".bz2", ".zst")):
                continue
            try:
                st = os.stat(c)
            except OSError:
                continue
            if st.st_dev == dev and st.st_ino == ino and stat.S_ISREG(st.st_mode):
                return c
        return None

    def _matches_saved(self, fd: int, st: os.stat_result, saved: dict[str, Any]) -> bool:
        if st.st_dev != saved["dev"] or st.st_ino != saved["ino"]:
            return False
        hl = int(saved.get("head_len", 0) or 0)
        if hl > 0:
            if st.st_size < hl:
                return False
            return _head_hash(fd, hl) == saved.get("head_hash")
        return True

    # -- reading -------------------------------------------------------------------
    def poll(self) -> list[str]:
        """Read what is new; never raises for file problems (see ``status``/``error``)."""
        out: list[str] = []
        budget = [self.max_read_bytes]
        if self.cur is None:
            self._resume(out, budget)
            if self.cur is None:
                return out
        c = self.cur
        if self._rewritten(c):
            # truncated and written again past our offset between two polls (copytruncate on a busy
            # log): the size check below cannot see it, the first bytes can
            self.truncations += 1
            c.offset, c.head_len, c.head_hash, c.skipping = 0, 0, "", False
        try:
            self._read(c, out, budget)
        except OSError as e:
            self._set(ERROR, f"{self.path}: {e.strerror}")
            self.close()
            return out
        if budget[0] <= 0:
            return out  # more to read; the next poll continues here
        # Did the path move on (rename-and-create) or shrink (copytruncate)?
        try:
            pst = os.stat(self.path)
        except FileNotFoundError:
            pst = None
        except OSError as e:
            self._set(DENIED if e.errno in (errno.EACCES, errno.EPERM) else ERROR, f"{self.path}: {e.strerror}")
            return out
        try:
            fst = os.fstat(c.fd)
        except OSError:
            fst = None
        if pst is not None and (pst.st_dev, pst.st_ino) != (c.dev, c.ino):
            # Rotated: the old file has been read to its end; a last line without newline is final.
            self._finish_partial(c, out)
            self.rotations += 1
            os.close(c.fd)
            self.cur = None
            self.saved = None
            if not stat.S_ISREG(pst.st_mode):
                self._set(NOT_REGULAR, f"{self.path}: not a regular file")
                return out
            opened = self._open_path(self.path)
            if opened is None:
                return out
            fd, st = opened
            self.cur = _Open(fd, st.st_dev, st.st_ino, 0)
            self._set(OK, None)
            self._read(self.cur, out, budget)
        elif fst is not None and fst.st_size < c.offset:
            self.truncations += 1
            c.offset = 0
            c.head_len = 0
            c.skipping = False
            self._read(c, out, budget)
        elif pst is None:
            self._set(MISSING, f"{self.path}: no such file")
        return out

    def _resume(self, out: list[str], budget: list[int]) -> None:
        saved = self.saved
        opened = self._open_path(self.path)
        if saved is not None:
            if opened is not None and self._matches_saved(opened[0], opened[1], saved):
                fd, st = opened
                c = _Open(fd, st.st_dev, st.st_ino, int(saved["offset"]))
                c.skipping = bool(saved.get("skipping"))
                if st.st_size < c.offset:
                    self.truncations += 1
                    c.offset, c.skipping = 0, False
                self.cur = c
                self._set(OK, None)
                return
            # The file we were reading is not at the path any more: finish it if we can find it.
            old = self._find_rotated(int(saved["dev"]), int(saved["ino"]))
            if old is not None:
                o = self._open_path(old)
                if o is not None and self._matches_saved(o[0], o[1], saved):
                    oc = _Open(o[0], o[1].st_dev, o[1].st_ino, int(saved["offset"]))
                    oc.skipping = bool(saved.get("skipping"))
                    if o[1].st_size >= oc.offset:
                        try:
                            self._read(oc, out, [1 << 62])
                            self._finish_partial(oc, out)
                        except OSError:
                            pass
                    os.close(o[0])
                    self.rotations += 1
                elif o is not None:
                    os.close(o[0])
                    self.lost_rotations += 1
            elif opened is not None:
                self.lost_rotations += 1
            if opened is None:
                if self.status != MISSING:
                    return
                self.saved = None
                return
            fd, st = opened
            self.cur = _Open(fd, st.st_dev, st.st_ino, 0)
            self.saved = None
            self._set(OK, None)
            return
        if opened is None:
            self._first_open = False  # a file that appears later is new: read it from its start
            return
        fd, st = opened
        start = st.st_size if (self.start_at_end and self._first_open) else 0
        self._first_open = False
        c = _Open(fd, st.st_dev, st.st_ino, start)
        if start > 0:
            # start at the end, but on a line boundary: skip a partial last line
            c.offset = self._line_start(fd, start)
        self.cur = c
        self._set(OK, None)

    @staticmethod
    def _rewritten(c: _Open) -> bool:
        """The open file's first bytes are no longer those seen before (or it shrank below them)."""
        if c.head_len <= 0:
            return False
        try:
            size = os.fstat(c.fd).st_size
            if size < c.head_len:
                return True
            return _head_hash(c.fd, c.head_len) != c.head_hash
        except OSError:
            return False

    @staticmethod
    def _line_start(fd: int, end: int) -> int:
        lo = max(0, end - 65536)
        data = os.pread(fd, end - lo, lo)
        i = data.rfind(b"\n")
        return lo + i + 1 if i >= 0 else end

    def _read(self, c: _Open, out: list[str], budget: list[int]) -> None:
        fd = c.fd
        maxl = self.max_line_bytes
        while budget[0] > 0:
            data = os.pread(fd, min(self.chunk_bytes, budget[0] + maxl), c.offset)
            if not data:
                return
            pos = 0
            n = len(data)
            if c.skipping:
                j = data.find(b"\n")
                if j < 0:
                    c.offset += n
                    budget[0] -= n
                    self.bytes_read += n
                    continue
                pos = j + 1
                c.skipping = False
            last_nl = data.rfind(b"\n")
            if last_nl >= pos:
                for raw in data[pos:last_nl].split(b"\n"):
                    if len(raw) > maxl:
                        self.overlong += 1
                        continue
                    out.append(raw.decode("utf-8", "replace"))
                self.lines_read += data.count(b"\n", pos, last_nl + 1)
                pos = last_nl + 1
            tail = n - pos
            if tail > maxl:
                # a line longer than the limit with no newline in this chunk: drop it and skip to its end
                self.overlong += 1
                c.skipping = True
                pos = n
            consumed = pos
            c.offset += consumed
            budget[0] -= consumed
            self.bytes_read += consumed
            if consumed == 0 or n < self.chunk_bytes:
                return  # end of file, or only a partial line left: wait for its newline

    def _finish_partial(self, c: _Open, out: list[str]) -> None:
        """At rotation the old file's unterminated last line will never grow: take it as is."""
        try:
            data = os.pread(c.fd, self.max_line_bytes + 1, c.offset)
        except OSError:
            return
        if not data:
            return
        if c.skipping:
            c.offset += len(data)
            c.skipping = False
            return
        if b"\n" in data:  # more complete lines arrived: read them first
            self._read(c, out, [1 << 62])
            data = os.pread(c.fd, self.max_line_bytes + 1, c.offset)
            if not data:
                return
        if len(data) > self.max_line_bytes:
            self.overlong += 1
        else:
            out.append(data.decode("utf-8", "replace"))
            self.lines_read += 1
        c.offset += len(data)
