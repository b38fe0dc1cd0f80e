"""Cost of one compliance run, and the same questions asked of Lynis, on this machine.

Times (median of ``--runs``):

* ``ours (default policy)``: every check of the default policy through HostView on ``/``, the
  two bounded tree walks included (wall and CPU seconds, entries walked, files read);
* ``ours (no tree walks)``: the same without world_writable_system_files and unexpected_suid;
* ``lynis (paired tests)``: ``lynis audit system --tests <the tests paired with ours> --no-plugins``
  (the run tests/collectors/compliance/test_compliance_lynis.py makes);
* with ``--lynis-full``, once: ``lynis audit system --quick`` with all its tests and plugins.

The peer figures put ours in scale; they are not a race (Lynis asks more questions per test).
Usage: python bench/compliance_bench.py [--runs 3] [--lynis-full]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "collectors" / "compliance"))

from hostmond.collectors.compliance.checks import evaluate, os_families
from hostmond.collectors.compliance.host import HostView
from hostmond.collectors.compliance.policy import default_policy_path, load_policy
from lynis_pairs import LYNIS_TESTS

WALKS = {"world_writable_system_files", "unexpected_suid"}


def ours(skip: set[str]) -> tuple[float, float, int, int]:
    policy = load_policy(default_policy_path())
    t0, c0 = time.monotonic(), time.process_time()
    host = HostView("/", "/proc")
    fams = os_families(host.read_text("/etc/os-release"))
    for c in policy.checks:
        if c.id not in skip:
            evaluate(c, host, fams)
    return time.monotonic() - t0, time.process_time() - c0, host.entries_scanned, host.files_read


def lynis(args: list[str]) -> tuple[float, float]:
    exe = shutil.which("lynis")
    if exe is None:
        raise SystemExit("lynis is not installed (apt-get install lynis)")
    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([exe, "audit", "system", *args, "--no-colors", "--quiet", "--log-file", f"{d}/l.log", "--report-file", f"{d}/r.dat"],
                       check=True, capture_output=True, timeout=1800, cwd=d)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.monotonic() - t0, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lynis-full", action="store_true")
    a = ap.parse_args()
    n_checks = len(load_policy(default_policy_path()).checks)
    for label, skip in (("ours (default policy, %d checks)" % n_checks, set()), ("ours (no tree walks)", WALKS)):
        runs = [ours(skip) for _ in range(a.runs)]
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        print(f"{label:42} wall {wall:7.2f} s  cpu {cpu:7.2f} s  entries walked {runs[0][2]:>8}  files read {runs[0][3]:>5}")
    runs2 = [lynis(["--tests", " ".join(LYNIS_TESTS), "--no-plugins"]) for _ in range(a.runs)]
    print(f"{'lynis (%d paired tests, no plugins)' % len(LYNIS_TESTS):42} wall {statistics.median(r[0] for r in runs2):7.2f} s  "
          f"cpu {statistics.median(r[1] for r in runs2):7.2f} s")
    if a.lynis_full:
        w, c = lynis(["--quick"])
        print(f"{'lynis (all tests and plugins, once)':42} wall {w:7.2f} s  cpu {c:7.2f} s")


if __name__ == "__main__":
    main()
