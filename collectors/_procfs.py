"""Pure parsers of /proc and /sys text formats, and the small file readers they go with.

Every ``parse_*`` function takes the text of one kernel file and returns plain
values; none of them touches the file system, so each is unit-tested on strings
(node_exporter style). The readers (``read_text``, ``read_bytes``) are the only
I/O here, and they take a full path built from the configured roots
(``ctx.proc_root``, ``ctx.sys_root``): nothing in hostmon hard-codes ``/proc``.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import struct
from dataclasses import dataclass

# Clock ticks per second of the times in /proc/stat and /proc/PID/stat (USER_HZ).
try:
    USER_HZ: int = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    USER_HZ = 100
try:
    PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    PAGE_SIZE = 4096

SECTOR_SIZE = 512  # /proc/diskstats counts 512-byte sectors whatever the device's sector size


def kept_fds_limit(cap: int, share: int) -> int:
    """How many files a collector may keep open: ``cap``, or ``1/share`` of the soft descriptor
    limit when that is lower. The HTTP listeners size their connection cap to 3/4 of the limit and
    leave the rest to the process; what collectors keep open must fit in that rest (network takes
    at most 1/16, processes 1/8)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(0, min(cap, soft // share))


def read_bytes(path: str) -> bytes:
    """Read a whole small file as bytes; errors propagate to the caller.

    os.open/os.read: half the CPU of ``open()`` (no buffered reader, no text wrapper), which
    matters at some 35 reads per collection cycle."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if data:
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            if len(chunks) > 1:
                data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def read_text(path: str) -> str:
    """Read a whole small text file (procfs/sysfs) as ``open(path, encoding="utf-8",
    errors="replace").read()`` would, universal newlines included; errors propagate."""
    text = read_bytes(path).decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_small(path: str, size: int = 4096) -> bytes:
    """One read(2) of a small sysfs/procfs attribute file: a third of the cost of ``open()`` (no buffer, no wrapper)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def read_optional(path: str) -> str | None:
    """Read a file that may legitimately be absent (PSI on old kernels): None when it does not exist."""
    try:
        return read_text(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


# --------------------------------------------------------------------------- /proc/stat


@dataclass
class CPUTimes:
    """One ``cpuN`` line of /proc/stat, in seconds."""

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0


CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class Stat:
    """The figures of /proc/stat hostmon reports."""

    cpus: dict[str, CPUTimes]
    intr: int | None = None
    ctxt: int | None = None
    btime: int | None = None
    processes: int | None = None
    procs_running: int | None = None
    procs_blocked: int | None = None


def parse_stat(text: str, user_hz: int = USER_HZ) -> Stat:
    """Parse /proc/stat. Per-CPU lines become ``cpus["0"]``...; the aggregate ``cpu`` line is skipped."""
    st = Stat(cpus={})
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
    for line in text.splitlines():
        # the intr and softirq lines carry one number per interrupt (hundreds): only the total is read
        parts = line.split(None, 2) if line.startswith(("intr", "softirq")) else line.split()
        if not parts:
            continue
        key = parts[0]
        if key.startswith("cpu"):
            if key == "cpu":
                continue
            vals = [int(v) / user_hz for v in parts[1 : 1 + len(names)]]
            st.cpus[key[3:]] = CPUTimes(**dict(zip(names, vals)))
        elif key == "intr" and len(parts) > 1:
            st.intr = int(parts[1])
        elif key == "ctxt" and len(parts) > 1:
            st.ctxt = int(parts[1])
        elif key == "btime" and len(parts) > 1:
            st.btime = int(parts[1])
        elif key == "processes" and len(parts) > 1:
            st.processes = int(parts[1])
        elif key == "procs_running" and len(parts) > 1:
            st.procs_running = int(parts[1])
        elif key == "procs_blocked" and len(parts) > 1:
            st.procs_blocked = int(parts[1])
    return st


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """Parse /proc/loadavg: ``0.28 0.12 0.04 2/90 7180`` -> (0.28, 0.12, 0.04)."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"loadavg: expected at least 3 fields, got {text!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


# --------------------------------------------------------------------------- PSI


@dataclass
class PressureLine:
    avg10: float
    avg60: float
    avg300: float
    total_seconds: float


def parse_pressure(text: str) -> dict[str, PressureLine]:
    """Parse /proc/pressure/{cpu,memory,io}: ``{"some": ..., "full": ...}``; ``total`` µs become seconds."""
    out: dict[str, PressureLine] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        try:
            out[parts[0]] = PressureLine(
                float(kv["avg10"]), float(kv["avg60"]), float(kv["avg300"]), int(kv["total"]) / 1e6
            )
        except (KeyError, ValueError) as e:
            raise ValueError(f"pressure: bad line {line!r}") from e
    return out


# --------------------------------------------------------------------------- meminfo

_PARENS = re.compile(r"\((.*)\)")


@functools.lru_cache(maxsize=512)  # the kernel's fixed set of keys, named again every cycle
def meminfo_metric_name(key: str, has_unit: bool) -> str:
    """node_exporter's naming: ``Active(anon)`` -> ``node_memory_Active_anon_bytes``; unitless keys get no ``_bytes``."""
    key = _PARENS.sub(r"_\1", key)
    return f"node_memory_{key}_bytes" if has_unit else f"node_memory_{key}"


def parse_meminfo(text: str) -> dict[str, float]:
    """Parse /proc/meminfo into ``{metric name: value}``; ``kB`` values become bytes."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        value = float(int(parts[0]))
        has_unit = len(parts) > 1
        if has_unit:
            if parts[1] != "kB":
                raise ValueError(f"meminfo: unknown unit {parts[1]!r} in {line!r}")
            value *= 1024
        out[meminfo_metric_name(key.strip(), has_unit)] = value
    return out


def parse_vmstat(text: str) -> dict[str, int]:
    """Parse /proc/vmstat (``name value`` per line)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


# --------------------------------------------------------------------------- mounts / diskstats


@dataclass
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def readonly(self) -> bool:
        return "ro" in self.options


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape_mount(s: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as ``\\040`` etc."""
    if "\\" not in s:
        return s
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), s)


def parse_mounts(text: str) -> list[Mount]:
    """Parse /proc/PID/mounts (fstab format)."""
    out: list[Mount] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        out.append(
            Mount(
                device=_unescape_mount(parts[0]),
                mountpoint=_unescape_mount(parts[1]),
                fstype=parts[2],
                options=tuple(parts[3].split(",")),
            )
        )
    return out


DISKSTAT_FIELDS = (
    "reads_completed",
    "reads_merged",
    "sectors_read",
    "read_time_ms",
    "writes_completed",
    "writes_merged",
    "sectors_written",
    "write_time_ms",
    "io_now",
    "io_time_ms",
    "io_time_weighted_ms",
    "discards_completed",
    "discards_merged",
    "sectors_discarded",
    "discard_time_ms",
    "flush_requests",
    "flush_time_ms",
)


def parse_diskstats(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/diskstats: ``{device: {field: value}}``. Older kernels have 11 or 15 fields; absent ones are left out."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 14:
            continue
        vals = parts[3:]
        out[parts[2]] = {name: int(v) for name, v in zip(DISKSTAT_FIELDS, vals)}
    return out


# --------------------------------------------------------------------------- network

NETDEV_FIELDS = (
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
)


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/dev: ``{interface: {receive_bytes: ..., ...}}`` (two header lines skipped)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        vals = rest.split()
        if len(vals) < len(NETDEV_FIELDS):
            raise ValueError(f"net/dev: expected {len(NETDEV_FIELDS)} values, got {line!r}")
        out[name.strip()] = {k: int(v) for k, v in zip(NETDEV_FIELDS, vals)}
    return out


# Kernel's include/net/tcp_states.h; names as node_exporter's tcpstat collector.
TCP_STATES = {
    1: "established",
    2: "syn_sent",
    3: "syn_recv",
    4: "fin_wait1",
    5: "fin_wait2",
    6: "time_wait",
    7: "close",
    8: "close_wait",
    9: "last_ack",
    10: "listen",
    11: "closing",
}


def count_tcp_states(text: str, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Count connections by state in /proc/net/tcp or tcp6 (4th column, hex). Adds to ``counts`` when given."""
    if counts is None:
        counts = {name: 0 for name in TCP_STATES.values()}
    lines = text.splitlines()
    for line in lines[1:]:
        parts = line.split(None, 4)
        if len(parts) < 4:
            continue
        try:
            name = TCP_STATES.get(int(parts[3], 16))
        except ValueError:
            continue
        if name is not None:  # NEW_SYN_RECV (12) is internal; node_exporter ignores it too
            counts[name] = counts.get(name, 0) + 1
    return counts


# --------------------------------------------------------------------------- sock_diag (netlink)

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCPDIAG_GETSOCK = 18  # the v1 request: the kernel dumps IPv4 and IPv6 in one walk of the hash table
NLM_F_REQUEST_DUMP = 0x1 | 0x300


def inet_diag_tcp_request(seq: int = 1) -> bytes:
    """A netlink TCPDIAG_GETSOCK dump request for TCP sockets of every state (struct inet_diag_req)."""
    body = struct.pack("=BBBB", 2, 0, 0, 0) + b"\0" * 48 + struct.pack("=II", 0xFFF, 0)
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), TCPDIAG_GETSOCK, NLM_F_REQUEST_DUMP, seq, 0) + body


def uniform_run(data: bytes, off: int) -> tuple[int, int, int]:
    """``(count, aligned length, type)`` of the run of netlink messages from ``off`` that all have the
    length and type of the first, checked with strided slices (C speed, no loop per message); a
    count of 0 when fewer than two follow each other or one differs. A sock_diag dump without
    extensions is such a run: every inet_diag_msg is 88 bytes."""
    length, typ = _NLMSG_HDR.unpack_from(data, off)[:2]
    a = (length + 3) & ~3
    if length < _NLMSG_HDR.size:
        return 0, a, typ
    k = (len(data) - off) // a
    if k < 2:
        return 0, a, typ
    end = off + k * a
    head = data[off : off + 6]  # nlmsg_len (4 bytes) and nlmsg_type (2) of the first message
    for i in range(6):
        if data[off + i : end : a].count(head[i]) != k:
            return 0, a, typ
    return k, a, typ


def count_inet_diag_states(data: bytes, counts: dict[str, int]) -> bool:
    """Add the states of the inet_diag_msg records in one netlink read to ``counts``; True at NLMSG_DONE.

    Raises OSError for an NLMSG_ERROR answer (carrying the kernel's errno).
    """
    off = 0
    n = len(data)
    hdr = _NLMSG_HDR
    while off + hdr.size <= n:
        length, typ = hdr.unpack_from(data, off)[:2]
        if length < hdr.size:
            raise ValueError(f"netlink: bad message length {length}")
        if typ == NLMSG_DONE:
            return True
        if typ == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, off + hdr.size)[0]
            raise OSError(err, f"sock_diag: {os.strerror(err) if err > 0 else 'error'}")
        if length >= hdr.size + 2:
            k, a, _ = uniform_run(data, off)
            if k:  # a run of same-sized records: their state bytes in one slice, counted in C
                states = data[off + hdr.size + 1 : off + k * a : a]
                for code, name in TCP_STATES.items():
                    c = states.count(code)
                    if c:
                        counts[name] = counts.get(name, 0) + c
                off += k * a
                continue
            name = TCP_STATES.get(data[off + hdr.size + 1])  # inet_diag_msg: family, state, ...
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        off += (length + 3) & ~3
    return False


SOCK_DIAG_BY_FAMILY = 20
_INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48x")  # family, protocol, ext, pad, states, struct inet_diag_sockid
_INET_DIAG_QUEUES = struct.Struct("=II")  # inet_diag_msg's idiag_rqueue, idiag_wqueue
_INET_DIAG_QUEUES_AT = _NLMSG_HDR.size + 4 + 48 + 4  # after family/state/timer/retrans, the sockid, expires


def inet_diag_v2_request(family: int, protocol: int, seq: int = 1) -> bytes:
    """A netlink SOCK_DIAG_BY_FAMILY dump request (struct inet_diag_req_v2) for every socket of
    ``protocol`` (17: UDP) and ``family`` (2: IPv4, 10: IPv6), in every state."""
    body = _INET_DIAG_REQ_V2.pack(family, protocol, 0, 0, 0xFFFFFFFF)
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, seq, 0) + body


