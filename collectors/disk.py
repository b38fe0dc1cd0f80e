"""``disk``: filesystem space and inodes per mount, I/O counters per block device, I/O pressure.

Mounts come from ``{proc_root}/1/mounts`` (the host's mount table when the agent
runs in a container that shares the host PID namespace), falling back to
``{proc_root}/self/mounts``. Each mount point is stat'ed at ``{rootfs}/<mountpoint>``
and labelled with the host's path, as node_exporter's ``filesystem`` collector does.
Pseudo and container-internal file systems are left out by default with
node_exporter's own default exclusion patterns.

A hung mount (a dead NFS server) must not hang the collector: ``statvfs`` runs in a
small bounded pool of worker threads and the collection waits at most
``stat_timeout`` seconds for all of them. A mount whose call has not returned by
then is remembered as stale and reported with ``node_filesystem_device_error 1``; it
is not stat'ed again until that pending call returns (so one dead server costs one
stuck thread, not one per collection).

Block devices come from ``{proc_root}/diskstats`` (node_exporter's ``diskstats``
names; partitions, loop and ram devices left out by default).
"""

from __future__ import annotations

import os
import queue
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hostmond.collectors import _procfs
from hostmond.collectors._pressure import pressure_samples

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorConfig,
    CollectorContext,
    MetricSpec,
    Sample,
    check_positive,
    check_regex,
    field,
)

# node_exporter 1.5's defaults as Debian ships them (prometheus-node-exporter --help), the drop-in
# target of issue 13: /run, /mnt and /media are left out; zram devices are kept.
DEFAULT_MOUNT_POINTS_EXCLUDE = r"^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
DEFAULT_FS_TYPES_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs"
    r"|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$"
)
DEFAULT_DEVICE_EXCLUDE = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
DEFAULT_UDEV_DATA = "/run/udev/data"
UDEV_INFO = (("path", "ID_PATH"), ("wwn", "ID_WWN"), ("model", "ID_MODEL"), ("serial", "ID_SERIAL_SHORT"), ("revision", "ID_REVISION"))
DISK_INFO_LABELS = ("device", "major", "minor", "path", "wwn", "model", "serial", "revision")


