"""The pure parser: shapes, vocabulary, timestamps, connection context and hostile input."""

from __future__ import annotations

import datetime as dt

import pytest
from hostmond.collectors.auth.parse import (
    REASONS,
    SERVICES,
    AuthFailure,
    AuthParser,
    normalise_address,
)
from hostmond.collectors.auth.timestamps import (
    infer_year,
    parse_journal_realtime,
    parse_rfc3339,
)

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 15, 12, 0, 0, tzinfo=UTC).timestamp()


def ts(*a: int) -> float:
    return dt.datetime(*a, tzinfo=UTC).timestamp()


def P(now: float = NOW) -> AuthParser:
    return AuthParser(now=lambda: now, tz=UTC)


def one(line: str, now: float = NOW) -> AuthFailure:
    p = P(now)
    recs = p.feed(line) + p.flush()
    assert len(recs) == 1, recs
    return recs[0]


def none(line: str) -> None:
    p = P()
    recs = p.feed(line) + p.flush()
    assert recs == [], recs


# -- sshd shapes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg,reason,user,source,port",
    [
        ("Failed password for root from 1.2.3.4 port 22 ssh2", "password", "root", "1.2.3.4", 22),
        ("Failed password for invalid user admin from 2001:db8::1 port 4242 ssh2", "password", "admin", "2001:db8::1", 4242),
        ("Failed keyboard-interactive/pam for invalid user bob from 10.0.0.1 port 1 ssh2", "keyboard_interactive", "bob", "10.0.0.1", 1),
        ("Failed publickey for invalid user git from 10.0.0.2 port 5 ssh2: RSA SHA256:abc", "publickey", "git", "10.0.0.2", 5),
        ("Failed none for invalid user x from 10.0.0.3 port 6 ssh2", "other_method", "x", "10.0.0.3", 6),
        ("Invalid user oracle from 10.0.0.4 port 7", "invalid_user", "oracle", "10.0.0.4", 7),
        ("Invalid user  from 10.0.0.5 port 8", "invalid_user", "", "10.0.0.5", 8),
        ("error: maximum authentication attempts exceeded for root from 10.0.0.6 port 9 ssh2 [preauth]", "max_attempts", "root", "10.0.0.6", 9),
        ("Connection closed by authenticating user root 10.0.0.7 port 10 [preauth]", "preauth_closed", "root", "10.0.0.7", 10),
        ("Connection reset by invalid user test 10.0.0.8 port 11 [preauth]", "preauth_closed", "test", "10.0.0.8", 11),
        ("Received disconnect from 10.0.0.9 port 12:11: Bye Bye [preauth]", "preauth_disconnect", None, "10.0.0.9", 12),
        ("Disconnected from invalid user a 10.0.0.10 port 13 [preauth]", "preauth_disconnect", "a", "10.0.0.10", 13),
        ("Did not receive identification string from 10.0.0.11 port 14", "bad_protocol", None, "10.0.0.11", 14),
        ("banner exchange: Connection from 10.0.0.12 port 15: invalid format", "bad_protocol", None, "10.0.0.12", 15),
        ("Unable to negotiate with 10.0.0.13 port 16: no matching cipher found. Their offer: x", "negotiation_failed", None, "10.0.0.13", 16),
        ("fatal: Timeout before authentication for 10.0.0.14 port 17", "preauth_timeout", None, "10.0.0.14", 17),
        ("ROOT LOGIN REFUSED FROM ::ffff:10.0.0.15", "root_refused", "root", "10.0.0.15", None),
        ("User bob from 10.0.0.16 not allowed because not listed in AllowUsers", "user_not_allowed", "bob", "10.0.0.16", None),
        ("error: PAM: Authentication failure for carol from 10.0.0.17", "pam_auth", "carol", "10.0.0.17", None),
        ("Bad protocol version identification 'GET / HTTP/1.1' from 10.0.0.18 port 19", "bad_protocol", None, "10.0.0.18", 19),
        ("Connection closed by invalid user x 2001:db8::5 port 20 [preauth]", "preauth_closed", "x", "2001:db8::5", 20),
        ("Failed keyboard-interactive for root from 2001:db8::6 port 21 ssh2", "keyboard_interactive", "root", "2001:db8::6", 21),
        ("Disconnecting invalid user admin 10.0.0.19 port 22: Too many authentication failures [preauth]", "max_attempts", "admin", "10.0.0.19", 22),
        ("Received disconnect from 10.0.0.20 port 23:14: No more user authentication methods available. [preauth]", "preauth_disconnect", None, "10.0.0.20", 23),
    ],
)
def test_sshd_failure_shapes(msg: str, reason: str, user: str | None, source: str, port: int | None) -> None:
    r = one(f"Jun 15 11:00:00 host sshd[100]: {msg}")
    assert (r.service, r.reason, r.user, r.source, r.port) == ("sshd", reason, user, source, port)
    assert r.time == ts(2024, 6, 15, 11, 0, 0)


