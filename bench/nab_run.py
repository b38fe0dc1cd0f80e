#!/usr/bin/env python3
"""Run the agent's anomaly detector over the Numenta Anomaly Benchmark corpus.

  .venv/bin/python bench/nab_run.py --data ../shared/data/nab/data --out /tmp/nab-out
  ../shared/tools/nab-score /tmp/nab-out

For every DATA/<category>/<file>.csv (columns timestamp,value) it streams the
values in order through ONE fresh ``Detector`` with the agent's default
parameters (the same class and defaults the agent runs; no per-file tuning, no
labels) and writes OUT/<category>/<file>.csv with timestamp,value,anomaly_score.
Prints the files, samples and the detector's CPU time per sample.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

from hostmond.agent.anomaly import detector as detector_mod
from hostmond.agent.anomaly.detector import DEFAULT_PARAMS, Detector


def ts(text: str) -> float:
    """NAB's naive timestamps, read as UTC."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def run_file(src: Path, dst: Path) -> tuple[int, float]:
    lines = src.read_text().splitlines()
    if not lines or not lines[0].startswith("timestamp,value"):
        raise SystemExit(f"{src}: expected a timestamp,value header, got {lines[:1]!r}")
    det = Detector(DEFAULT_PARAMS)
    out = ["timestamp,value,anomaly_score"]
    cpu = 0.0
    for i, line in enumerate(lines[1:], start=2):
        t, _, v = line.partition(",")
        try:
            x = float(v)
        except ValueError:
            raise SystemExit(f"{src}:{i}: value {v!r} is not a number") from None
        when = ts(t)
        c0 = time.process_time()
        s = det.update(x, when)
        cpu += time.process_time() - c0
        out.append(f"{t},{v},{s:.6f}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(out) + "\n")
    return len(lines) - 1, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="NAB data folder: <category>/<file>.csv (or the corpus folder holding data/)")
    ap.add_argument("--out", required=True, type=Path, help="results folder (created)")
    a = ap.parse_args(argv)
    files = sorted(a.data.glob("*/*.csv"))
    if not files and (a.data / "data").is_dir():  # the corpus folder itself (data/ and labels/ inside)
        files = sorted((a.data / "data").glob("*/*.csv"))
    if not files:
        print(f"no <category>/<file>.csv under {a.data}", file=sys.stderr)
        return 2
    total, cpu = 0, 0.0
    for f in files:
        n, c = run_file(f, a.out / f.parent.name / f.name)
        total += n
        cpu += c
    print(f"{len(files)} files, {total} samples, detector {detector_mod.__file__}, params {DEFAULT_PARAMS}")
    print(f"detector CPU {cpu:.2f} s, {cpu / total * 1e6:.2f} µs per sample (mean, including the timer)")
    print(f"score with: ../shared/tools/nab-score {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