def parse_udev_data(text: str) -> dict[str, str]:
    """The ``E:KEY=value`` properties of one udev database file (``/run/udev/data/b8:0``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("E:"):
            k, _, v = line[2:].partition("=")
            out[k] = v
    return out


StatFn = Callable[[str], os.statvfs_result]
_MAX_EXCLUDE_MEMO = 4096  # device names whose exclusion verdict is remembered


@dataclass
class DiskConfig(CollectorConfig):
    mount_points_exclude: str = field(
        DEFAULT_MOUNT_POINTS_EXCLUDE, "Regular expression of mount points left out (node_exporter's default).", check=check_regex
    )
    fs_types_exclude: str = field(
        DEFAULT_FS_TYPES_EXCLUDE, "Regular expression of file system types left out (node_exporter's default).", check=check_regex
    )
    device_exclude: str = field(
        DEFAULT_DEVICE_EXCLUDE,
        "Regular expression of block devices left out of the I/O counters (partitions, loop, ram).",
        check=check_regex,
    )
    stat_timeout: float = field(
        1.5, "Seconds to wait for the statvfs calls of one collection; a mount still pending is reported stale.", check=check_positive
    )
    stat_workers: int = field(
        4, "Worker threads that run statvfs calls (calls stuck on a stale mount are not counted).", check=check_positive
    )
    max_stuck_calls: int = field(
        32, "Most statvfs calls left hanging on stale mounts; beyond it, further hung mounts stop being retried."
    )
    pressure: bool = field(True, "Report I/O pressure (PSI) from the kernel's pressure file where it exists.")
    udev_data: str = field(
        DEFAULT_UDEV_DATA, "Directory of udev's device database, read for node_disk_info's model, serial, path and wwn."
    )


_FS_LABELS = ("device", "fstype", "mountpoint")


def _fs(name: str, type_: str, help_: str, unit: str = "") -> MetricSpec:
    return MetricSpec(name, type_, help_, _FS_LABELS, unit)


def _dk(suffix: str, type_: str, help_: str, unit: str = "") -> MetricSpec:
    return MetricSpec(f"node_disk_{suffix}", type_, help_, ("device",), unit)


# diskstats field -> (metric, scale)
_DISK_METRICS: tuple[tuple[str, str, float], ...] = (
    ("reads_completed", "node_disk_reads_completed_total", 1.0),
    ("reads_merged", "node_disk_reads_merged_total", 1.0),
    ("sectors_read", "node_disk_read_bytes_total", float(_procfs.SECTOR_SIZE)),
    ("read_time_ms", "node_disk_read_time_seconds_total", 0.001),
    ("writes_completed", "node_disk_writes_completed_total", 1.0),
    ("writes_merged", "node_disk_writes_merged_total", 1.0),
    ("sectors_written", "node_disk_written_bytes_total", float(_procfs.SECTOR_SIZE)),
    ("write_time_ms", "node_disk_write_time_seconds_total", 0.001),
    ("io_now", "node_disk_io_now", 1.0),
    ("io_time_ms", "node_disk_io_time_seconds_total", 0.001),
    ("io_time_weighted_ms", "node_disk_io_time_weighted_seconds_total", 0.001),
    ("discards_completed", "node_disk_discards_completed_total", 1.0),
    ("discards_merged", "node_disk_discards_merged_total", 1.0),
    ("sectors_discarded", "node_disk_discarded_sectors_total", 1.0),
    ("discard_time_ms", "node_disk_discard_time_seconds_total", 0.001),
    ("flush_requests", "node_disk_flush_requests_total", 1.0),
    ("flush_time_ms", "node_disk_flush_requests_time_seconds_total", 0.001),
)
assert tuple(k for k, _, _ in _DISK_METRICS) == _procfs.DISKSTAT_FIELDS  # read by position below


def _read_fd(fd: int) -> str:
    """The whole text of a procfs file from its current offset."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class _Job:
    __slots__ = ("abandoned", "cancelled", "done", "error", "path", "result", "started")

    def __init__(self, path: str) -> None:
        self.path = path
        self.done = threading.Event()
        self.started = False
        self.cancelled = False
        self.abandoned = False
        self.result: os.statvfs_result | None = None
        self.error: OSError | None = None


class StatPool:
    """A bounded pool of daemon threads running a stat function, with written-off threads for hung calls.

    ``workers`` threads serve the queue. When the caller gives up on a running job
    (timeout), that thread is written off: it stays blocked in the call, no longer
    counts as a worker, and a replacement is started, so healthy mounts are still
    served. At most ``max_stuck`` threads may be written off at once; past that no
    replacement is started (and the collector stops retrying stale mounts).
    """

    def __init__(self, stat_fn: StatFn, workers: int, max_stuck: int) -> None:
        self._stat_fn = stat_fn
        self._workers = max(1, workers)
        self._max_stuck = max(0, max_stuck)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live = 0  # threads serving the queue (not written off)
        self._stuck = 0
        self._closed = False

    @property
    def stuck(self) -> int:
        return self._stuck

    def submit(self, path: str) -> _Job:
        job = _Job(path)
        with self._lock:
            if self._closed:
                raise RuntimeError("stat pool is closed")
            if self._live < self._workers:
                self._live += 1
                threading.Thread(target=self._run, name="hostmon-statvfs", daemon=True).start()
        self._queue.put(job)
        return job

    def give_up(self, job: _Job) -> bool:
        """The caller stops waiting for ``job``. True when its call is hung in a thread (the mount is stale)."""
        with self._lock:
            if job.done.is_set():
                return False
            if not job.started:
                job.cancelled = True  # still queued: the worker skips it
                return False
            # A thread is blocked in this call: write it off and replace it.
            job.abandoned = True
            self._stuck += 1
            self._live -= 1
            if self._stuck <= self._max_stuck and not self._closed:
                self._live += 1
                threading.Thread(target=self._run, name="hostmon-statvfs", daemon=True).start()
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            n = self._live
        for _ in range(n):
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                with self._lock:
                    self._live -= 1
                return
            with self._lock:
                if job.cancelled:
                    continue
                job.started = True
            try:
                job.result = self._stat_fn(job.path)
            except OSError as e:
                job.error = e
            except Exception as e:  # noqa: BLE001 - reported as a device error, never kills the worker
                job.error = OSError(str(e))
            with self._lock:
                job.done.set()
                if job.abandoned:
                    # This thread was written off (and replaced) while it hung: leave.
                    self._stuck -= 1
                    return