@pytest.mark.parametrize(
    "msg",
    [
        "Accepted password for root from 1.2.3.4 port 22 ssh2",
        "Connection closed by 1.2.3.4 port 22",  # after a session: not a failure
        "Received disconnect from 1.2.3.4 port 22:11: disconnected by user",
        "Disconnected from user root 1.2.3.4 port 22",
        "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
        "input_userauth_request: invalid user root [preauth]",
        "reverse mapping checking getaddrinfo for x.example [1.2.3.4] failed - POSSIBLE BREAK-IN ATTEMPT!",
        "Server listening on 0.0.0.0 port 22.",
    ],
)
def test_sshd_non_failures(msg: str) -> None:
    none(f"Jun 15 11:00:00 host sshd[100]: {msg}")


def test_sshd_session_program_is_normalised_to_sshd() -> None:
    r = one("Jun 15 11:00:00 host sshd-session[1571]: Failed password for root from 192.0.2.1 port 56502 ssh2")
    assert r.service == "sshd"


def test_vocabulary_is_fixed() -> None:
    assert "sshd" in SERVICES and len(set(REASONS)) == len(REASONS)
    p = P()
    lines = open_real("sshd-sample.log") + open_real("pam-old-syslog.log")
    recs = [r for line in lines for r in p.feed(line)] + p.flush()
    assert recs and all(r.service in SERVICES and r.reason in REASONS for r in recs)


def open_real(name: str) -> list[str]:
    """A log fixture we wrote (tests/data/auth; the published real logs are read in test_auth_real_logs)."""
    from helpers import TEST_DATA

    return (TEST_DATA / "auth" / name).read_text(encoding="utf-8").splitlines()


# -- connection context ----------------------------------------------------------------


def test_pam_line_is_not_counted_twice_with_sshds_own_line() -> None:
    p = P()
    out = p.feed("Jun 15 11:00:00 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=root")
    out += p.feed("Jun 15 11:00:02 h sshd[7]: Failed password for root from 1.2.3.4 port 22 ssh2")
    out += p.flush()
    assert [(r.reason, r.source) for r in out] == [("password", "1.2.3.4")]


def test_pam_failure_followed_by_success_of_same_user_is_not_a_failure() -> None:
    p = P()
    out = p.feed("Jun 15 11:00:00 h sshd[8]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=rda")
    out += p.feed("Jun 15 11:00:00 h sshd[8]: Accepted password for rda from 1.2.3.4 port 22 ssh2")
    assert out + p.flush() == []


def test_publickey_offers_before_success_are_not_failures_but_count_if_never_accepted() -> None:
    p = P()
    ok = p.feed("Jun 15 11:00:00 h sshd[9]: Failed publickey for git from 1.2.3.4 port 5 ssh2: RSA SHA256:x")
    ok += p.feed("Jun 15 11:00:00 h sshd[9]: Accepted publickey for git from 1.2.3.4 port 5 ssh2: ED25519 SHA256:y")
    assert ok == []
    bad = p.feed("Jun 15 11:00:00 h sshd[10]: Failed publickey for git from 5.6.7.8 port 5 ssh2: RSA SHA256:x")
    assert bad == []
    bad += p.feed("Jun 15 11:00:01 h sshd[10]: Connection closed by authenticating user git 5.6.7.8 port 5 [preauth]")
    assert [(r.reason, r.source) for r in bad] == [("publickey", "5.6.7.8"), ("preauth_closed", "5.6.7.8")]


