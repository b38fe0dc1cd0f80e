from __future__ import annotations

import importlib.util
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import free_port, require_tool
from hostmond.collectors import _procfs
from hostmond.collectors.disk import DiskCollector, DiskConfig

from hostmond.api import CollectorContext, Sample

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]

FS_OF = {  # mountpoint -> (bsize, frsize, blocks, bfree, bavail, files, ffree)
    "/": (4096, 4096, 1000, 600, 500, 800, 700),
    "/run": (4096, 4096, 200, 190, 190, 100, 90),
    "/boot": (1024, 1024, 5000, 1000, 900, 300, 250),
    "/mnt/my disk": (4096, 4096, 10, 5, 4, 3, 2),
    "/mnt/nfs": (65536, 65536, 100, 50, 40, 0, 0),
    "/srv": (4096, 4096, 3000, 2000, 1000, 20, 10),
}


def fake_statvfs(rootfs: str, calls: list[str] | None = None) -> Callable[[str], os.statvfs_result]:
    def stat(path: str) -> os.statvfs_result:
        if calls is not None:
            calls.append(path)
        mp = "/" + os.path.relpath(path, rootfs) if path != rootfs else "/"
        mp = "/" if mp == "/." else mp
        b, fr, blocks, bfree, bavail, files, ffree = FS_OF[mp]
        return os.statvfs_result((b, fr, blocks, bfree, bavail, files, ffree, ffree, 0, 255))

    return stat


# Upstream node_exporter 1.5's mount filter, which keeps /run and /mnt: the fixture's stale NFS mount
# sits on /mnt. The default (Debian's, which leaves /run and /mnt out) has its own test.
UPSTREAM_MOUNT_POINTS_EXCLUDE = r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"


def make(proc: str = str(FIX / "proc"), rootfs: str = "/fixture-root", stat_fn: Callable[[str], os.statvfs_result] | None = None, **cfg: object) -> DiskCollector:
    cfg.setdefault("mount_points_exclude", UPSTREAM_MOUNT_POINTS_EXCLUDE)
    return DiskCollector(DiskConfig(**cfg), CollectorContext(proc_root=proc, sys_root=str(FIX / "sys"), rootfs=rootfs), stat_fn=stat_fn)


def assert_declared(samples: list[Sample]) -> None:
    specs = {m.name: m for m in DiskCollector.metrics}
    for s in samples:
        assert s.name in specs, f"{s.name} not declared"
        assert tuple(s.labels) == specs[s.name].labels, (s.name, s.labels)
        assert s.type == specs[s.name].type


def by(samples: list[Sample], name: str, key: str) -> dict[str, float]:
    return {s.labels[key]: s.value for s in samples if s.name == name}


# --------------------------------------------------------------------------- parsers


def test_parse_mounts_unescapes_octal_and_splits_options() -> None:
    ms = _procfs.parse_mounts("/dev/vdc /mnt/my\\040disk xfs ro,relatime 0 0\nshort line\n")
    assert len(ms) == 1
    assert ms[0].mountpoint == "/mnt/my disk" and ms[0].fstype == "xfs" and ms[0].readonly
    assert not _procfs.parse_mounts("/dev/vda / ext4 rw,errors=remount-ro 0 0\n")[0].readonly


def test_parse_diskstats_17_15_and_11_field_kernels() -> None:
    d = _procfs.parse_diskstats(
        " 254 0 vda 32578 8949 2718066 8294 8621 6796 1336496 3648 2 5744 13470 4382 75 122392 869 1201 658\n"
        " 259 0 nvme0n1 1000 20 80000 500 2000 40 160000 900 0 1300 1400 0 0 0 0\n"
        "  11 0 sr0 7 0 56 3 0 0 0 0 0 4 3\n"
    )
    assert d["vda"]["sectors_read"] == 2718066 and d["vda"]["flush_time_ms"] == 658
    assert "flush_requests" not in d["nvme0n1"] and d["nvme0n1"]["discard_time_ms"] == 0
    assert d["sr0"]["io_time_weighted_ms"] == 3 and "discards_completed" not in d["sr0"]


