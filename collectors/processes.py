"""``processes``: process counts by state, threads, and per process-group usage.

Per process it reads only what it needs, straight from ``{proc_root}``:
``/proc/PID/stat`` (name, state, CPU ticks, threads, start time, RSS), a listing of
``/proc/PID/fd`` (open descriptors), the owner uid (only when tenant rules exist; it comes
with the stat() of ``/proc/PID/fd`` that gives the fd count on Linux >= 6.2) and ``/proc/PID/cgroup`` (only when a tenant rule needs it, and
then once per process life, cached by PID and start time). A kernel thread's fd directory
is listed once per thread life (it has no fd table: the answer cannot change). On a real procfs
the stat file and fd directory of up to 512 processes stay open between collections (pread and
fstat instead of a path lookup, open and close each time: about half the kernel time per
process). That keeps the cost to a few tens of microseconds of CPU per process (see
``bench/processes_bench.py``).

Processes are grouped by (name, tenant). Never one series per PID: only the top
``top_n`` groups by CPU used since the previous collection and the top ``top_n`` by
resident memory get their own series; every other group of a tenant folds into
``groupname="other"``. The CPU counter of a group adds the CPU each of its
processes used since the previous collection, so it stays monotonic when
processes exit or groups move in and out of the top N (process-exporter does
the same); a group with no live process is forgotten.

Listing another user's ``fd`` directory fails when the agent is not root: each
such failure is counted in ``hostmon_process_permission_errors_total``, never
logged per process. (Linux 6.2 and later report the fd count as the size of
``/proc/PID/fd`` to anyone, so there a non-root agent gets every count and the
counter stays low; the size is trusted only after it matched a listing once.) A process that exits while being read is normal, not an error.

The ``node_processes_*`` figures have node_exporter's names (its ``processes``
collector); the group figures are hostmon's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
    check_not_negative,
    field,
)

OTHER = "other"
MAX_KEPT_FDS = 1024  # files kept open (two per process) at most, all processes together
_GROUP_LABELS = ("groupname", "tenant_id")
_VANISHED = (errno.ENOENT, errno.ESRCH)


@dataclass
class ProcessesConfig(CollectorConfig):
    top_n: int = field(
        20,
        "Process groups with their own series: the top N by CPU plus the top N by memory; the rest fold into 'other'.",
        check=check_not_negative,
    )
    open_fds: bool = field(True, "Count open file descriptors per group (one directory listing per process).")
    thread_states: bool = field(
        False,
        "Report node_processes_threads_state (node_exporter's): reads every thread's stat file, so one read per thread per cycle.",
    )


class ProcessesCollector(Collector[ProcessesConfig]):
    name = "processes"
    config_class = ProcessesConfig
    metrics = (
        MetricSpec("node_processes_state", GAUGE, "Number of processes in each state.", ("state",)),
        MetricSpec("node_processes_threads", GAUGE, "Allocated threads in system."),
        MetricSpec("node_processes_threads_state", GAUGE, "Number of threads in each state.", ("thread_state",)),
        MetricSpec("node_processes_pids", GAUGE, "Number of PIDs."),
        MetricSpec("node_processes_max_processes", GAUGE, "Number of max PIDs limit."),
        MetricSpec("node_processes_max_threads", GAUGE, "Limit of threads in the system."),
        MetricSpec(
            "hostmon_process_group_cpu_seconds_total",
            COUNTER,
            "CPU seconds (user + system) used by the processes of a group while the agent watched them.",
            _GROUP_LABELS,
            "seconds",
        ),
        MetricSpec(
            "hostmon_process_group_resident_memory_bytes",
            GAUGE,
            "Resident memory of the processes of a group.",
            _GROUP_LABELS,
            "bytes",
        ),
        MetricSpec("hostmon_process_group_open_fds", GAUGE, "Open file descriptors of the processes of a group.", _GROUP_LABELS),
        MetricSpec("hostmon_process_group_processes", GAUGE, "Number of processes in a group.", _GROUP_LABELS),
        MetricSpec("hostmon_process_groups", GAUGE, "Distinct (name, tenant) process groups found, before folding into 'other'."),
        MetricSpec(
            "hostmon_process_permission_errors_total",
            COUNTER,
            "Per-process files the agent was not allowed to read (other users' processes when not root).",
        ),
    )

    config: ProcessesConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        self._prev: dict[int, tuple[int, int, int, str]] = {}
        self._group_cpu: dict[tuple[str, str], int] = {}  # ticks, cumulative
        self._other_cpu: dict[str, int] = {}  # tenant -> ticks, cumulative
        self._perm_errors = 0
        # Whether st_size of /proc/PID/fd is the fd count (Linux >= 6.2; not in a fixture tree):
        # None until probed on a process whose fd directory could be listed.
        self._fd_size_ok: bool | None = None
        self._fd_probes = 0
        # Kernel threads (most PIDs of a small host) have no fd table for life: what listing
        # their fd directory gave (0 fds; permission denied when not root) is kept per PID and
        # start time instead of listing it again every cycle. pid -> (starttime, denied)
        self._kthreads: dict[int, tuple[int, bool]] = {}
        # Files kept open per process: pid -> [stat fd, fd-directory fd or -1]. Reading a kept
        # /proc/PID/stat again (pread at 0 makes the kernel regenerate it) and fstat() of the kept fd
        # directory skip the path lookup, open and close: about half the kernel time per process.
        # A kept fd stays bound to its process: once that exits, reading fails (ESRCH), so a reused
        # PID is never read through the old fd. Bounded (MAX_KEPT_FDS, or 1/8 of RLIMIT_NOFILE).
        self._kept: dict[int, list[int]] = {}
        self._nkept = 0
        self._max_kept = 0

    def start(self) -> None:
        # only on a real procfs: a kept fd follows its process there, while a file in a copied tree
        # (tests, --path.procfs over a snapshot) may be replaced under the same name
        real = _procfs.is_procfs(self.ctx.proc_root)
        self._max_kept = _procfs.kept_fds_limit(MAX_KEPT_FDS, 8) if real else 0

    def stop(self) -> None:
        for pid in list(self._kept):
            self._forget(pid)

    def _forget(self, pid: int) -> None:
        k = self._kept.pop(pid, None)
        if k is None:
            return
        for fd in k:
            if fd >= 0:
                self._nkept -= 1
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _probe_fd_size(self, size: int, listed: int) -> bool | None:
        self._fd_probes += 1
        if size == listed:
            return True
        if size == 0 or self._fd_probes >= 8:
            return False  # older kernel, or not procfs
        return None  # fds changed between the two calls: probe the next process

    def _read_sys(self, name: str) -> int | None:
        try:
            return int(_procfs.read_small(os.path.join(self.ctx.proc_root, "sys", "kernel", name)).strip())
        except (OSError, ValueError):
            return None

    def collect(self) -> Iterator[Sample]:
        proc = self.ctx.proc_root
        tenancy = self.ctx.tenancy
        default_tenant = self.ctx.tenant_id
        want_fds = self.config.open_fds
        prev = self._prev
        # pid -> (starttime, cpu ticks, uid, tenant): plain tuples, this runs per PID.
        new_prev: dict[int, tuple[int, int, int, str]] = {}
        # (comm bytes, tenant) -> [count, rss_pages, fds, cpu_delta_ticks]
        groups: dict[tuple[bytes, str], list[int]] = {}
        states: dict[bytes, int] = {}
        threads = 0
        pids = 0
        perm = 0
        o_open, o_read, o_close, listdir, ostat, fstat = os.open, os.read, os.close, os.listdir, os.stat, os.fstat
        rdonly = os.O_RDONLY
        dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        fd_size_ok = self._fd_size_ok
        kthreads = self._kthreads
        new_kthreads: dict[int, tuple[int, bool]] = {}

        kept = self._kept
        pread = os.pread
        max_kept = self._max_kept

        prefix = proc + "/"
        for entry in listdir(proc):
            if not entry.isdigit():
                continue
            base = prefix + entry
            pid = int(entry)
            try:
                k = kept.get(pid)
                data = b""
                if k is not None:
                    try:
                        data = pread(k[0], 4096, 0)
                    except OSError:
                        pass  # exited (ESRCH), perhaps with its PID reused already: open it afresh
                    if not data:
                        self._forget(pid)
                        k = None
                if not data:
                    fd = o_open(base + "/stat", rdonly)
                    try:
                        data = o_read(fd, 4096)
                    except BaseException:
                        o_close(fd)
                        raise
                    if self._nkept < max_kept:
                        k = kept[pid] = [fd, -1]
                        self._nkept += 1
                    else:
                        o_close(fd)
                # _procfs.parse_pid_stat, inlined (it runs for every PID): comm ends at the LAST ")"
                lpar = data.find(b"(")
                rpar = data.rfind(b")")
                if lpar < 0 or rpar < lpar:
                    raise ValueError("no (comm)")
                f = data[rpar + 2 :].split(None, 22)  # f[N - 3] is field N of proc(5)
                comm = data[lpar + 1 : rpar]
                state = f[0]
                cpu = int(f[11]) + int(f[12])
                nthreads = int(f[17])
                start = int(f[19])
                rss = int(f[21])
            except PermissionError:
                perm += 1
                continue
            except OSError as e:
                if e.errno in _VANISHED:
                    continue  # exited between listdir and read: normal
                self.partial_error("pid_stat_unreadable")
                continue
            except (ValueError, IndexError):
                self.partial_error("pid_stat_malformed")
                continue
            pids += 1
            threads += nthreads
            states[state] = states.get(state, 0) + 1
            p = prev.get(pid)
            if p is not None and p[0] != start:
                p = None  # PID reused by a new process
            delta = cpu - p[1] if p is not None else cpu
            delta = max(delta, 0)

            nfds = 0
            uid = -1  # owner, from whichever stat() of the process's files comes first
            if want_fds:
                k = kthreads.get(pid)
                if k is not None and k[0] == start:  # a kernel thread: no fd table, same answer as before
                    new_kthreads[pid] = k
                    if k[1]:
                        perm += 1
                else:
                    fdpath = base + "/fd"
                    try:
                        if fd_size_ok:
                            # Linux >= 6.2 reports the number of open fds as the size of /proc/PID/fd,
                            # a third of the cost of listing it; 0 may mean no fds: list to be sure.
                            if k is not None and k[1] == -1 and self._nkept < max_kept:
                                try:
                                    k[1] = o_open(fdpath, dir_flags)
                                    self._nkept += 1
                                except PermissionError:
                                    k[1] = -2  # another user's (agent not root): stat its path, as before
                            fst = fstat(k[1]) if k is not None and k[1] >= 0 else ostat(fdpath)
                            uid = fst.st_uid  # every file under /proc/PID has the process's owner
                            nfds = fst.st_size
                            if nfds == 0:
                                nfds = len(listdir(fdpath))
                        else:
                            nfds = len(listdir(fdpath))
                            if fd_size_ok is None and nfds > 0:
                                fd_size_ok = self._probe_fd_size(ostat(fdpath).st_size, nfds)
                        if nfds == 0 and _is_kthread(data):
                            new_kthreads[pid] = (start, False)
                    except PermissionError:
                        perm += 1
                        if _is_kthread(data):
                            new_kthreads[pid] = (start, True)
                    except OSError:
                        pass  # vanished, or a zombie without an fd table

            if tenancy is None:
                tenant = default_tenant
            else:
                if uid < 0:
                    try:
                        uid = ostat(base).st_uid
                    except OSError:
                        continue  # vanished
                if p is not None and p[2] == uid:
                    tenant = p[3]  # same process, same owner: its tenant was found already
                else:
                    tenant = tenancy.tenant_for(uid, _CgroupReader(base))
            new_prev[pid] = (start, cpu, uid, tenant)

            key = (comm, tenant)
            g = groups.get(key)
            if g is None:
                groups[key] = [1, rss, nfds, delta]
            else:
                g[0] += 1
                g[1] += rss
                g[2] += nfds
                g[3] += delta

        self._prev = new_prev
        self._kthreads = new_kthreads
        if kept:
            for pid in [pid for pid in kept if pid not in new_prev]:
                self._forget(pid)  # exited, or vanished while being read
        self._fd_size_ok = fd_size_ok
        self._perm_errors += perm
        yield from self._emit(groups, states, threads, pids)
        if self.config.thread_states:
            for state, n in sorted(thread_states(self.ctx.proc_root).items()):
                yield self.sample("node_processes_threads_state", float(n), {"thread_state": state})

    def _emit(
        self, groups: dict[tuple[bytes, str], list[int]], states: dict[bytes, int], threads: int, pids: int
    ) -> Iterator[Sample]:
        s = self.sample
        for state in sorted(states):
            yield s("node_processes_state", float(states[state]), {"state": state.decode("ascii", "replace")})
        yield s("node_processes_threads", float(threads))
        yield s("node_processes_pids", float(pids))
        for name, metric in (("pid_max", "node_processes_max_processes"), ("threads-max", "node_processes_max_threads")):
            v = self._read_sys(name)
            if v is not None:
                yield s(metric, float(v))

        # Label values are decoded names: two raw names that decode alike (invalid UTF-8
        # replaced) are one group, never two series with the same labels.
        named: dict[tuple[str, str], list[int]] = {}
        for (comm, tenant), g in groups.items():
            key = (comm.decode("utf-8", "replace"), tenant)
            m = named.get(key)
            if m is None:
                named[key] = g
            else:
                for i in range(4):
                    m[i] += g[i]
        groups_by_name = named

        # Cumulative CPU per group; groups without a live process are forgotten.
        group_cpu = {k: self._group_cpu.get(k, 0) + g[3] for k, g in groups_by_name.items()}
        self._group_cpu = group_cpu

        top = select_top(groups_by_name, self.config.top_n)
        other: dict[str, list[int]] = {}
        hz = float(_procfs.USER_HZ)
        page = float(_procfs.PAGE_SIZE)
        for key, g in groups_by_name.items():
            if key in top:
                labels = {"groupname": key[0], "tenant_id": key[1]}
                yield s("hostmon_process_group_cpu_seconds_total", group_cpu[key] / hz, labels)
                yield s("hostmon_process_group_resident_memory_bytes", g[1] * page, labels)
                if self.config.open_fds:
                    yield s("hostmon_process_group_open_fds", float(g[2]), labels)
                yield s("hostmon_process_group_processes", float(g[0]), labels)
            else:
                o = other.setdefault(key[1], [0, 0, 0, 0])
                for i in range(4):
                    o[i] += g[i]
        for tenant, o in other.items():
            self._other_cpu[tenant] = self._other_cpu.get(tenant, 0) + o[3]
        for tenant in sorted(self._other_cpu):
            # "other" keeps its counter (monotonic) even in a cycle where nothing folded into it.
            o = other.get(tenant, [0, 0, 0, 0])
            labels = {"groupname": OTHER, "tenant_id": tenant}
            yield s("hostmon_process_group_cpu_seconds_total", self._other_cpu[tenant] / hz, labels)
            yield s("hostmon_process_group_resident_memory_bytes", o[1] * page, labels)
            if self.config.open_fds:
                yield s("hostmon_process_group_open_fds", float(o[2]), labels)
            yield s("hostmon_process_group_processes", float(o[0]), labels)
        yield s("hostmon_process_groups", float(len(groups_by_name)))
        yield s("hostmon_process_permission_errors_total", float(self._perm_errors))


_PF_KTHREAD = 0x00200000  # include/linux/sched.h


def _is_kthread(stat: bytes) -> bool:
    """Whether a /proc/PID/stat line is a kernel thread's (flags, field 9, has PF_KTHREAD)."""
    try:
        return bool(int(stat[stat.rfind(b")") + 2 :].split(None, 7)[6]) & _PF_KTHREAD)
    except (ValueError, IndexError):
        return False


