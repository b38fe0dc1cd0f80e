"""Our verdicts against the real Lynis (Debian package ``lynis``) on the check pairs of lynis_pairs.py.

Three runs: this machine (Lynis reads the live system), and a bad and a good host tree that Lynis reads
with ``--rootdir`` for the tests that honour it (lynis_pairs.Pair.rootdir). Lynis runs only the paired
tests (``--tests``) without plugins, which keeps each run to seconds instead of minutes. Every pair that
both tools decide must agree, or carry the documented reason why ours differs (``may_differ``, also
in docs/compliance.md). bench/compliance.py reports how long each tool takes.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from compliance_trees import make_tree
from helpers import require_tool
from hostmond.collectors.compliance.checks import evaluate, os_families
from hostmond.collectors.compliance.host import HostView
from hostmond.collectors.compliance.policy import default_policy_path, load_policy
from lynis_pairs import LYNIS_TESTS, PAIRS, Pair

pytestmark = pytest.mark.slow
ROOTDIR_TESTS = sorted({p.lynis.split(":")[0] for p in PAIRS if p.rootdir})


def run_lynis(tmp: Path, tests: list[str], rootdir: str | None = None) -> tuple[str, float]:
    lynis = require_tool("lynis")
    log, report = tmp / "lynis.log", tmp / "lynis-report.dat"
    cmd = [lynis, "audit", "system", "--tests", " ".join(tests), "--no-plugins", "--no-colors", "--quiet",
           "--log-file", str(log), "--report-file", str(report)]
    if rootdir:
        cmd += ["--rootdir", rootdir.rstrip("/") + "/"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=tmp)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return log.read_text(errors="replace") + "\n" + report.read_text(errors="replace"), took


def ours(rootfs: str, proc_root: str, checks: set[str]) -> dict[str, str]:
    policy = load_policy(default_policy_path())
    host = HostView(rootfs, proc_root)
    fams = os_families(host.read_text("/etc/os-release"))
    return {c.id: evaluate(c, host, fams).status for c in policy.checks if c.id in checks}


def compare(pairs: tuple[Pair, ...] | list[Pair], mine: dict[str, str], text: str) -> tuple[list[tuple[Pair, str, str]], list[str]]:
    """(pairs decided by both with both verdicts, disagreements without a documented reason)."""
    both, unexplained = [], []
    for p in pairs:
        lv, ov = p.lynis_verdict(text), mine.get(p.check)
        if lv is None or ov not in ("pass", "fail"):
            continue
        both.append((p, ov, lv))
        if ov != lv and not p.may_differ:
            unexplained.append(f"{p.check} ({p.lynis}): ours {ov}, Lynis {lv}")
    return both, unexplained


def test_pairs_exist_in_our_policy_and_lynis():
    ids = {c.id for c in load_policy(default_policy_path()).checks}
    assert {p.check for p in PAIRS} <= ids
    assert len(PAIRS) >= 20
    tests_dir = Path("/usr/share/lynis/include")
    if tests_dir.is_dir():
        registered = " ".join(f.read_text(errors="replace") for f in tests_dir.glob("tests_*"))
        for t in LYNIS_TESTS:
            assert f"--test-no {t} " in registered, t


def test_live_system_verdicts_agree_with_lynis(tmp_path, capsys):
    text, lynis_s = run_lynis(tmp_path, LYNIS_TESTS)
    t0 = time.monotonic()
    mine = ours("/", "/proc", {p.check for p in PAIRS})
    ours_s = time.monotonic() - t0
    both, unexplained = compare(PAIRS, mine, text)
    with capsys.disabled():
        print(f"\nlive: {len(both)} pairs decided by both; Lynis ({len(LYNIS_TESTS)} tests) {lynis_s:.1f} s, ours {ours_s:.2f} s")
        for p, ov, lv in both:
            print(f"  {p.check:30} {p.lynis:45} ours={ov:5} lynis={lv:5}{'  (documented: ' + p.may_differ + ')' if ov != lv else ''}")
    assert not unexplained, unexplained
    assert len(both) >= 10, "too few pairs decided by both tools on this machine for the comparison to mean anything"


@pytest.mark.parametrize("bad", [True, False], ids=["bad-tree", "good-tree"])
def test_host_tree_verdicts_agree_with_lynis_rootdir(tmp_path, bad, capsys):
    root, proc = make_tree(tmp_path / "tree", bad)
    text, _ = run_lynis(tmp_path, ROOTDIR_TESTS, rootdir=root)
    pairs = [p for p in PAIRS if p.rootdir]
    mine = ours(root, proc, {p.check for p in pairs})
    both, unexplained = compare(pairs, mine, text)
    verdicts = {p.check: (ov, lv) for p, ov, lv in both}
    with capsys.disabled():
        print(f"\n{'bad' if bad else 'good'} tree: " + ", ".join(f"{k} ours={o} lynis={x}" for k, (o, x) in verdicts.items()))
    assert not unexplained, unexplained
    assert {p.check for p in pairs} == set(verdicts), "Lynis left a --rootdir pair undecided"
    if bad:
        # every deliberately bad setting is caught by both tools
        assert all(v == ("fail", "fail") for v in verdicts.values()), verdicts
    else:
        assert all(o == "pass" for o, _ in verdicts.values()), verdicts
        assert verdicts["uid0_only_root"] == verdicts["password_max_days"] == verdicts["module_dccp_disabled"] == ("pass", "pass")
        # the documented difference: 'install sctp /bin/false' (CIS's form) disables the module, Lynis does not see it
        assert verdicts["module_sctp_disabled"] == ("pass", "fail")
