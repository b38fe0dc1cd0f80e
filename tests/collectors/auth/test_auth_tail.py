"""FileTailer on real files: rotation, truncation, restarts, partial and over-long lines, FIFOs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hostmond.collectors.auth.tail import DENIED, MISSING, NOT_REGULAR, OK, FileTailer


def write(p: Path, text: str, mode: str = "a") -> None:
    with open(p, mode, encoding="utf-8") as f:
        f.write(text)


def lines(n: int, start: int = 0, tag: str = "l") -> str:
    return "".join(f"{tag}{i}\n" for i in range(start, start + n))


def test_reads_only_complete_lines_and_waits_for_the_newline(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, "one\ntwo\nthr")
    t = FileTailer(str(p), start_at_end=False)
    assert t.poll() == ["one", "two"]
    assert t.poll() == []
    write(p, "ee\nfour\n")
    assert t.poll() == ["three", "four"]
    assert t.status == OK


def test_start_at_end_skips_history_on_first_start_only(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(5))
    t = FileTailer(str(p), start_at_end=True)
    assert t.poll() == []
    write(p, "new\n")
    assert t.poll() == ["new"]


def test_rename_and_create_reads_rest_of_old_file_then_new_file(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(3))
    t = FileTailer(str(p), start_at_end=False)
    assert t.poll() == ["l0", "l1", "l2"]
    write(p, lines(2, 3))  # written after our last poll, before rotation
    os.rename(p, str(p) + ".1")
    write(p, lines(2, 0, "n"), "w")
    got = t.poll()
    assert got == ["l3", "l4", "n0", "n1"]
    assert t.rotations == 1
    write(p, "n2\n")
    assert t.poll() == ["n2"]


def test_restart_resumes_exactly_without_loss_or_double_count(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(10))
    t = FileTailer(str(p), start_at_end=False)
    first = t.poll()
    state = t.state()
    t.close()
    write(p, lines(5, 10))
    t2 = FileTailer(str(p), start_at_end=True)  # start_at_end must not apply when a state exists
    t2.load_state(state)
    second = t2.poll()
    assert first + second == [f"l{i}" for i in range(15)]


def test_restart_after_rotation_finishes_old_file_found_by_inode(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(4))
    t = FileTailer(str(p), start_at_end=False)
    got = t.poll()
    state = t.state()
    t.close()
    # While the agent is down: more lines, rotation by rename, new file with lines.
    write(p, lines(3, 4))
    os.rename(p, str(p) + ".1")
    write(p, lines(2, 0, "n"), "w")
    t2 = FileTailer(str(p))
    t2.load_state(state)
    got += t2.poll()
    assert got == [f"l{i}" for i in range(7)] + ["n0", "n1"]


def test_copytruncate_restarts_at_zero(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(5))
    t = FileTailer(str(p), start_at_end=False)
    assert len(t.poll()) == 5
    with open(p, "r+") as f:  # what logrotate's copytruncate does after copying
        f.truncate(0)
    write(p, "after\n")
    assert t.poll() == ["after"]
    assert t.truncations == 1


def test_truncated_and_refilled_past_the_offset_between_polls(tmp_path: Path) -> None:
    """A file that shrank and grew again beyond our offset before the next poll: the size alone
    looks like growth; the changed first bytes say it is a new content, read from 0."""
    p = tmp_path / "auth.log"
    write(p, lines(5))
    t = FileTailer(str(p), start_at_end=False)
    assert len(t.poll()) == 5
    t.state()  # the collector saves after every collection; that records the first bytes
    with open(p, "r+") as f:
        f.truncate(0)
    write(p, lines(20, 0, "new"))
    assert t.poll() == [f"new{i}" for i in range(20)]
    assert t.truncations == 1
    write(p, "more\n")
    assert t.poll() == ["more"]  # an ordinary append is not a rewrite
    assert t.truncations == 1


def test_copytruncate_while_down_detected_on_restart(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(50))
    t = FileTailer(str(p), start_at_end=False)
    t.poll()
    st = t.state()
    t.close()
    with open(p, "r+") as f:
        f.truncate(0)
    write(p, "x\n")
    t2 = FileTailer(str(p))
    t2.load_state(st)
    # same inode, but the head hash differs: a new file content, read from 0
    assert t2.poll() == ["x"]


def test_inode_reuse_detected_by_head_hash(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, "first file line\n" * 3)
    t = FileTailer(str(p), start_at_end=False)
    t.poll()
    st = t.state()
    t.close()
    assert st is not None
    # Same dev/ino in the state but different first bytes: pretend the inode was reused.
    write(p, "other content line\n" * 5, "w")
    t2 = FileTailer(str(p))
    t2.load_state(st)
    assert t2.poll() == ["other content line"] * 5


def test_one_megabyte_line_is_skipped_and_counted_with_bounded_reads(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, "before\n" + "A" * (1 << 20) + "\nafter\n")
    t = FileTailer(str(p), start_at_end=False, max_line_bytes=4096, chunk_bytes=8192)
    assert t.poll() == ["before", "after"]
    assert t.overlong == 1


def test_long_line_still_being_written_is_skipped_once_complete(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, "a\n" + "B" * 10000)
    t = FileTailer(str(p), start_at_end=False, max_line_bytes=1024, chunk_bytes=2048)
    assert t.poll() == ["a"]
    write(p, "B" * 10000 + "\nc\n")
    assert t.poll() == ["c"]
    assert t.overlong == 1
    st = t.state()
    assert st is not None and st["skipping"] is False


def test_invalid_utf8_and_nul_bytes_are_decoded_not_fatal(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.write_bytes(b"ok\n\xff\xfe bad \x00 nul\n")
    t = FileTailer(str(p), start_at_end=False)
    got = t.poll()
    assert got[0] == "ok" and "\ufffd" in got[1] and "\x00" in got[1]


def test_missing_file_then_created(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    t = FileTailer(str(p), start_at_end=True)
    assert t.poll() == [] and t.status == MISSING
    write(p, "hello\n")
    # a file that appears after start is read from its beginning
    assert t.poll() == ["hello"]
    assert t.status == OK


def test_directory_in_place_of_file(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    p.mkdir()
    t = FileTailer(str(p))
    assert t.poll() == [] and t.status == NOT_REGULAR


def test_file_replaced_by_directory_while_tailing(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, "a\n")
    t = FileTailer(str(p), start_at_end=False)
    assert t.poll() == ["a"]
    write(p, "b\n")
    os.rename(p, tmp_path / "old")
    p.mkdir()
    assert t.poll() == ["b"]  # the rest of the old file is still read
    assert t.status == NOT_REGULAR
    assert t.poll() == []


def test_fifo_is_never_opened(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    os.mkfifo(p)
    t = FileTailer(str(p))
    done = threading.Event()

    def run() -> None:
        t.poll()
        done.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert done.wait(5), "poll() blocked on a FIFO"
    assert t.status == NOT_REGULAR


def _status_as_nobody(path: str) -> str:
    """Poll ``path`` in a forked child that dropped root privileges (root reads anything)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            t = FileTailer(path)
            t.poll()
            os.write(w, f"{t.status}|{t.error}".encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data.decode()


def test_unreadable_file_reports_permission_denied(open_tmp: Path) -> None:
    d = open_tmp / "logs"
    d.mkdir()
    d.chmod(0o755)
    p = d / "auth.log"
    write(p, "x\n")
    os.chmod(p, 0o600)
    if os.geteuid() == 0:
        status, _, error = _status_as_nobody(str(p)).partition("|")
    else:
        t = FileTailer(str(p))
        t.poll()
        status, error = t.status, t.error or ""
    assert status == DENIED, (status, error)
    assert "Permission denied" in error and str(p) in error


def test_read_budget_spreads_a_big_backlog_over_polls(tmp_path: Path) -> None:
    p = tmp_path / "auth.log"
    write(p, lines(1000))
    t = FileTailer(str(p), start_at_end=False, max_read_bytes=1000, max_line_bytes=256, chunk_bytes=512)
    got: list[str] = []
    for _ in range(100):
        got += t.poll()
    assert got == [f"l{i}" for i in range(1000)]