def test_addressless_failure_takes_the_connections_address() -> None:
    p = P()
    assert p.feed("Jun 15 11:00:00 h sshd[11]: Connection from 9.9.9.9 port 1 on 10.0.0.1 port 22") == []
    out = p.feed("Jun 15 11:00:00 h sshd[11]: error: kex_exchange_identification: client sent invalid protocol identifier \"\"")
    assert [(r.reason, r.source, r.port) for r in out] == [("bad_protocol", "9.9.9.9", 1)]


def test_addressless_failure_is_held_until_the_address_appears() -> None:
    p = P()
    assert p.feed("Jun 15 11:00:00 h sshd[12]: Disconnecting: Too many authentication failures for root [preauth]") == []
    out = p.feed("Jun 15 11:00:01 h sshd[12]: Connection closed by 8.8.8.8 [preauth]")
    assert [(r.reason, r.source) for r in out] == [("max_attempts", "8.8.8.8"), ("preauth_closed", "8.8.8.8")]


def test_message_repeated_counts_every_repeat() -> None:
    r = one("Jun 15 11:00:00 h sshd[13]: message repeated 5 times: [ Failed password for root from 5.36.59.76 port 42393 ssh2]")
    assert (r.reason, r.count, r.source) == ("password", 5, "5.36.59.76")


def test_connection_contexts_are_bounded() -> None:
    p = AuthParser(now=lambda: NOW, tz=UTC, max_connections=10)
    out = []
    for pid in range(100):
        out += p.feed(f"Jun 15 11:00:00 h sshd[{pid}]: Disconnecting: Too many authentication failures for root [preauth]")
    out += p.flush()
    assert len(p.conns) == 10 and p.evicted == 90
    assert len(out) == 100  # evicted contexts release what they held: nothing lost


# -- hostile input --------------------------------------------------------------------


def test_username_injection_is_attributed_to_the_real_address() -> None:
    r = one("Jun 15 11:00:00 h sshd[1]: Failed password for invalid user Invalid user root from 1.2.3.4 from 5.6.7.8 port 22 ssh2")
    assert r.source == "5.6.7.8" and r.user == "Invalid user root from 1.2.3.4"
    r = one("Jun 15 11:00:00 h sshd[1]: Invalid user Invalid user root from 1.2.3.4 from 5.6.7.8 port 22")
    assert r.source == "5.6.7.8"
    r = one("Jun 15 11:00:00 h sshd[1]: Failed password for invalid user x from 6.6.6.6 port 1 ssh2: y from 5.6.7.8 port 22 ssh2")
    assert r.source == "5.6.7.8"
    r = one("Jun 15 11:00:00 h sshd[1]: Connection closed by authenticating user a 6.6.6.6 port 5 5.6.7.8 port 22 [preauth]")
    assert r.source == "5.6.7.8" and r.user == "a 6.6.6.6 port 5"


def test_injected_syslog_prefix_inside_a_username_does_not_create_a_record_for_it() -> None:
    line = "Jun 15 11:00:00 h sshd[1]: Invalid user Jun 15 11:00:00 h sshd[2]: Failed password for root from 1.2.3.4 port 22 ssh2 from 5.6.7.8 port 22"
    r = one(line)
    assert (r.reason, r.source) == ("invalid_user", "5.6.7.8")