def sum_inet_diag_queues(data: bytes, acc: list[int]) -> bool:
    """Add the queues of the inet_diag_msg records in one netlink read to ``acc`` = [tx, rx]; True
    at NLMSG_DONE. For UDP the kernel fills them as /proc/net/udp's tx_queue and rx_queue columns
    (sk_wmem_alloc_get, udp_rqueue_get). Raises OSError for an NLMSG_ERROR answer."""
    off = 0
    n = len(data)
    hdr = _NLMSG_HDR
    q = _INET_DIAG_QUEUES
    while off + hdr.size <= n:
        length, typ = hdr.unpack_from(data, off)[:2]
        if length < hdr.size:
            raise ValueError(f"netlink: bad message length {length}")
        if typ == NLMSG_DONE:
            return True
        if typ == NLMSG_ERROR:
            err = -struct.unpack_from("=i", data, off + hdr.size)[0]
            raise OSError(err, f"sock_diag: {os.strerror(err) if err > 0 else 'error'}")
        if length >= _INET_DIAG_QUEUES_AT + q.size:
            rq, wq = q.unpack_from(data, off + _INET_DIAG_QUEUES_AT)
            acc[0] += wq
            acc[1] += rq
        off += (length + 3) & ~3
    return False


def is_procfs(path: str, mounts_text: str | None = None) -> bool:
    """Whether ``path`` is a mount of the proc file system in this process's mount table."""
    real = os.path.realpath(path)
    if mounts_text is None:
        try:
            mounts_text = read_text("/proc/self/mounts")
        except OSError:
            return False
    return any(m.fstype == "proc" and m.mountpoint == real for m in parse_mounts(mounts_text))


