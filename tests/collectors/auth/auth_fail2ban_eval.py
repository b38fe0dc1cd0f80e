"""Scores the parser against fail2ban's annotated test logs (``# failJSON:`` before a line).

Used by the tests and runnable by hand: ``python tests/collectors/auth/fail2ban_eval.py``.

Rules (documented in docs/auth-parsing.md):
* We score against fail2ban's ``aggressive`` mode, its most inclusive one, because our
  vocabulary counts pre-auth disconnects and protocol errors. An annotation whose
  ``constraint`` is false for ``name == 'sshd'`` and ``mode == 'aggressive'`` does not
  apply and its line is not scored; lines without an annotation are fed but not scored.
* A line is "flagged" when the parser returns a failure that names a client (address or
  host name) while reading it; records still held back at the end of the file are flagged
  on the line that produced them. A failure whose client is never known (sshd logged no
  address for that connection) is counted by the collector but claims no host, so it is
  listed separately and not scored: the question scored is "a failure from that host".
* TP: annotated match and flagged with the annotated host (when the annotation names a
  host). A flagged line with another host counts as both a false positive and a false
  negative.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# the real logs (see ../shared/data/auth-logs/README.md): HOSTMON_SHARED_DATA names the data directory
DATA = Path(os.environ.get("HOSTMON_SHARED_DATA") or REPO.parent / "shared" / "data") / "auth-logs"
sys.path.insert(0, str(REPO))

from hostmond.collectors.auth.parse import AuthFailure, AuthParser  # noqa: E402

_CONSTRAINT = re.compile(r"""^\s*(name|opts\.get\('mode'\))\s*(==|!=)\s*'([^']*)'\s*$""")


def constraint_holds(expr: str, name: str = "sshd", mode: str = "aggressive") -> bool:
    m = _CONSTRAINT.match(expr)
    if m is None:
        raise ValueError(f"unsupported constraint {expr!r}")
    lhs = name if m.group(1) == "name" else mode
    return (lhs == m.group(3)) == (m.group(2) == "==")


def _norm_host(h: str) -> str:
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return h
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    scored: int = 0
    skipped_constraint: int = 0
    disagreements: list[str] = field(default_factory=list)
    sourceless: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def summary(self) -> str:
        return (
            f"scored={self.scored} tp={self.tp} fp={self.fp} fn={self.fn} tn={self.tn} "
            f"skipped_by_constraint={self.skipped_constraint} precision={self.precision:.4f} recall={self.recall:.4f}"
        )


def evaluate(path: Path, now: float = 1_120_000_000.0) -> tuple[Score, list[AuthFailure]]:
    parser = AuthParser(now=lambda: now)
    score = Score()
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    flagged: dict[int, list[AuthFailure]] = {}
    annotated: dict[int, tuple[dict, str, int]] = {}
    pending_ann: dict | None = None
    all_records: list[AuthFailure] = []
    sourceless: list[tuple[int, AuthFailure]] = []
    seq_line: dict[int, int] = {}
    for lineno, line in enumerate(lines, 1):
        if line.startswith("#"):
            if line.startswith("# failJSON:"):
                pending_ann = json.loads(line[len("# failJSON:"):])
            continue
        if not line.strip():
            continue
        recs = parser.feed(line)
        seq = parser.seq
        seq_line[seq] = lineno
        if pending_ann is not None:
            annotated[seq] = (pending_ann, line, lineno)
            pending_ann = None
        all_records.extend(recs)
        for r in recs:
            if r.source or r.host:
                flagged.setdefault(seq, []).append(r)
            else:
                sourceless.append((lineno, r))
    for r in parser.flush():
        all_records.append(r)
        if r.source or r.host:
            flagged.setdefault(r.seq, []).append(r)
        else:
            sourceless.append((seq_line.get(r.seq, 0), r))
    for seq, (ann, line, lineno) in annotated.items():
        c = ann.get("constraint")
        if c and not constraint_holds(c):
            score.skipped_constraint += 1
            continue
        score.scored += 1
        recs = flagged.get(seq, [])
        want = bool(ann.get("match"))
        got_desc = ", ".join(f"{r.service}/{r.reason} src={r.source or r.host}" for r in recs) or "nothing"
        if want:
            host = ann.get("host")
            ok_host = host is None or any(_norm_host(host) in (r.source, r.host) for r in recs)
            if recs and ok_host:
                score.tp += 1
            elif recs:
                score.fp += 1
                score.fn += 1
                score.disagreements.append(f"WRONG-HOST line {lineno}: want {host}, got {got_desc}: {line}")
            else:
                score.fn += 1
                score.disagreements.append(f"MISSED line {lineno} (want {host}): {line}")
        else:
            if recs:
                score.fp += 1
                score.disagreements.append(f"EXTRA line {lineno}: got {got_desc}: {line}")
            else:
                score.tn += 1
    score.sourceless = [f"line {ln}: {r.service}/{r.reason} user={r.user!r} (no client address known)" for ln, r in sourceless]
    return score, all_records


if __name__ == "__main__":
    for name in ("fail2ban-sshd.log", "fail2ban-pam-generic.log"):
        s, _ = evaluate(DATA / name)
        print(name, s.summary())
        for d in s.disagreements:
            print("  ", d)
        for d in s.sourceless:
            print("   counted without a source (not scored):", d)