class _CgroupReader:
    """Reads /proc/PID/cgroup when called (tenant rules call it only if they need it)."""

    __slots__ = ("base",)

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(self) -> str | None:
        try:
            return _procfs.read_text(self.base + "/cgroup")
        except OSError:
            return None


def thread_state_of(stat: bytes) -> str | None:
    """The state letter of a /proc/PID/task/TID/stat line (after the last ``)``)."""
    i = stat.rfind(b")")
    if i < 0 or i + 2 >= len(stat):
        return None
    return chr(stat[i + 2])


def thread_states(proc: str) -> dict[str, int]:
    """Threads by state over every process: node_exporter's node_processes_threads_state."""
    out: dict[str, int] = {}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        task = os.path.join(proc, pid, "task")
        try:
            tids = os.listdir(task)
        except OSError:
            continue  # exited
        for tid in tids:
            try:
                st = thread_state_of(_procfs.read_small(os.path.join(task, tid, "stat"), 512))
            except OSError:
                continue
            if st is not None:
                out[st] = out.get(st, 0) + 1
    return out


def select_top(groups: dict[tuple[str, str], list[int]], n: int) -> set[tuple[str, str]]:
    """The groups that get their own series: top ``n`` by CPU used this cycle (if any) plus top ``n`` by RSS.

    ``groups`` maps key -> [count, rss, fds, cpu_delta]. Ties break on the key so the
    choice is stable between collections. A group literally named ``other`` never
    gets its own series (it would collide with the fold).
    """
    if n <= 0:
        return set()
    cands = [(k, g) for k, g in groups.items() if k[0] != OTHER]
    by_cpu = sorted((x for x in cands if x[1][3] > 0), key=lambda x: (-x[1][3], x[0]))[:n]
    by_mem = sorted(cands, key=lambda x: (-x[1][1], x[0]))[:n]
    return {k for k, _ in by_cpu} | {k for k, _ in by_mem}
