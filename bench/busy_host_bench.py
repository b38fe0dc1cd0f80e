#!/usr/bin/env python3
"""A busy host, built for the run: does one collection cycle stay under the collection timeout?

    sudo python3 bench/busy_host_bench.py [--processes 5000] [--mounts 200] [--interfaces 100] [--loops 64] [--cycles 5]

It re-runs itself in new network and mount namespaces (``unshare --net --mount``), so the 100 veth
interfaces and the 200 bind mounts are seen by the collectors and by nothing else on the machine; it
then attaches loop devices (global: they are detached at the end) and starts the processes (``sleep``).
Each built-in host collector (cpu, memory, disk, network, processes) then runs in this process for
``--cycles`` cycles; the bench prints, per collector, the median wall time and thread CPU of a cycle,
the cost per item (process, mount, block device, interface), the series it emitted, and the largest
family, against the default collection timeout. Needs root, ``unshare``, ``ip`` and ``losetup``.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"busy_host_bench: {tool} not found")
    return path


def build(args: argparse.Namespace, work: Path) -> tuple[list[subprocess.Popen[bytes]], list[str], list[str]]:
    ip = need("ip")
    for i in range(0, args.interfaces, 2):  # veth pairs (this kernel may have no dummy driver)
        subprocess.run([ip, "link", "add", f"hmb{i}", "type", "veth", "peer", "name", f"hmb{i + 1}"], check=True)
        subprocess.run([ip, "link", "set", f"hmb{i}", "up"], check=True)
        subprocess.run([ip, "link", "set", f"hmb{i + 1}", "up"], check=True)
    mounts = []
    src = work / "src"
    src.mkdir()
    for i in range(args.mounts):  # bind mounts of a real file system: the filesystem collector keeps them
        d = work / f"m{i}"
        d.mkdir()
        subprocess.run(["mount", "--bind", str(src), str(d)], check=True)
        mounts.append(str(d))
    loops = []
    losetup = need("losetup")
    for i in range(args.loops):
        img = work / f"loop{i}.img"
        with open(img, "wb") as f:
            f.truncate(1 << 20)
        r = subprocess.run([losetup, "--find", "--show", str(img)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  losetup stopped after {len(loops)} devices: {r.stderr.strip()}")
            break
        loops.append(r.stdout.strip())
    procs = [subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL) for _ in range(args.processes)]
    return procs, mounts, loops


def teardown(procs: list[subprocess.Popen[bytes]], mounts: list[str], loops: list[str]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    for m in mounts:
        subprocess.run(["umount", "-l", m], check=False)
    for dev in loops:
        subprocess.run(["losetup", "-d", dev], check=False)


def measure(cycles: int) -> None:
    from hostmond.agent import config as config_mod
    from hostmond.agent.registry import discover
    from hostmond.agent.runtime import build_collectors

    cfg = config_mod.load(None, {})
    classes, _ = discover()
    names = ["cpu", "memory", "disk", "network", "processes"]
    runners, errs = build_collectors(cfg, classes, persist_state=False, only=names)
    for e in errs:
        print(f"  warning: {e}")
    for r in runners:
        r.c.start()
    n_procs = sum(1 for d in os.listdir("/proc") if d.isdigit())
    with open("/proc/self/mounts") as f:
        n_mounts = sum(1 for _ in f)
    n_dev = len(os.listdir("/sys/block"))
    with open("/proc/net/dev") as f:
        n_if = sum(1 for _ in f) - 2
    items = {"processes": (n_procs, "process"), "disk": (n_mounts + n_dev, "mount or device"), "network": (n_if, "interface")}
    print(f"  host now: {n_procs} processes, {n_mounts} mounts, {n_dev} block devices, {n_if} interfaces; "
          f"collection timeout {cfg.runtime.timeout:g} s")
    print(f"  {'collector':10} {'wall ms':>9} {'CPU ms':>9} {'per item':>14} {'series':>7}  largest family")
    for r in runners:
        walls, cpus, out = [], [], []
        for _ in range(cycles):
            w0, c0 = time.perf_counter(), time.thread_time()
            out = list(r.c.collect())
            walls.append(time.perf_counter() - w0)
            cpus.append(time.thread_time() - c0)
        fam = collections.Counter(getattr(s, "name", "event") for s in out)
        big, big_n = fam.most_common(1)[0] if fam else ("-", 0)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        per = ""
        if r.name in items and items[r.name][0]:
            per = f"{cpu / items[r.name][0] * 1e6:7.1f} µs/{items[r.name][1].split()[0]}"
        flag = "  OVER TIMEOUT" if wall > cfg.runtime.timeout else ""
        print(f"  {r.name:10} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {per:>14} {len(out):7d}  {big} ({big_n}){flag}")
    for r in runners:
        r.c.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=5000)
    ap.add_argument("--mounts", type=int, default=200)
    ap.add_argument("--interfaces", type=int, default=100)
    ap.add_argument("--loops", type=int, default=64)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("busy_host_bench: needs root (namespaces, mounts, loop devices)")
    if not args.inside:
        unshare = need("unshare")
        cmd = [unshare, "--net", "--mount", "--propagation", "private", sys.executable, __file__, "--inside", *sys.argv[1:]]
        raise SystemExit(subprocess.call(cmd))
    work = Path(tempfile.mkdtemp(prefix="hostmon-busy-"))
    print(f"building: {args.processes} processes, {args.mounts} bind mounts, {args.interfaces} veth interfaces, "
          f"{args.loops} loop devices")
    t0 = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    mounts: list[str] = []
    loops: list[str] = []
    try:
        procs, mounts, loops = build(args, work)
        print(f"  built in {time.monotonic() - t0:.1f} s")
        measure(args.cycles)
    finally:
        teardown(procs, mounts, loops)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