def test_pam_rhost_injection_in_ruser_and_user() -> None:
    r = one("Jun 15 11:00:00 h vsftpd: pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=x ruser=t rhost=6.6.6.6 rhost=1.2.3.4")
    assert r.source == "1.2.3.4"
    r = one("Jun 15 11:00:00 h vsftpd: pam_unix(vsftpd:auth): authentication failure; logname= uid=0 euid=0 tty=x ruser= rhost=1.2.3.4 user=t rhost=6.6.6.6")
    assert r.source == "1.2.3.4" and r.user == "t rhost=6.6.6.6"


def test_invalid_utf8_nul_and_huge_lines_do_not_crash() -> None:
    p = P()
    raw = b"Jun 15 11:00:00 h sshd[1]: Failed password for \xff\xfe\x00evil from 1.2.3.4 port 22 ssh2"
    out = p.feed(raw.decode("utf-8", "replace"))
    assert out[0].source == "1.2.3.4" and "\x00" not in (out[0].user or "")
    out = p.feed(raw.decode("utf-8", "surrogateescape"))
    assert out[0].source == "1.2.3.4"
    big = "Jun 15 11:00:00 h sshd[1]: Failed password for " + "A" * 1_000_000 + " from 1.2.3.4 port 22 ssh2"
    out = p.feed(big)
    assert out[0].source == "1.2.3.4" and len(out[0].user or "") <= 128
    for junk in ["", "\x00" * 100, "<<<>>>", "<999>1 - - - - -", "2024-13-99T99:99:99Z h sshd[1]: x", "Jun 99 99:99:99 h sshd[1]: Failed password for a from 1.2.3.4 port 1 ssh2"]:
        p.feed(junk)


def test_hostnames_are_kept_apart_from_addresses() -> None:
    r = one("Jun 15 11:00:00 h sshd[1]: error: PAM: Authentication failure for a from example.com")
    assert r.source is None and r.host == "example.com"
    assert normalise_address("::ffff:1.2.3.4") == ("1.2.3.4", None)
    assert normalise_address("bad value!") == (None, None)


# -- other services ------------------------------------------------------------------------


def test_su_sudo_login_and_generic_pam() -> None:
    r = one("Jun 15 11:00:00 h su[5]: FAILED SU (to root) alice on pts/0")
    assert (r.service, r.reason, r.user) == ("su", "password", "alice")
    r = one("Jun 15 11:00:00 h sudo:    alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id")
    assert (r.service, r.reason, r.user, r.count) == ("sudo", "password", "alice", 3)
    r = one("Jun 15 11:00:00 h sudo:      bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/ ; USER=root ; COMMAND=/bin/sh")
    assert (r.service, r.reason, r.user) == ("sudo", "user_not_allowed", "bob")
    r = one("Jun 15 11:00:00 h login[9]: FAILED LOGIN (1) on '/dev/tty1' FOR 'UNKNOWN', Authentication failure")
    assert (r.service, r.reason, r.user) == ("login", "password", "UNKNOWN")
    r = one("Jun 15 11:00:00 h login[9]: FAILED LOGIN 1 FROM 192.0.2.9 FOR root, Authentication failure")
    assert (r.service, r.source, r.user) == ("login", "192.0.2.9", "root")
    r = one("Jun 15 11:00:00 h dovecot: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=x rhost=192.0.2.8  user=x")
    assert (r.service, r.reason, r.source, r.user) == ("pam", "pam_auth", "192.0.2.8", "x")
    # su/sudo also log through PAM: that line is not counted a second time
    none("Jun 15 11:00:00 h sudo: pam_unix(sudo:auth): authentication failure; logname=a uid=1000 euid=0 tty=/dev/pts/0 ruser=a rhost=  user=a")


# -- timestamps -------------------------------------------------------------------------------


def test_year_inference_across_new_year() -> None:
    jan = dt.datetime(2024, 1, 2, 0, 0, 0)
    assert infer_year(12, 31, jan) == 2023
    assert infer_year(1, 1, jan) == 2024
    assert infer_year(1, 1, dt.datetime(2023, 12, 31, 23, 59)) == 2024
    assert infer_year(6, 1, dt.datetime(2024, 6, 3)) == 2024
    assert infer_year(2, 29, dt.datetime(2025, 3, 1)) == 2024
    r = one("Dec 31 23:59:59 h sshd[1]: Invalid user a from 1.2.3.4", now=ts(2024, 1, 1, 0, 5))
    assert r.time == ts(2023, 12, 31, 23, 59, 59)