# --------------------------------------------------------------------------- fixture tree


def test_fixture_filesystems_exact_values_and_default_exclusions() -> None:
    calls: list[str] = []
    c = make(stat_fn=fake_statvfs("/fixture-root", calls))
    try:
        out = list(c.collect())
    finally:
        c.stop()
    assert_declared(out)
    size = by(out, "node_filesystem_size_bytes", "mountpoint")
    # proc, sysfs, devtmpfs (/dev), cgroup2, overlay and /var/lib/docker/... are left out by default
    assert sorted(size) == ["/", "/boot", "/mnt/my disk", "/mnt/nfs", "/run", "/srv"]
    assert sorted(calls) == sorted("/fixture-root" + (m if m != "/" else "") for m in size)
    assert size["/"] == 1000 * 4096
    assert by(out, "node_filesystem_free_bytes", "mountpoint")["/boot"] == 1000 * 1024
    assert by(out, "node_filesystem_avail_bytes", "mountpoint")["/mnt/nfs"] == 40 * 65536
    assert by(out, "node_filesystem_files", "mountpoint")["/srv"] == 20
    assert by(out, "node_filesystem_files_free", "mountpoint")["/run"] == 90
    assert by(out, "node_filesystem_readonly", "mountpoint") == {
        "/": 0, "/run": 0, "/boot": 1, "/mnt/my disk": 0, "/mnt/nfs": 0, "/srv": 0}
    assert set(by(out, "node_filesystem_device_error", "mountpoint").values()) == {0}
    # /srv is mounted twice: the later mount (xfs on /dev/vdd) hides the first
    srv = [s.labels for s in out if s.name == "node_filesystem_size_bytes" and s.labels["mountpoint"] == "/srv"]
    assert srv == [{"device": "/dev/vdd", "fstype": "xfs", "mountpoint": "/srv"}]
    nfs = [s.labels for s in out if s.name == "node_filesystem_size_bytes" and s.labels["mountpoint"] == "/mnt/nfs"]
    assert nfs == [{"device": "nfs.example.com:/export", "fstype": "nfs4", "mountpoint": "/mnt/nfs"}]
    assert c.take_partial_errors() == {}


def test_default_mount_filter_is_debian_node_exporters_without_run_and_mnt() -> None:
    c = DiskCollector(DiskConfig(), CollectorContext(proc_root=str(FIX / "proc"), sys_root=str(FIX / "sys"), rootfs="/fixture-root"),
                      stat_fn=fake_statvfs("/fixture-root"))
    try:
        out = list(c.collect())
    finally:
        c.stop()
    assert sorted(by(out, "node_filesystem_size_bytes", "mountpoint")) == ["/", "/boot", "/srv"]


def test_disk_info_has_major_minor_and_udev_properties(tmp_path: Path) -> None:
    from hostmond.collectors.disk import parse_udev_data

    (tmp_path / "b254:0").write_text("S:disk/by-id/virtio-abc\nE:ID_MODEL=QEMU_DISK\nE:ID_SERIAL_SHORT=abc123\nE:ID_PATH=pci-0000:00:05.0\nE:ID_WWN=0x5000\nE:ID_REVISION=2.5+\n")
    assert parse_udev_data("E:ID_MODEL=x=y\nG:systemd\n") == {"ID_MODEL": "x=y"}
    c = make(stat_fn=fake_statvfs("/fixture-root"), udev_data=str(tmp_path))
    out = list(c.collect())
    c.stop()
    info = {s.labels["device"]: s.labels for s in out if s.name == "node_disk_info"}
    assert sorted(info) == ["nvme0n1", "sr0", "vda"]
    assert info["vda"] == {"device": "vda", "major": "254", "minor": "0", "path": "pci-0000:00:05.0", "wwn": "0x5000",
                           "model": "QEMU_DISK", "serial": "abc123", "revision": "2.5+"}
    assert info["sr0"]["model"] == "" and info["sr0"]["major"] == "11"