# --------------------------------------------------------------------------- /proc/PID/stat


# Indexes into the tuple parse_pid_stat returns.
PS_COMM, PS_STATE, PS_UTIME, PS_STIME, PS_THREADS, PS_START, PS_RSS = range(7)


def parse_pid_stat(data: bytes) -> tuple[bytes, bytes, int, int, int, int, int]:
    """Parse /proc/PID/stat into ``(comm, state, utime, stime, num_threads, starttime, rss_pages)``.

    Times are in clock ticks (``USER_HZ``), RSS in pages. ``comm`` and ``state`` stay
    bytes (decoded once per group, not once per process: this runs for every PID).
    ``comm`` may hold spaces and parentheses, so it ends at the LAST ``)``.
    """
    lpar = data.find(b"(")
    rpar = data.rfind(b")")
    if lpar < 0 or rpar < lpar:
        raise ValueError(f"pid stat: no (comm) in {data[:80]!r}")
    # f[0] is field 3 (state) of proc(5); field N is f[N - 3].
    f = data[rpar + 2 :].split(None, 22)
    if len(f) < 22:
        raise ValueError(f"pid stat: {len(f)} fields after comm, expected at least 22")
    return (data[lpar + 1 : rpar], f[0], int(f[11]), int(f[12]), int(f[17]), int(f[19]), int(f[21]))
