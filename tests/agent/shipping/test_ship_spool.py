"""The spool: durable atomic writes, corrupt files moved aside, byte limit with oldest dropped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hostmond.agent.shipping.spool import SeqStore, Spool

from hostmond.core import keys, wire
from hostmond.core.errors import SpoolError


@pytest.fixture(scope="module")
def agent() -> keys.PrivateKey:
    return keys.generate("ed25519")


@pytest.fixture(scope="module")
def ingest() -> keys.PrivateKey:
    return keys.generate("x25519")


def make_batch(agent, ingest, seq: int, n: int = 5, pad: int = 0) -> tuple[wire.BatchHeader, bytes]:
    recs = [{"s": "m", "k": "gauge", "v": float(i), "l": {"tenant_id": "acme", "pad": "x" * pad + str(i)}, "t": 1.0} for i in range(n)]
    h = wire.BatchHeader(1, "x25519", ingest.key_id, agent.key_id, ("acme",), seq, float(seq), n, 0)
    return h, wire.seal(h, recs, agent, ingest.public)


def open_spool(path, agent, limit: int = 1 << 30) -> Spool:
    sp = Spool(str(path), limit, agent.public)
    sp.open()
    return sp


def test_batches_survive_a_reopen_in_sequence_order(tmp_path, agent, ingest) -> None:
    sp = open_spool(tmp_path, agent)
    for seq in (5, 6, 7):
        sp.put(*make_batch(agent, ingest, seq))
    files = sorted(os.listdir(tmp_path))
    assert files == ["00000000000000000005.hmb", "00000000000000000006.hmb", "00000000000000000007.hmb", "corrupt"]
    assert all(os.stat(tmp_path / f).st_mode & 0o077 == 0 for f in files if f.endswith(".hmb"))
    sp2 = open_spool(tmp_path, agent)
    assert sp2.seqs() == [5, 6, 7] and sp2.bytes == sp.bytes and sp2.corrupt == 0
    e = sp2.claim_oldest()
    assert e.seq == 5 and sp2.claim_oldest().seq == 6  # 5 is in flight
    sp2.release(5)
    assert sp2.claim_oldest().seq == 5
    blob = sp2.read(e)
    header, *_ = wire.parse_envelope(blob, 1 << 20)
    assert header.seq == 5
    sp2.remove(5)
    assert sp2.seqs() == [6, 7] and not (tmp_path / "00000000000000000005.hmb").exists()


def test_truncated_corrupt_and_leftover_files_are_moved_aside_and_counted(tmp_path, agent, ingest) -> None:
    sp = open_spool(tmp_path, agent)
    for seq in range(1, 6):
        sp.put(*make_batch(agent, ingest, seq))
    p2, p3, p4 = (tmp_path / f"{s:020d}.hmb" for s in (2, 3, 4))
    p2.write_bytes(p2.read_bytes()[:-10])  # truncated
    data = bytearray(p3.read_bytes())
    data[len(data) // 2] ^= 0x40  # bit rot
    p3.write_bytes(bytes(data))
    p4.write_bytes(b"")  # empty
    (tmp_path / ".tmp-00000000000000000009.hmb").write_bytes(b"half a batch")  # crash before rename
    other = keys.generate("ed25519")  # a batch signed by someone else
    _, blob = make_batch(other, ingest, 8)
    (tmp_path / f"{8:020d}.hmb").write_bytes(blob)
    _, blob = make_batch(agent, ingest, 10)
    (tmp_path / f"{11:020d}.hmb").write_bytes(blob)  # name and content disagree
    sp2 = open_spool(tmp_path, agent)
    assert sp2.seqs() == [1, 5]
    assert sp2.corrupt == 6
    assert len(os.listdir(tmp_path / "corrupt")) == 6
    # corruption that appears after start-up is caught before sending
    p5 = tmp_path / f"{5:020d}.hmb"
    p5.write_bytes(p5.read_bytes()[:-1])
    assert sp2.read(sp2.claim_oldest()) is not None  # seq 1 is fine
    e5 = sp2.claim_oldest()
    assert e5.seq == 5 and sp2.read(e5) is None
    assert sp2.corrupt == 7 and sp2.seqs() == [1]


def test_full_spool_drops_exactly_the_oldest_batches_and_counts_them(tmp_path, agent, ingest) -> None:
    batches = [make_batch(agent, ingest, seq) for seq in range(100, 120)]
    size = len(batches[0][1])
    assert all(len(b) == size for _, b in batches)
    sp = open_spool(tmp_path, agent, limit=size * 7 + size // 2)  # room for 7
    dropped: list[int] = []
    for h, b in batches:
        dropped += sp.put(h, b)
    assert dropped == list(range(100, 113))
    assert sp.seqs() == list(range(113, 120))
    assert sp.dropped_batches == 13 and sp.dropped_samples == 13 * 5
    assert sp.bytes == 7 * size <= sp.limit_bytes
    assert sorted(os.listdir(tmp_path)) == sorted([f"{s:020d}.hmb" for s in range(113, 120)] + ["corrupt"])


def test_a_batch_evicted_while_being_sent_counts_as_dropped_only_if_that_send_fails(tmp_path, agent, ingest) -> None:
    batches = [make_batch(agent, ingest, seq) for seq in range(1, 6)]
    size = len(batches[0][1])
    sp = open_spool(tmp_path, agent, limit=size * 2)
    sp.put(*batches[0])
    sp.put(*batches[1])
    assert sp.claim_oldest().seq == 1
    assert sp.put(*batches[2]) == [1]  # still the oldest that goes
    assert sp.seqs() == [2, 3] and sp.dropped_batches == 0  # fate of 1 not known yet
    sp.remove(1)  # the ingest acknowledged it: nothing was lost
    assert sp.dropped_batches == 0
    assert sp.claim_oldest().seq == 2
    assert sp.put(*batches[3]) == [2]
    sp.release(2)  # that send failed: now it is a drop
    assert sp.dropped_batches == 1 and sp.dropped_samples == 5
    assert sp.seqs() == [3, 4] and sp.bytes == 2 * size


def test_a_batch_just_written_is_handed_to_the_sender_from_memory_once_and_bounded(tmp_path, agent, ingest) -> None:
    """The sender takes a batch this process just wrote without reading the file back; once only (a
    retry reads and verifies the file), never for a batch evicted meanwhile, and at most
    FRESH_MAX_BATCHES are held."""
    from hostmond.agent.shipping import spool as spool_mod

    batches = [make_batch(agent, ingest, seq) for seq in range(1, 4)]
    size = len(batches[0][1])
    sp = open_spool(tmp_path, agent, limit=size * 2)
    sp.put(*batches[0])
    e1 = sp.claim_oldest()
    assert sp.take_fresh(e1) == batches[0][1]
    assert sp.take_fresh(e1) is None, "taken once"
    with open(e1.path, "r+b") as f:  # a retry reads the file, and a damaged file is caught there
        f.seek(40)
        f.write(b"\xff\xff")
    assert sp.read(e1) is None and sp.corrupt == 1
    sp.put(*batches[1])
    sp.put(*batches[2])  # the limit holds two; 1 is gone already
    e2 = sp.claim_oldest()
    sp.put(*make_batch(agent, ingest, 4))  # evicts 2 while it is claimed
    assert sp.take_fresh(e2) is None, "evicted meanwhile: read() decides its fate"
    many = open_spool(tmp_path / "many", agent)
    for seq in range(10, 10 + spool_mod.FRESH_MAX_BATCHES + 5):
        many.put(*make_batch(agent, ingest, seq))
    held = [seq for seq in many.seqs() if many.take_fresh(many.claim_oldest()) is not None]
    assert len(held) == spool_mod.FRESH_MAX_BATCHES and held[-1] == 10 + spool_mod.FRESH_MAX_BATCHES + 4


def test_batch_bigger_than_the_limit_is_dropped_and_counted(tmp_path, agent, ingest) -> None:
    sp = open_spool(tmp_path, agent, limit=100)
    h, b = make_batch(agent, ingest, 1)
    assert sp.put(h, b) == [1]
    assert sp.dropped_batches == 1 and len(sp) == 0


def test_unwritable_spool_raises_and_keeps_the_index_unchanged(tmp_path, agent, ingest) -> None:
    if os.geteuid() == 0:
        # root ignores directory permissions: make the target name a directory instead
        sp = open_spool(tmp_path, agent)
        h, b = make_batch(agent, ingest, 3)
        os.mkdir(tmp_path / f"{3:020d}.hmb")
    else:
        sp = open_spool(tmp_path, agent)
        h, b = make_batch(agent, ingest, 3)
        os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(SpoolError):
            sp.put(h, b)
    finally:
        os.chmod(tmp_path, 0o700)
    assert len(sp) == 0 and sp.bytes == 0 and sp.write_errors == 1


WRITER = textwrap.dedent(
    """
    import sys
    from hostmond.core import keys, wire
    from hostmond.agent.shipping.spool import Spool
    agent = keys.parse_private_key(sys.argv[2]); ingest = keys.generate("x25519")
    sp = Spool(sys.argv[1], 1 << 40, agent.public); sp.open()
    recs = [{"s": "m", "k": "gauge", "v": float(i), "l": {"tenant_id": "a", "i": str(i) * 50}, "t": 1.0} for i in range(20000)]
    seq = 0
    print("ready", flush=True)
    while True:
        h = wire.BatchHeader(1, "x25519", ingest.key_id, agent.key_id, ("a",), seq, 1.0, len(recs), 0)
        sp.put(h, wire.seal(h, recs, agent, ingest.public)); seq += 1
    """
)


def test_sigkill_during_writes_never_leaves_a_partial_batch_in_the_spool(tmp_path, agent) -> None:
    for round_ in range(3):
        d = tmp_path / f"r{round_}"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(d), agent.text()], stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.3 + 0.17 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        # renamed batches only: the interrupted write's temporary file ends in .hmb too
        before = [n for n in os.listdir(d) if n.endswith(".hmb") and not n.startswith(".tmp-")]
        sp = open_spool(d, agent)
        assert sp.seqs() == list(range(len(before)))  # every renamed file is a whole, verified batch
        assert sp.corrupt <= 1  # at most the one temporary file of the interrupted write
        assert not [n for n in os.listdir(d) if n.startswith(".tmp-")]


def test_sequence_numbers_never_repeat_across_restarts_and_crashes(tmp_path) -> None:
    path = str(tmp_path / "seq.json")
    s = SeqStore(path, block=4)
    s.open("agent-a")
    first = [s.next() for _ in range(6)]
    assert first == list(range(first[0], first[0] + 6))
    assert first[0] >= int(time.time() * 1000) - 60_000  # starts at the clock, not 0
    # "crash": a new store without a clean shutdown
    s2 = SeqStore(path, block=4)
    s2.open("agent-a")
    second = [s2.next() for _ in range(3)]
    assert min(second) > max(first)
    # the floor from the spool is honoured even when the file is gone
    os.unlink(path)
    s3 = SeqStore(path)
    s3.open("agent-a", floor=max(second) + 1000)
    assert s3.next() == max(second) + 1000


def test_each_store_has_its_own_instance_id_kept_across_restarts(tmp_path) -> None:
    a = SeqStore(str(tmp_path / "a.json"))
    a.open("agent-a")
    a.next()
    b = SeqStore(str(tmp_path / "b.json"))
    b.open("agent-a")
    b.next()
    assert re.fullmatch(r"[0-9a-f]{16}", a.instance) and a.instance != b.instance
    again = SeqStore(str(tmp_path / "a.json"))
    again.open("agent-a")
    assert again.instance == a.instance  # a restart keeps its stream
    other = SeqStore(str(tmp_path / "a.json"))
    other.open("agent-b")
    assert other.instance != a.instance  # a new identity starts a new one
