"""The parser against real logs in ../shared/data/auth-logs (see its README).

Run with ``-s`` (or look at the captured output of a failure) to see every
disagreement with fail2ban; the summary line is printed always.
"""

from __future__ import annotations

import collections

from auth_fail2ban_eval import DATA, evaluate
from helpers import shared_data_file

from hostmond.collectors.auth.parse import AuthParser


def need(name: str):
    """The real log (HOSTMON_SHARED_DATA/auth-logs/NAME): skipped without the variable, a failure when missing."""
    p = shared_data_file(f"auth-logs/{name}")
    assert p == DATA / name
    return p


def report(name: str, score) -> None:  # noqa: ANN001
    print(f"\n{name}: {score.summary()}")
    for d in score.disagreements:
        print("  disagreement:", d)
    for d in score.sourceless:
        print("  counted, no client address (not scored):", d)


def test_fail2ban_sshd_annotations_precision_and_recall() -> None:
    score, recs = evaluate(need("fail2ban-sshd.log"))
    report("fail2ban-sshd.log", score)
    assert score.scored >= 150
    assert score.precision >= 0.99, score.summary() + "\n" + "\n".join(score.disagreements)
    assert score.recall >= 0.99, score.summary() + "\n" + "\n".join(score.disagreements)
    # the disagreements are exactly the ones explained in docs/auth-parsing.md
    explained = {"Mar 19 16:47:50 srv sshd[5672]: Disconnected from authenticating user admin 192.0.2.6 port 33553 [preauth]"}
    assert {d.split(": ", 2)[-1] for d in score.disagreements} <= explained, score.disagreements


def test_fail2ban_pam_generic_annotations() -> None:
    score, recs = evaluate(need("fail2ban-pam-generic.log"))
    report("fail2ban-pam-generic.log", score)
    assert score.tp == 8 and score.fn == 0, score.disagreements
    # fail2ban annotates the pre-0.99.2.0 Linux-PAM form "pop(pam_unix)[4920]: authentication failure"
    # "match": false only because its filter dropped support; we read that form (issue 12 #8,
    # docs/auth-parsing.md), so it is the one explained extra
    explained = {"Nov 25 17:12:13 webmail pop(pam_unix)[4920]: authentication failure; logname= uid=0 euid=0 tty= ruser= rhost=192.168.10.3 user=mailuser"}
    assert {d.split(": ", 2)[-1] for d in score.disagreements} <= explained, score.disagreements
    users = {r.user for r in recs}
    assert {"test rhost=192.0.2.151", "test rhost=192.0.2.152", "mark", "root"} <= users


def test_loghub_openssh_parses_and_prints_counts_by_reason() -> None:
    lines = need("loghub-OpenSSH_2k.log").read_text(encoding="utf-8", errors="replace").splitlines()
    p = AuthParser(now=lambda: 1_513_000_000.0)
    recs = []
    for line in lines:
        recs += p.feed(line)
    recs += p.flush()
    by = collections.Counter()
    for r in recs:
        by[(r.service, r.reason)] += r.count
    print("\nloghub-OpenSSH_2k.log failures by reason:")
    for (svc, reason), n in sorted(by.items(), key=lambda kv: -kv[1]):
        print(f"  {svc:6} {reason:20} {n}")
    assert p.unparsed == 0
    # cross-checks against the structured CSV's templates: every "Failed password" line (E9, E10) is counted
    # once (383 + 135 lines, plus 2 "message repeated" lines standing for more), every "Invalid user" (E13) once
    assert by[("sshd", "invalid_user")] == 113
    assert by[("sshd", "password")] >= 383 + 135
    assert by[("sshd", "other_method")] == 4  # E8 "Failed none for invalid user"
    assert all(r.source for r in recs if r.reason in ("password", "invalid_user"))