def test_fixture_diskstats_exact_values_partitions_left_out() -> None:
    c = make(stat_fn=fake_statvfs("/fixture-root"))
    out = list(c.collect())
    c.stop()
    assert sorted(by(out, "node_disk_reads_completed_total", "device")) == ["nvme0n1", "sr0", "vda"]
    assert by(out, "node_disk_reads_completed_total", "device")["vda"] == 32578
    assert by(out, "node_disk_writes_completed_total", "device")["vda"] == 8621
    assert by(out, "node_disk_read_bytes_total", "device")["vda"] == 2718066 * 512
    assert by(out, "node_disk_written_bytes_total", "device")["vda"] == 1336496 * 512
    assert by(out, "node_disk_read_time_seconds_total", "device")["vda"] == pytest.approx(8.294)
    assert by(out, "node_disk_write_time_seconds_total", "device")["vda"] == pytest.approx(3.648)
    assert by(out, "node_disk_io_now", "device")["vda"] == 2
    assert by(out, "node_disk_io_time_seconds_total", "device")["vda"] == pytest.approx(5.744)
    assert by(out, "node_disk_flush_requests_total", "device") == {"vda": 1201}
    assert sorted(by(out, "node_disk_discards_completed_total", "device")) == ["nvme0n1", "vda"]
    v = {s.name: s.value for s in out if not s.labels}
    assert v["node_pressure_io_waiting_seconds_total"] == pytest.approx(3.70416)
    assert v["node_pressure_io_stalled_seconds_total"] == pytest.approx(3.505079)
    assert v["hostmon_filesystem_stale_mounts"] == 0


def test_exclusions_are_configurable() -> None:
    c = make(stat_fn=lambda p: os.statvfs_result((1, 1, 1, 1, 1, 1, 1, 1, 0, 255)), mount_points_exclude="", fs_types_exclude="^(proc|sysfs)$", device_exclude="")
    out = list(c.collect())
    c.stop()
    mps = set(by(out, "node_filesystem_size_bytes", "mountpoint"))
    assert {"/dev", "/sys/fs/cgroup", "/var/lib/docker/overlay2/abc/merged"} <= mps and "/proc" not in mps
    assert {"vda1", "loop0", "nvme0n1p1"} <= set(by(out, "node_disk_io_now", "device"))


def test_real_statvfs_on_a_rootfs_prefix(tmp_path: Path) -> None:
    for mp in FS_OF:
        (tmp_path / mp.lstrip("/")).mkdir(parents=True, exist_ok=True)
    c = make(rootfs=str(tmp_path))
    out = list(c.collect())
    c.stop()
    real = os.statvfs(tmp_path)
    size = by(out, "node_filesystem_size_bytes", "mountpoint")
    assert size["/srv"] == real.f_blocks * real.f_frsize  # labelled with the host path, stat'ed under rootfs
    assert by(out, "node_filesystem_files", "mountpoint")["/mnt/my disk"] == real.f_files


def test_a_failing_statvfs_is_a_device_error(tmp_path: Path) -> None:
    c = make(rootfs=str(tmp_path / "missing"))
    out = list(c.collect())
    c.stop()
    assert set(by(out, "node_filesystem_device_error", "mountpoint").values()) == {1}
    assert by(out, "node_filesystem_size_bytes", "mountpoint") == {}
    assert by(out, "node_filesystem_readonly", "mountpoint")["/boot"] == 1
    assert c.take_partial_errors() == {"statvfs_failed": 6}