def test_rfc3339_high_precision_header() -> None:
    r = one("2023-06-01T12:00:00.123456+02:00 host sshd[1]: Failed password for root from 1.2.3.4 port 22 ssh2")
    assert r.time == pytest.approx(ts(2023, 6, 1, 10, 0, 0) + 0.123456)
    assert parse_rfc3339("2023-06-01T10:00:00Z") == ts(2023, 6, 1, 10)


def test_rfc5424_with_structured_data() -> None:
    r = one('<38>1 2019-07-08T17:40:17.954167-04:00 h.example.com sshd 55555 - [timeQuality tzKnown="1"][x@1 t="[br\\"ack]ets]"] Failed unknown for invalid user redmond from 192.0.2.2 port 55555 ssh2')
    assert (r.reason, r.source, r.user) == ("other_method", "192.0.2.2", "redmond")
    assert r.time == pytest.approx(ts(2019, 7, 8, 21, 40, 17) + 0.954167)


def test_journal_entries_including_byte_array_message() -> None:
    p = P()
    e = {"__REALTIME_TIMESTAMP": "1700000000123456", "SYSLOG_IDENTIFIER": "sshd-session", "_PID": "4", "_HOSTNAME": "h",
         "MESSAGE": "Failed password for root from 1.2.3.4 port 22 ssh2"}
    r = p.feed_journal(e)[0]
    assert (r.service, r.time, r.source) == ("sshd", 1700000000.123456, "1.2.3.4")
    msg = list(b"Invalid user \xff\xfe from 5.6.7.8 port 9")
    r = p.feed_journal({"__REALTIME_TIMESTAMP": "1", "_COMM": "sshd", "_PID": "5", "MESSAGE": msg})[0]
    assert (r.reason, r.source, r.port) == ("invalid_user", "5.6.7.8", 9)
    assert p.feed_journal({"MESSAGE": 5}) == [] and p.feed_journal({}) == []
    assert parse_journal_realtime("x") is None


def test_held_records_survive_export_and_import_and_bad_state_is_skipped() -> None:
    p = P()
    assert p.feed("Jun 15 11:00:00 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=1.2.3.4  user=root") == []
    assert p.held_count() == 1
    q = P()
    assert q.import_state(p.export_state()) == 1 and q.held_count() == 1
    out = q.feed("Jun 15 11:00:02 h sshd[7]: Failed password for root from 1.2.3.4 port 22 ssh2") + q.flush()
    assert [(r.reason, r.source) for r in out] == [("password", "1.2.3.4")]
    r = P()
    bad = [None, 5, {"pid": 3}, {"pid": "4", "pam": {"x": [[0, "evil", "password", None, None, None, None, 1]]}}, {"pid": "5", "noaddr": "x"}]
    assert r.import_state(bad) == 0  # a record outside the fixed vocabulary is not loaded
    assert r.held_count() == 0 and r.flush() == []
    assert r.import_state("not a list") == 0


def test_every_service_and_reason_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "auth-parsing.md").read_text()
    missing = [v for v in (*SERVICES, *REASONS) if f"`{v}`" not in doc]
    assert not missing, f"not in docs/auth-parsing.md: {missing}"


def test_banner_garbage_takes_the_connections_address() -> None:
    p = P()
    p.feed("Jun 15 11:00:00 h sshd-session[31]: Connection from 2001:db8::9 port 4000 on 2001:db8::1 port 22 rdomain \"\"")
    out = p.feed("Jun 15 11:00:00 h sshd-session[31]: error: kex_exchange_identification: banner line contains invalid characters")
    assert [(r.service, r.reason, r.source, r.port) for r in out] == [("sshd", "bad_protocol", "2001:db8::9", 4000)]
