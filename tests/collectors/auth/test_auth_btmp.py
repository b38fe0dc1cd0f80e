"""btmp: real 384-byte utmp records written to real files, followed through rotation and restarts."""

from __future__ import annotations

import os
from pathlib import Path

from hostmond.collectors.auth.btmp import (
    RECORD_SIZE,
    BtmpFollower,
    pack_record,
    parse_record,
)


def rec(user: str, addr: str | None = "203.0.113.5", host: str = "", t: float = 1_700_000_000.25, line: str = "ssh:notty") -> bytes:
    return pack_record(user, host or (addr or ""), line, t, addr)


def test_record_layout_and_fields() -> None:
    b = rec("root")
    assert len(b) == RECORD_SIZE == 384
    r = parse_record(b)
    assert r is not None
    assert (r.service, r.reason, r.user, r.source, r.time) == ("sshd", "btmp", "root", "203.0.113.5", 1_700_000_000.25)
    r6 = parse_record(rec("admin", "2001:db8::7"))
    assert r6 is not None and r6.source == "2001:db8::7"
    local = parse_record(pack_record("bob", "", "tty1", 1.0))
    assert local is not None and (local.service, local.source) == ("login", None)
    named = parse_record(pack_record("eve", "scanner.example", "ssh:notty", 5.0, None))
    assert named is not None and (named.source, named.host) == (None, "scanner.example")
    assert parse_record(pack_record("x", "", "tty1", 1.0, ut_type=8)) is None  # DEAD_PROCESS is not a failure


def test_follow_partial_records_rotation_and_restart(tmp_path: Path) -> None:
    p = tmp_path / "btmp"
    p.write_bytes(rec("u0") + rec("u1"))
    f = BtmpFollower(str(p), start_at_end=False)
    assert [r.user for r in f.poll()] == ["u0", "u1"]
    with open(p, "ab") as fh:  # half a record: not read until complete
        fh.write(rec("u2")[:100])
    assert f.poll() == []
    with open(p, "ab") as fh:
        fh.write(rec("u2")[100:] + rec("u3"))
    assert [r.user for r in f.poll()] == ["u2", "u3"]
    state = f.state()
    # agent down; more records, then monthly rotation by rename-and-create
    with open(p, "ab") as fh:
        fh.write(rec("u4"))
    os.rename(p, str(p) + ".1")
    p.write_bytes(rec("n0"))
    g = BtmpFollower(str(p))
    g.load_state(state)
    assert [r.user for r in g.poll()] == ["u4", "n0"]
    assert g.poll() == []
    with open(p, "ab") as fh:
        fh.write(rec("n1"))
    assert [r.user for r in g.poll()] == ["n1"]


def test_truncation_and_missing_and_fifo(tmp_path: Path) -> None:
    p = tmp_path / "btmp"
    f = BtmpFollower(str(p))
    assert f.poll() == [] and f.status == "missing"
    p.write_bytes(rec("a"))
    assert [r.user for r in f.poll()] == ["a"]  # created after start: read from its start
    p.write_bytes(b"")
    assert f.poll() == []
    p.write_bytes(rec("b"))
    assert [r.user for r in f.poll()] == ["b"]
    os.unlink(p)
    os.mkfifo(p)
    assert f.poll() == [] and f.status == "not_regular"


def test_start_at_end_skips_history(tmp_path: Path) -> None:
    p = tmp_path / "btmp"
    p.write_bytes(rec("old") * 3)
    f = BtmpFollower(str(p), start_at_end=True)
    assert f.poll() == []
    with open(p, "ab") as fh:
        fh.write(rec("new"))
    assert [r.user for r in f.poll()] == ["new"]