def _collect_in_thread(c: DiskCollector) -> list[Sample]:
    """Run collect() in a thread; fail (instead of hanging the suite) if it does not come back."""
    box: list[list[Sample]] = []
    t = threading.Thread(target=lambda: box.append(list(c.collect())), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "collect() hung on a stuck statvfs"
    return box[0]


def test_hung_mount_is_reported_stale_and_not_retried_until_its_call_returns() -> None:
    # A dead NFS server cannot be made in this sandbox (no NFS, no FUSE), so the stat
    # function is a seam: this one blocks on a threading.Event for /mnt/nfs, the way
    # statfs(2) blocks in the kernel on a hard NFS mount whose server is gone.
    release = threading.Event()
    calls: list[str] = []
    inner = fake_statvfs("/fixture-root", calls)

    def stat(path: str) -> os.statvfs_result:
        r = inner(path)
        if path.endswith("mnt/nfs"):
            release.wait()
        return r

    c = make(stat_fn=stat, stat_timeout=0.3)
    try:
        out = _collect_in_thread(c)
        err = by(out, "node_filesystem_device_error", "mountpoint")
        assert err["/mnt/nfs"] == 1 and err["/"] == 0 and err["/srv"] == 0
        assert "/mnt/nfs" not in by(out, "node_filesystem_size_bytes", "mountpoint")
        assert by(out, "node_filesystem_size_bytes", "mountpoint")["/"] == 4096000  # healthy mounts still served
        assert {s.name: s.value for s in out if not s.labels}["hostmon_filesystem_stale_mounts"] == 1
        assert c.take_partial_errors() == {"statvfs_timeout": 1}

        # Still hung: not retried (no second stuck thread), still reported.
        out = _collect_in_thread(c)
        assert sum(p.endswith("mnt/nfs") for p in calls) == 1
        assert by(out, "node_filesystem_device_error", "mountpoint")["/mnt/nfs"] == 1
        assert by(out, "node_filesystem_size_bytes", "mountpoint")["/boot"] == 5000 * 1024
        assert c.take_partial_errors() == {}

        # The server comes back: the pending call returns, the mount is retried and healthy.
        release.set()
        deadline = threading.Event()
        for _ in range(100):
            if c._pool.stuck == 0:
                break
            deadline.wait(0.05)
        out = _collect_in_thread(c)
        assert sum(p.endswith("mnt/nfs") for p in calls) == 2
        assert by(out, "node_filesystem_device_error", "mountpoint")["/mnt/nfs"] == 0
        assert by(out, "node_filesystem_size_bytes", "mountpoint")["/mnt/nfs"] == 100 * 65536
        assert {s.name: s.value for s in out if not s.labels}["hostmon_filesystem_stale_mounts"] == 0
    finally:
        release.set()
        c.stop()


def test_pool_with_every_worker_stuck_still_answers_and_retries_queued_mounts() -> None:
    release = threading.Event()
    calls: list[str] = []
    inner = fake_statvfs("/fixture-root")

    def stat(path: str) -> os.statvfs_result:
        calls.append(path)
        if path.rstrip("/") == "/fixture-root":  # "/" is stat'ed first
            release.wait()
        return inner(path)

    # One worker and no replacement for a written-off thread: everything queued behind "/" never starts.
    c = make(stat_fn=stat, stat_timeout=0.2, stat_workers=1, max_stuck_calls=0)
    try:
        out = _collect_in_thread(c)
        err = by(out, "node_filesystem_device_error", "mountpoint")
        assert set(err.values()) == {1}
        assert c.take_partial_errors() == {"statvfs_timeout": 1, "statvfs_not_started": 5}
        assert calls == ["/fixture-root"]  # queued jobs were cancelled, not run later
        release.set()
        for _ in range(100):
            if c._pool.stuck == 0:
                break
            threading.Event().wait(0.05)
        out = _collect_in_thread(c)
        assert set(by(out, "node_filesystem_device_error", "mountpoint").values()) == {0}
    finally:
        release.set()
        c.stop()


def test_real_proc_smoke() -> None:
    import re

    c = DiskCollector(DiskConfig(), CollectorContext())
    out = list(c.collect())  # the defaults: Debian's filters
    c.stop()
    assert_declared(out)
    cfg = DiskConfig()
    try:
        text = Path("/proc/1/mounts").read_text()
    except OSError:
        text = Path("/proc/self/mounts").read_text()
    expected = {
        m.mountpoint
        for m in _procfs.parse_mounts(text)
        if not re.search(cfg.mount_points_exclude, m.mountpoint) and not re.search(cfg.fs_types_exclude, m.fstype)
    }
    errors = by(out, "node_filesystem_device_error", "mountpoint")
    assert set(errors) == expected
    size = by(out, "node_filesystem_size_bytes", "mountpoint")
    avail = by(out, "node_filesystem_avail_bytes", "mountpoint")
    for mp, sz in size.items():
        assert 0 <= avail[mp] <= sz
    assert all(s.value >= 0 for s in out)
    assert by(out, "node_disk_reads_completed_total", "device") or not Path("/proc/diskstats").read_text().strip()


def test_same_series_as_node_exporter_on_the_fixture_tree(tmp_path: Path) -> None:
    binary = require_tool("prometheus-node-exporter")
    for mp in FS_OF:
        (tmp_path / mp.lstrip("/")).mkdir(parents=True, exist_ok=True)
    proc = str(FIX / "proc")
    cfg = DiskConfig(mount_points_exclude=UPSTREAM_MOUNT_POINTS_EXCLUDE)
    theirs = nodeexp.scrape(
        binary, proc, str(FIX / "sys"), ["diskstats", "pressure", "filesystem"], free_port(),
        [f"--path.rootfs={tmp_path}", f"--collector.filesystem.mount-points-exclude={cfg.mount_points_exclude}",
         f"--collector.filesystem.fs-types-exclude={cfg.fs_types_exclude}"],
    )
    c = make(rootfs=str(tmp_path))
    out = list(c.collect())
    c.stop()
    assert len([k for k in theirs if k[0] == "node_disk_read_bytes_total"]) == 3
    # free/avail/files_free may move between the two statfs calls on this shared disk: compare labels only.
    stable = {s.name for s in out if s.name.startswith("node_")} - {"node_filesystem_free_bytes", "node_filesystem_avail_bytes", "node_filesystem_files_free"}
    problems = nodeexp.compare(nodeexp.ours(out), theirs, stable)
    # node_exporter reports both mounts stacked on /srv with the statfs of the top one; hostmon
    # reports only the visible mount (the hidden one's figures would be the top one's, mislabelled).
    problems = [p for p in problems if not ("'/srv'" in p and "'/dev/vda'" in p and p.startswith("only node_exporter"))]
    assert problems == []
    for name in ("node_filesystem_free_bytes", "node_filesystem_avail_bytes"):
        mine = {k[1] for k in nodeexp.ours(out) if k[0] == name}
        assert mine == {k[1] for k in theirs if k[0] == name} - {k[1] for k in theirs if ("device", "/dev/vda") in k[1] and ("mountpoint", "/srv") in k[1]}


def test_stale_mount_that_is_unmounted_is_forgotten_once_its_call_returns(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    mounts = (FIX / "proc" / "1" / "mounts").read_text()
    (proc / "1" / "mounts").write_text(mounts)
    release = threading.Event()
    inner = fake_statvfs("/fixture-root")

    def stat(path: str) -> os.statvfs_result:
        if path.endswith("mnt/nfs"):
            release.wait()
        return inner(path)

    c = make(str(proc), stat_fn=stat, stat_timeout=0.2)
    try:
        out = _collect_in_thread(c)
        assert by(out, "node_filesystem_device_error", "mountpoint")["/mnt/nfs"] == 1
        # umount -f /mnt/nfs: gone from the table, but its statfs is still stuck
        (proc / "1" / "mounts").write_text("".join(line + "\n" for line in mounts.splitlines() if "/mnt/nfs" not in line))
        out = _collect_in_thread(c)
        assert "/mnt/nfs" not in by(out, "node_filesystem_device_error", "mountpoint")
        assert {s.name: s.value for s in out if not s.labels}["hostmon_filesystem_stale_mounts"] == 1  # the thread is still stuck
        release.set()
        for _ in range(100):
            if c._pool.stuck == 0:
                break
            threading.Event().wait(0.05)
        out = _collect_in_thread(c)
        assert {s.name: s.value for s in out if not s.labels}["hostmon_filesystem_stale_mounts"] == 0
        assert c._stale == {}
    finally:
        release.set()
        c.stop()


def test_a_changed_mount_table_and_new_block_devices_are_seen_at_the_next_collection(tmp_path: Path) -> None:
    """The mount table is parsed and filtered again only when its text changed, and a device's
    exclusion verdict is remembered: neither may hide a change."""
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    mounts = (FIX / "proc" / "1" / "mounts").read_text()
    (proc / "1" / "mounts").write_text(mounts)
    disks = (FIX / "proc" / "diskstats").read_text()
    (proc / "diskstats").write_text(disks)
    c = make(str(proc), stat_fn=fake_statvfs("/fixture-root"))
    try:
        first = list(c.collect())
        again = list(c.collect())
        assert [(s.name, s.labels, s.value) for s in first] == [(s.name, s.labels, s.value) for s in again]
        assert "/data2" not in by(first, "node_filesystem_size_bytes", "mountpoint")
        (proc / "1" / "mounts").write_text(mounts + "/dev/vdz /data2 ext4 ro,relatime 0 0\n")
        (proc / "diskstats").write_text(disks + " 254      16 vdz 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n 7 9 loop9 1 2 3 4 5 6 7 8 9 10 11\n")
        out = list(c.collect())
        assert by(out, "node_filesystem_readonly", "mountpoint")["/data2"] == 1
        assert by(out, "node_disk_reads_completed_total", "device")["vdz"] == 1
        assert by(out, "node_disk_flush_requests_time_seconds_total", "device")["vdz"] == 0.017
        assert "loop9" not in by(out, "node_disk_reads_completed_total", "device")
        (proc / "1" / "mounts").write_text(mounts)
        assert "/data2" not in by(list(c.collect()), "node_filesystem_readonly", "mountpoint")
    finally:
        c.stop()


def test_real_mount_table_is_read_again_only_when_the_kernel_signals_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real procfs the mounts file stays open and is polled (POLLPRI on mount/umount):
    an unchanged table is not read again, a new mount shows at the next collection."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    from hostmond.collectors import disk

    reads: list[int] = []
    real_read = disk._read_fd
    monkeypatch.setattr(disk, "_read_fd", lambda fd: reads.append(fd) or real_read(fd))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    c = DiskCollector(DiskConfig(mount_points_exclude="^/(proc|sys|dev)($|/)", fs_types_exclude="^(proc|sysfs|cgroup2?|devpts|mqueue)$"),
                      CollectorContext())
    try:
        first = by(list(c.collect()), "node_filesystem_readonly", "mountpoint")
        assert len(reads) == 1 and c._mounts_fd is not None and str(mnt) not in first
        for _ in range(3):
            assert by(list(c.collect()), "node_filesystem_readonly", "mountpoint") == first
        assert len(reads) == 1
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "hostmon-test", str(mnt)], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            pytest.skip(f"cannot mount here: {r.stderr.strip()}")
        try:
            out = list(c.collect())
            assert len(reads) == 2
            assert by(out, "node_filesystem_readonly", "mountpoint")[str(mnt)] == 1
            assert by(out, "node_filesystem_size_bytes", "mountpoint")[str(mnt)] == 1024 * 1024
            list(c.collect())
            assert len(reads) == 2
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        assert str(mnt) not in by(list(c.collect()), "node_filesystem_readonly", "mountpoint")
        assert len(reads) == 3
    finally:
        c.stop()
    assert c._mounts_fd is None
