"""Failed-login parser speed on one core, on a large log built from the real logs.

Builds ~500k lines by repeating ../shared/data/auth-logs (loghub OpenSSH, fail2ban's
sshd and pam-generic logs, comments dropped), giving every repetition its own pids
so connections do not collide, and times:

* ``parse``: AuthParser.feed over the lines (str in memory): the figure for the
  issue's target of 150,000 lines/s;
* ``tail+parse``: FileTailer reading the same log from a real file (bytes, decode,
  split) and parsing it: what the collector does;
* ``peer: decode+split``: only reading the bytes, decoding and splitting lines,
  the floor any line-based parser pays; the ratio puts the parser's cost in scale.

Prints the median of ``--runs`` runs (default 5) for each, in lines per CPU second
(``time.process_time``: on a shared machine wall time mostly measures the neighbours),
plus a calibration figure (empty-loop speed) to compare machines.
Usage: python bench/auth_parse_bench.py [--lines 500000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# the real logs: HOSTMON_SHARED_DATA (as in the tests) or ../shared/data beside the repository;
# without them the bench falls back to our own small fixtures in tests/data/auth (figures then differ)
DATA = Path(os.environ.get("HOSTMON_SHARED_DATA") or REPO.parent / "shared" / "data") / "auth-logs"
FALLBACK = REPO / "tests" / "data" / "auth"

from hostmond.collectors.auth.parse import AuthParser  # noqa: E402
from hostmond.collectors.auth.tail import FileTailer  # noqa: E402

_PID = re.compile(r"\[(\d+)\]:")


def sources() -> list[Path]:
    """The real logs when present, else our fixtures (and a note on stderr that the figures are not comparable)."""
    real = [DATA / n for n in ("loghub-OpenSSH_2k.log", "fail2ban-sshd.log", "fail2ban-pam-generic.log")]
    if all(p.is_file() for p in real):
        return real
    print(f"note: {DATA} not found (set HOSTMON_SHARED_DATA); timing the small fixtures in {FALLBACK} instead, "
          "whose mix of lines differs: compare these figures only with each other", file=sys.stderr)
    return sorted(FALLBACK.glob("*.log"))


def build(n_lines: int) -> list[str]:
    base: list[str] = []
    for path in sources():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip() and not line.startswith("#"):
                base.append(line)
    out: list[str] = []
    rep = 0
    while len(out) < n_lines:
        off = rep * 10_000_000
        out.extend(_PID.sub(lambda m: f"[{int(m.group(1)) + off}]:", line) for line in base)
        rep += 1
    return out[:n_lines]


def run_parse(lines: list[str]) -> tuple[float, int]:
    p = AuthParser(now=lambda: 1_700_000_000.0)
    feed = p.feed
    n = 0
    t0 = time.process_time()
    for line in lines:
        r = feed(line)
        if r:
            n += len(r)
    n += len(p.flush())
    return time.process_time() - t0, n


def run_tail_parse(path: str) -> tuple[float, int]:
    p = AuthParser(now=lambda: 1_700_000_000.0)
    t = FileTailer(path, start_at_end=False, max_read_bytes=1 << 40)
    n = 0
    t0 = time.process_time()
    for line in t.poll():
        r = p.feed(line)
        if r:
            n += len(r)
    n += len(p.flush())
    dt = time.process_time() - t0
    t.close()
    return dt, n


def run_peer(path: str) -> tuple[float, int]:
    t0 = time.process_time()
    with open(path, "rb") as f:
        data = f.read()
    lines = data.decode("utf-8", "replace").split("\n")
    return time.process_time() - t0, len(lines)


def calibrate() -> float:
    """Empty-loop iterations per CPU second: how fast this machine runs Python right now."""
    t0 = time.process_time()
    for _ in range(5_000_000):
        pass
    return 5_000_000 / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass
    lines = build(a.lines)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "auth.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        size = os.path.getsize(path)
        res: dict[str, list[float]] = {"parse": [], "tail+parse": [], "peer: decode+split": []}
        found = 0
        for _ in range(a.runs):
            dt, found = run_parse(lines)
            res["parse"].append(len(lines) / dt)
            dt, _n = run_tail_parse(path)
            res["tail+parse"].append(len(lines) / dt)
            dt, _n = run_peer(path)
            res["peer: decode+split"].append(len(lines) / dt)
    cal = calibrate()
    print(f"log: {len(lines):,} lines, {size / 1e6:.1f} MB, {found:,} failure records per pass; one core; median of {a.runs} runs")
    for k, v in res.items():
        print(f"  {k:20} {statistics.median(v):>12,.0f} lines/s   (min {min(v):,.0f}, max {max(v):,.0f})")
    print(f"  calibration: empty Python loop {cal / 1e6:.1f} M iterations per CPU second on this machine "
          "(to compare machines)")
    ratio = statistics.median(res["peer: decode+split"]) / statistics.median(res["parse"])
    print(f"  parse costs {ratio:.1f}x the decode+split floor; target >= 150,000 lines/s: "
          f"{'met' if statistics.median(res['parse']) >= 150_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