@dataclass
class _Stale:
    job: _Job
    since: float


class DiskCollector(Collector[DiskConfig]):
    name = "disk"
    config_class = DiskConfig
    metrics = (
        _fs("node_filesystem_size_bytes", GAUGE, "Filesystem size in bytes.", "bytes"),
        _fs("node_filesystem_free_bytes", GAUGE, "Filesystem free space in bytes.", "bytes"),
        _fs("node_filesystem_avail_bytes", GAUGE, "Filesystem space available to non-root users in bytes.", "bytes"),
        _fs("node_filesystem_files", GAUGE, "Filesystem total file nodes."),
        _fs("node_filesystem_files_free", GAUGE, "Filesystem total free file nodes."),
        _fs("node_filesystem_readonly", GAUGE, "Filesystem read-only status (1 = mounted read-only)."),
        _fs(
            "node_filesystem_device_error",
            GAUGE,
            "Whether an error occurred while getting statistics for the given device (1 = error or stale mount).",
        ),
        MetricSpec("node_disk_info", GAUGE, "Info of /sys/block/<block_device>.", DISK_INFO_LABELS),
    _dk("reads_completed_total", COUNTER, "The total number of reads completed successfully."),
        _dk("reads_merged_total", COUNTER, "The total number of reads merged."),
        _dk("read_bytes_total", COUNTER, "The total number of bytes read successfully.", "bytes"),
        _dk("read_time_seconds_total", COUNTER, "The total number of seconds spent by all reads.", "seconds"),
        _dk("writes_completed_total", COUNTER, "The total number of writes completed successfully."),
        _dk("writes_merged_total", COUNTER, "The number of writes merged."),
        _dk("written_bytes_total", COUNTER, "The total number of bytes written successfully.", "bytes"),
        _dk("write_time_seconds_total", COUNTER, "This is the total number of seconds spent by all writes.", "seconds"),
        _dk("io_now", GAUGE, "The number of I/Os currently in progress."),
        _dk("io_time_seconds_total", COUNTER, "Total seconds spent doing I/Os.", "seconds"),
        _dk("io_time_weighted_seconds_total", COUNTER, "The weighted number of seconds spent doing I/Os.", "seconds"),
        _dk("discards_completed_total", COUNTER, "The total number of discards completed successfully."),
        _dk("discards_merged_total", COUNTER, "The total number of discards merged."),
        _dk("discarded_sectors_total", COUNTER, "The total number of sectors discarded successfully."),
        _dk("discard_time_seconds_total", COUNTER, "This is the total number of seconds spent by all discards.", "seconds"),
        _dk("flush_requests_total", COUNTER, "The total number of flush requests completed successfully."),
        _dk("flush_requests_time_seconds_total", COUNTER, "This is the total number of seconds spent by all flush requests.", "seconds"),
        MetricSpec(
            "node_pressure_io_waiting_seconds_total",
            COUNTER,
            "Total time in seconds that processes have waited due to IO congestion (PSI 'some').",
            (),
            "seconds",
        ),
        MetricSpec(
            "node_pressure_io_stalled_seconds_total",
            COUNTER,
            "Total time in seconds no process could make progress due to IO congestion (PSI 'full').",
            (),
            "seconds",
        ),
        MetricSpec("hostmon_filesystem_stale_mounts", GAUGE, "Mounts whose statvfs call is still hung (not retried until it returns)."),
    )

    config: DiskConfig

    def __init__(self, config: CollectorConfig, ctx: CollectorContext, stat_fn: StatFn | None = None) -> None:
        super().__init__(config, ctx)
        cfg = self.config
        self._mp_exclude = re.compile(cfg.mount_points_exclude) if cfg.mount_points_exclude else None
        self._fs_exclude = re.compile(cfg.fs_types_exclude) if cfg.fs_types_exclude else None
        self._dev_exclude = re.compile(cfg.device_exclude) if cfg.device_exclude else None
        # ``stat_fn`` is a test seam: a hung NFS mount cannot be made in the test sandbox,
        # so the stale-mount test injects a function that blocks on a threading.Event.
        self._pool = StatPool(stat_fn or os.statvfs, cfg.stat_workers, cfg.max_stuck_calls)
        self._stale: dict[str, _Stale] = {}
        self._mounts_text: str | None = None  # the mount table last parsed, and what it gave
        self._mounts_wanted: list[_procfs.Mount] = []
        self._dev_excluded: dict[str, bool] = {}
        self._mounts_pollable = _procfs.is_procfs(ctx.proc_root)
        self._mounts_fd: int | None = None
        self._mounts_poll = select.poll()

    def stop(self) -> None:
        self._pool.close()
        self._close_mounts_fd()

    # -- file systems ----------------------------------------------------------
    def _mounts_text_now(self) -> str | None:
        """The mount table's text; None when it is known not to have changed since the last read.

        On a real procfs the mounts file stays open: the kernel marks it with POLLPRI when a
        file system is mounted or unmounted (proc(5)), so an unchanged table costs one poll()
        instead of being generated again. A fixture tree (regular files) is read every time."""
        fd = self._mounts_fd
        if fd is not None and self._mounts_text is not None:
            try:
                changed = bool(self._mounts_poll.poll(0))
                if not changed:
                    return None
                os.lseek(fd, 0, os.SEEK_SET)
                return _read_fd(fd)
            except OSError:
                self._close_mounts_fd()  # read it by path below
        proc = self.ctx.proc_root
        for rel in ("1/mounts", "self/mounts", "mounts"):
            path = os.path.join(proc, rel)
            try:
                if not self._mounts_pollable:
                    return _procfs.read_text(path)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # opened first: a change after this is signalled
                try:
                    text = _read_fd(fd)
                except OSError:
                    os.close(fd)
                    raise
            except OSError:
                continue
            self._mounts_fd = fd
            self._mounts_poll = select.poll()
            self._mounts_poll.register(fd, select.POLLPRI)
            return text
        raise FileNotFoundError(f"no mount table under {proc} (1/mounts, self/mounts, mounts)")

    def _close_mounts_fd(self) -> None:
        if self._mounts_fd is not None:
            os.close(self._mounts_fd)
            self._mounts_fd = None

    def _wanted_mounts(self) -> list[_procfs.Mount]:
        """The mounts to stat: parsed and filtered again only when the mount table changed."""
        text = self._mounts_text_now()
        if text is not None and text != self._mounts_text:
            self._mounts_wanted = self._wanted(_procfs.parse_mounts(text))
            self._mounts_text = text
        return self._mounts_wanted

    def _wanted(self, mounts: list[_procfs.Mount]) -> list[_procfs.Mount]:
        by_mp: dict[str, _procfs.Mount] = {}
        for m in mounts:
            if self._mp_exclude is not None and self._mp_exclude.search(m.mountpoint):
                continue
            if self._fs_exclude is not None and self._fs_exclude.search(m.fstype):
                continue
            by_mp[m.mountpoint] = m  # a later mount on the same point hides the earlier one
        return list(by_mp.values())

    def _stat_path(self, mountpoint: str) -> str:
        root = self.ctx.rootfs
        if root in ("", "/"):
            return mountpoint
        rel = mountpoint.lstrip("/")
        return os.path.join(root, rel) if rel else root

    def _filesystems(self) -> Iterator[Sample]:
        mounts = self._wanted_mounts()
        jobs: list[tuple[_procfs.Mount, _Job | None]] = []
        for m in mounts:
            st = self._stale.get(m.mountpoint)
            if st is not None:
                if not st.job.done.is_set():
                    jobs.append((m, None))  # still hung: do not retry
                    continue
                del self._stale[m.mountpoint]  # the pending call returned: retry now
            jobs.append((m, self._pool.submit(self._stat_path(m.mountpoint))))

        current = {m.mountpoint for m in mounts}
        for mp in [mp for mp, st in self._stale.items() if mp not in current and st.job.done.is_set()]:
            del self._stale[mp]  # unmounted while stale, and its call has returned: forget it

        deadline = time.monotonic() + self.config.stat_timeout
        s = self.sample
        for m, job in jobs:
            labels = {"device": m.device, "fstype": m.fstype, "mountpoint": m.mountpoint}
            ro = 1.0 if m.readonly else 0.0
            if job is not None:
                job.done.wait(max(0.0, deadline - time.monotonic()))
                if not job.done.is_set():
                    if self._pool.give_up(job):
                        # Hung in the kernel: stale until that very call returns.
                        self._stale[m.mountpoint] = _Stale(job, time.time())
                        self.log.warning(
                            "statvfs did not return in time; mount marked stale",
                            extra={"mountpoint": m.mountpoint, "timeout_s": self.config.stat_timeout},
                        )
                        self.partial_error("statvfs_timeout")
                    else:
                        # Never started (every worker busy or written off): retried next time.
                        self.partial_error("statvfs_not_started")
                    job = None
            if job is None or job.error is not None or job.result is None:
                if job is not None and job.error is not None:
                    self.partial_error("statvfs_failed")
                yield s("node_filesystem_device_error", 1.0, labels)
                yield s("node_filesystem_readonly", ro, labels)
                continue
            r = job.result
            yield s("node_filesystem_device_error", 0.0, labels)
            yield s("node_filesystem_readonly", ro, labels)
            yield s("node_filesystem_size_bytes", float(r.f_blocks * r.f_frsize), labels)
            yield s("node_filesystem_free_bytes", float(r.f_bfree * r.f_frsize), labels)
            yield s("node_filesystem_avail_bytes", float(r.f_bavail * r.f_frsize), labels)
            yield s("node_filesystem_files", float(r.f_files), labels)
            yield s("node_filesystem_files_free", float(r.f_ffree), labels)
        yield s("hostmon_filesystem_stale_mounts", float(sum(1 for v in self._stale.values() if not v.job.done.is_set())))

    # -- block devices -----------------------------------------------------------
    def _diskstats(self) -> Iterator[Sample]:
        try:
            text = _procfs.read_text(os.path.join(self.ctx.proc_root, "diskstats"))
        except OSError:
            self.partial_error("diskstats_unreadable")
            return
        s = self.sample
        # _procfs.parse_diskstats, with the excluded devices (loop, ram, partitions: most lines)
        # skipped before their numbers are parsed; a device's verdict is remembered.
        excluded = self._dev_excluded
        rx = self._dev_exclude
        rows: dict[str, list[str]] = {}
        for line in text.splitlines():
            head = line.split(None, 3)  # major, minor, name, the rest
            if len(head) < 4:
                continue
            dev = head[2]
            ex = excluded.get(dev)
            if ex is None:
                ex = rx is not None and rx.search(dev) is not None
                if len(excluded) >= _MAX_EXCLUDE_MEMO:
                    excluded.clear()
                excluded[dev] = ex
            if ex:
                continue
            parts = line.split()
            if len(parts) >= 14:
                rows[dev] = parts  # a repeated name: the last line wins, in the first one's place
        for dev, parts in rows.items():
            labels = {"device": dev}
            major, minor = parts[0], parts[1]
            vals = [int(v) for v in parts[3 : 3 + len(_DISK_METRICS)]]
            yield s("node_disk_info", 1.0, {"device": dev, "major": major, "minor": minor, **self._udev_info(major, minor)})
            for (_, metric, scale), v in zip(_DISK_METRICS, vals):
                yield s(metric, v * scale if scale != 1.0 else float(v), labels)

    def _udev_info(self, major: str, minor: str) -> dict[str, str]:
        try:
            text = _procfs.read_optional(os.path.join(self.config.udev_data, f"b{major}:{minor}"))
        except OSError:
            text = None
        props = parse_udev_data(text) if text else {}
        return {label: props.get(key, "") for label, key in UDEV_INFO}

    def collect(self) -> Iterator[Sample]:
        # Materialise the mount part first so the partial failure of one half never hides the other.
        try:
            fs: list[Sample] = list(self._filesystems())
        except OSError:
            self.partial_error("mounts_unreadable")
            fs = []
        yield from fs
        yield from self._diskstats()
        if self.config.pressure:
            yield from pressure_samples(self, os.path.join(self.ctx.proc_root, "pressure", "io"), "io")

