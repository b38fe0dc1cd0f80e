"""``/var/log/btmp``: the binary failed-login records ``lastb`` reads (struct utmp, glibc x86_64/aarch64).

Layout (384 bytes, little endian)::

    short ut_type; (2 bytes padding) pid_t ut_pid; char ut_line[32]; char ut_id[4];
    char ut_user[32]; char ut_host[256]; short e_termination, e_exit; int32 ut_session;
    int32 tv_sec, tv_usec; int32 ut_addr_v6[4]; char reserved[20]

The follower keeps (device, inode, offset, head hash) like the text tailer and
reads only whole records; btmp is rotated monthly by rename-and-create.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import ipaddress
import os
import stat
import struct
from typing import Any

from hostmond.collectors.auth.parse import AuthFailure, normalise_address

UTMP = struct.Struct("<h2xi32s4s32s256shhiii16s20x")
RECORD_SIZE = UTMP.size  # 384
assert RECORD_SIZE == 384
LOGIN_PROCESS = 6
USER_PROCESS = 7
_HEAD = RECORD_SIZE  # the first record identifies the file


def _cstr(b: bytes) -> str:
    i = b.find(b"\x00")
    if i >= 0:
        b = b[:i]
    return b.decode("utf-8", "replace")


def pack_record(
    user: str, host: str, line: str = "ssh:notty", t: float = 0.0, addr: str | None = None, pid: int = 0, ut_type: int = LOGIN_PROCESS
) -> bytes:
    """Build one btmp record (used by tests and by anyone producing fixtures)."""
    a = b"\x00" * 16
    if addr:
        ip = ipaddress.ip_address(addr)
        a = ip.packed + b"\x00" * (16 - len(ip.packed))
    sec = int(t)
    usec = int(round((t - sec) * 1e6))
    return UTMP.pack(
        ut_type, pid, line.encode()[:32], b"", user.encode()[:32], host.encode()[:256], 0, 0, 0, sec, usec, a
    )


def parse_record(data: bytes) -> AuthFailure | None:
    """One 384-byte record to a failure (``service`` from the tty: ``ssh*`` is sshd, else login)."""
    (ut_type, _pid, line_b, _id, user_b, host_b, _term, _exit, _sess, sec, usec, addr) = UTMP.unpack(data)
    if ut_type not in (LOGIN_PROCESS, USER_PROCESS):
        return None
    line = _cstr(line_b)
    user = _cstr(user_b)
    host_s = _cstr(host_b)
    ip: str | None = None
    host: str | None = None
    if addr != b"\x00" * 16:
        try:
            if addr[4:] == b"\x00" * 12:
                ip = str(ipaddress.IPv4Address(addr[:4]))
            else:
                ip, _ = normalise_address(str(ipaddress.IPv6Address(addr)))
        except ValueError:
            ip = None
    if ip is None and host_s:
        ip, host = normalise_address(host_s)
    service = "sshd" if line.startswith("ssh") else "login"
    t = sec + usec / 1e6 if sec > 0 else None
    return AuthFailure(t, service, "btmp", user or None, ip, host, None, 1)


class BtmpFollower:
    """Reads new btmp records; ``status`` is ok / missing / permission_denied / not_regular / error."""

    def __init__(self, path: str, start_at_end: bool = True, max_records: int = 100_000) -> None:
        self.path = path
        self.start_at_end = start_at_end
        self.max_records = max_records
        self.dev = self.ino = -1
        self.offset = 0
        self.head_hash = ""
        self.have_state = False
        self.status = "missing"
        self.error: str | None = None
        self.rotations = 0
        self.truncations = 0
        self.bad_records = 0
        self._first = True

    def load_state(self, d: dict[str, Any] | None) -> None:
        if isinstance(d, dict) and all(isinstance(d.get(k), int) for k in ("dev", "ino", "offset")):
            self.dev, self.ino, self.offset = d["dev"], d["ino"], d["offset"]
            self.head_hash = str(d.get("head_hash", ""))
            self.have_state = True
            self._first = False

    def state(self) -> dict[str, Any] | None:
        if not self.have_state:
            return None
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset, "head_hash": self.head_hash}

    def _open(self, path: str) -> tuple[int, os.stat_result] | None:
        try:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                self.status, self.error = "not_regular", f"{path}: not a regular file"
                return None
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self.status, self.error = "missing", f"{path}: no such file"
            return None
        except OSError as e:
            self.status = "permission_denied" if e.errno in (errno.EACCES, errno.EPERM) else "error"
            self.error = f"{path}: {e.strerror}"
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            self.status, self.error = "not_regular", f"{path}: not a regular file"
            return None
        return fd, st

    @staticmethod
    def _hash(fd: int) -> str:
        return hashlib.sha256(os.pread(fd, _HEAD, 0)).hexdigest()[:32]

    def _read(self, fd: int, size: int, offset: int, out: list[AuthFailure], limit: int) -> int:
        end = size - (size - offset) % RECORD_SIZE if size > offset else offset
        end = min(end, offset + limit * RECORD_SIZE)
        while offset < end:
            data = os.pread(fd, min(end - offset, 1024 * RECORD_SIZE), offset)
            if not data:
                break
            usable = len(data) - len(data) % RECORD_SIZE
            for i in range(0, usable, RECORD_SIZE):
                try:
                    r = parse_record(data[i : i + RECORD_SIZE])
                except (struct.error, ValueError):
                    r = None
                    self.bad_records += 1
                if r is not None:
                    out.append(r)
            offset += usable
            if usable == 0:
                break
        return offset

    def _find_rotated(self) -> str | None:
        for c in [self.path + ".1", self.path + ".0"] + sorted(glob.glob(glob.escape(self.path) + "-*"), reverse=True):
            try:
                st = os.stat(c)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (self.dev, self.ino) and stat.S_ISREG(st.st_mode):
                return c
        return None

    def poll(self) -> list[AuthFailure]:
        out: list[AuthFailure] = []
        opened = self._open(self.path)
        if opened is None:
            if self._first and self.status == "missing":
                self._first = False  # a btmp created later is read from its start
            return out
        fd, st = opened
        try:
            self.status, self.error = "ok", None
            if not self.have_state:
                start = st.st_size - st.st_size % RECORD_SIZE if (self.start_at_end and self._first) else 0
                self._first = False
                self.dev, self.ino, self.offset, self.have_state = st.st_dev, st.st_ino, start, True
                self.head_hash = self._hash(fd) if st.st_size >= _HEAD else ""
            same = (st.st_dev, st.st_ino) == (self.dev, self.ino)
            if same and self.head_hash and st.st_size >= _HEAD and self._hash(fd) != self.head_hash:
                same = False  # inode reused by a new file
            if not same:
                old = self._find_rotated()
                if old is not None:
                    o = self._open(old)
                    if o is not None:
                        try:
                            if not self.head_hash or self._hash(o[0]) == self.head_hash:
                                self._read(o[0], o[1].st_size, self.offset, out, 1 << 40)
                        finally:
                            os.close(o[0])
                self.rotations += 1
                self.status, self.error = "ok", None
                self.dev, self.ino, self.offset = st.st_dev, st.st_ino, 0
                self.head_hash = ""
            elif st.st_size < self.offset:
                self.truncations += 1
                self.offset = 0
                self.head_hash = ""
            self.offset = self._read(fd, st.st_size, self.offset, out, self.max_records)
            if not self.head_hash and st.st_size >= _HEAD:
                self.head_hash = self._hash(fd)
        finally:
            os.close(fd)
        return out
