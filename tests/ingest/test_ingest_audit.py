"""The ingest's audit trail: chain, signed checkpoints, head; every kind of tampering is named; and a real
ingest process records accepted and refused batches, enrolment and key changes, and verifies from the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hostmond.ingest import audit
from hostmond.ingest.audit import AuditLog, canonical, record_hash, signed_message, verify
from ingest_helpers import REPO, IngestProcess, make_keys, sample_records, seal, write_config

from hostmond.core import keys as keymod
from hostmond.core import wire


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_log(d: Path, key: ed25519.Ed25519PrivateKey, clock: Clock, **kw) -> AuditLog:
    kw.setdefault("checkpoint_interval", 100.0)
    log = AuditLog(str(d), key, clock=clock, fsync=False, **kw)
    return log


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def filled(tmp_path: Path, key):
    """An audit log with 3 checkpoints and some of every ordinary record, closed cleanly."""
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock)
    log.open()
    log.sync_config({"a1": ("web-01", ["acme"])}, {"k1": "x25519"})
    for i in range(30):
        clock.t += 10  # a checkpoint every 100 s
        log.batch_accepted("a1", "i1", i + 1, hashlib.sha256(b"%d" % i).digest(), 10, 1, ["acme"])
        if i % 7 == 0:
            log.batch_rejected("bad_signature", 401, "signature does not verify")
    log.close()
    pub = key.public_key().public_bytes_raw()
    return d, pub


def lines_of(d: Path) -> tuple[Path, list[bytes]]:
    (seg,) = sorted(d.glob("audit-*.jsonl"))
    return seg, seg.read_bytes().splitlines(keepends=True)


def rewrite(seg: Path, lines: list[bytes]) -> None:
    seg.write_bytes(b"".join(lines))


def rechain(lines: list[bytes], start: int, signer: ed25519.Ed25519PrivateKey | None = None) -> list[bytes]:
    """What a forger does: recompute prev/hash from line ``start`` on (re-signing checkpoints with ``signer``)."""
    recs = [json.loads(x) for x in lines]
    for i in range(start, len(recs)):
        r = recs[i]
        r["prev"] = recs[i - 1]["hash"] if i else audit.GENESIS
        r["seq"] = recs[i - 1]["seq"] + 1 if i else 1
        if r["type"] == "checkpoint":
            r["data"]["upto_seq"], r["data"]["upto_hash"] = r["seq"] - 1, r["prev"]
            if signer is not None:
                import base64

                r["data"]["key_id"] = audit.key_id(signer.public_key().public_bytes_raw())
                r["data"]["sig"] = base64.b64encode(signer.sign(signed_message(r["seq"] - 1, r["prev"]))).decode()
        r["hash"] = record_hash(r)
    return [canonical(r) + b"\n" for r in recs]


def test_a_clean_log_verifies_with_checkpoints_at_the_interval_and_at_close(filled):
    d, pub = filled
    res = verify(str(d), [pub])
    assert res.ok, res.bad
    types = [r["type"] for r in audit.read_records(str(d))]
    assert types[:4] == ["segment_start", "audit_opened", "agent_enrolled", "ingest_key_added"]
    assert types.count("batch_accepted") == 30 and types.count("batch_rejected") == 5
    assert res.checkpoints == types.count("checkpoint") >= 3 and types[-1] == "checkpoint"
    assert res.unsigned_tail == 0 and res.last_seq == len(types)
    head = json.loads((d / "head.json").read_text())
    assert head["upto_seq"] == res.last_seq - 1
    assert oct(os.stat(d / "audit-00000001.jsonl").st_mode & 0o777) == "0o600"


def test_edited_record_is_named(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    rec = json.loads(lines[10])
    rec["data"]["samples"] = 99999
    lines[10] = canonical(rec) + b"\n"
    rewrite(seg, lines)
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == 11 and "edited" in res.bad.reason and res.records == 10


def test_edited_record_with_its_hash_recomputed_breaks_the_next_link(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    rec = json.loads(lines[10])
    rec["data"]["tenants"] = ["evil"]
    rec["hash"] = record_hash(rec)
    lines[10] = canonical(rec) + b"\n"
    rewrite(seg, lines)
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == 12 and "prev does not match" in res.bad.reason


def test_rechained_forgery_fails_at_the_first_checkpoint_after_it(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    rec = json.loads(lines[10])
    rec["data"]["agent"] = "someone-else"
    lines[10] = canonical(rec) + b"\n"
    forged = rechain(lines, 10)
    rewrite(seg, forged)
    res = verify(str(d), [pub])
    first_cp = next(i for i, x in enumerate(forged) if i > 10 and json.loads(x)["type"] == "checkpoint")
    assert res.bad is not None and res.bad.line == first_cp + 1 and "signature is invalid" in res.bad.reason


def test_checkpoint_rewritten_with_another_key_is_not_trusted(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    forged = rechain(lines, 5, signer=ed25519.Ed25519PrivateKey.generate())
    rewrite(seg, forged)
    res = verify(str(d), [pub])
    assert res.bad is not None and "not a trusted audit key" in res.bad.reason


def test_checkpoint_signature_bytes_rewritten_is_named(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    i = next(i for i, x in enumerate(lines) if json.loads(x)["type"] == "checkpoint")
    rec = json.loads(lines[i])
    rec["data"]["sig"] = rec["data"]["sig"][::-1]
    rec["hash"] = record_hash(rec)
    lines[i] = canonical(rec) + b"\n"
    rewrite(seg, rechain(lines, i + 1))
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == i + 1 and "checkpoint signature is invalid" in res.bad.reason


def test_deleted_record_is_named(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    del lines[7]
    rewrite(seg, lines)
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == 8 and "deleted, inserted or reordered" in res.bad.reason


def test_reordered_records_are_named(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    lines[5], lines[6] = lines[6], lines[5]
    rewrite(seg, lines)
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == 6 and "reordered" in res.bad.reason


def test_truncated_records_are_detected_by_the_signed_head(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    rewrite(seg, lines[:-6])  # the last checkpoint and some records before it: the rest still chains
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.file.endswith("head.json") and "cut off the end" in res.bad.reason


def test_truncated_mid_line_is_named(filled):
    d, pub = filled
    seg, lines = lines_of(d)
    rewrite(seg, [*lines[:-1], lines[-1][:40]])
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == len(lines) and "truncated or edited" in res.bad.reason


def test_head_rewritten_or_removed_first_record(filled, tmp_path):
    d, pub = filled
    head = json.loads((d / "head.json").read_text())
    head["upto_seq"] += 1
    (d / "head.json").write_text(json.dumps(head))
    res = verify(str(d), [pub])
    assert res.bad is not None and "head is not a valid signed checkpoint" in res.bad.reason
    seg, lines = lines_of(d)
    rewrite(seg, lines[1:])
    res = verify(str(d), [pub])
    assert res.bad is not None and res.bad.line == 1 and "records deleted" in res.bad.reason


def test_torn_last_line_is_cut_and_recorded_on_reopen(tmp_path, key):
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock)
    log.open()
    log.batch_rejected("bad_signature", 401)
    log.close()
    seg = d / "audit-00000001.jsonl"
    with open(seg, "ab") as f:
        f.write(b'{"data":{"half')  # a crash in the middle of a write
    log2 = make_log(d, key, clock)
    log2.open()
    log2.close()
    recs = list(audit.read_records(str(d)))
    torn = [r for r in recs if r["type"] == "torn_tail_discarded"]
    assert torn and torn[0]["data"]["bytes"] == len(b'{"data":{"half')
    assert verify(str(d), [key.public_key().public_bytes_raw()]).ok


def test_config_changes_between_starts_are_recorded(tmp_path, key):
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock)
    log.open()
    assert log.sync_config({"a1": ("web-01", ["acme"]), "a2": ("db-01", ["acme"])}, {"k1": "x25519"}) == 3
    log.close()
    log = make_log(d, key, clock)
    log.open()
    assert log.sync_config({"a1": ("web-01", ["acme"]), "a2": ("db-01", ["acme"])}, {"k1": "x25519"}) == 0  # nothing changed
    log.close()
    log = make_log(d, key, clock)
    log.open()
    n = log.sync_config({"a1": ("web-01", ["acme", "beta"]), "a3": ("new", ["beta"])}, {"k2": "mlkem768-x25519"})
    log.close()
    assert n == 5
    recs = [(r["type"], r["data"]) for r in audit.read_records(str(d))]
    assert ("agent_removed", {"agent": "a2", "name": "db-01"}) in recs
    assert ("agent_tenants_changed", {"agent": "a1", "name": "web-01", "old": ["acme"], "new": ["acme", "beta"]}) in recs
    assert ("agent_enrolled", {"agent": "a3", "name": "new", "tenants": ["beta"]}) in recs
    assert ("ingest_key_removed", {"key_id": "k1", "alg": "x25519"}) in recs
    assert ("ingest_key_added", {"key_id": "k2", "alg": "mlkem768-x25519"}) in recs
    assert verify(str(d), [key.public_key().public_bytes_raw()]).ok


def test_a_flood_of_refused_batches_is_recorded_at_a_bounded_rate_and_counted(tmp_path, key):
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock, rejected_per_minute=3)
    log.open()
    recorded = [log.batch_rejected("bad_envelope", 400, "garbage") for _ in range(1000)]
    assert recorded.count(True) == 3 and log.rejected_suppressed == 997
    clock.t += 61
    log.batch_rejected("bad_envelope", 400)
    log.close()
    recs = [r for r in audit.read_records(str(d)) if r["type"].startswith("batch_rejected")]
    assert [r["type"] for r in recs] == ["batch_rejected"] * 3 + ["batch_rejected_suppressed", "batch_rejected"]
    assert recs[3]["data"]["count"] == 997


def test_segments_rotate_and_the_audit_retention_is_recorded_and_verifiable(tmp_path, key):
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock, segment_max_bytes=4000, retention_seconds=3600)
    log.open()
    for i in range(60):
        clock.t += 120  # two hours in all
        log.batch_accepted("a1", "", i, b"\x00" * 32, 1, 0, ["acme"])
    segs = audit.list_segments(str(d))
    assert len(segs) >= 4
    pub = key.public_key().public_bytes_raw()
    assert verify(str(d), [pub]).ok
    deleted = log.apply_retention()  # segments whose last record is over an hour old
    log.close()
    assert deleted and deleted[0] == 1
    kept = audit.list_segments(str(d))
    assert kept[0][0] == deleted[-1] + 1
    res = verify(str(d), [pub])
    assert res.ok, res.bad
    assert [r["data"]["segment"] for r in audit.read_records(str(d)) if r["type"] == "audit_retention"] == deleted
    # a segment deleted behind the log's back is named
    os.unlink(kept[0][1])
    res = verify(str(d), [pub])
    assert res.bad is not None and "without an audit_retention record" in res.bad.reason


def test_a_segment_missing_in_the_middle_is_named(tmp_path, key):
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock, segment_max_bytes=3000)
    log.open()
    for i in range(40):
        log.batch_accepted("a1", "", i, b"\x00" * 32, 1, 0, ["acme"])
    log.close()
    segs = audit.list_segments(str(d))
    os.unlink(segs[1][1])
    res = verify(str(d), [key.public_key().public_bytes_raw()])
    assert res.bad is not None and "segment missing" in res.bad.reason


# -- a real ingest process ------------------------------------------------------------------
def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url + "/v1/batches", data=body, headers={"Content-Type": wire.CONTENT_TYPE}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hostmond.cli", "ingest", "audit", *args], capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


@pytest.mark.slow
def test_real_ingest_records_batches_enrolment_and_keys_and_the_cli_verifies(tmp_path):
    keys = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, keys, extra="decode_workers = 0")
    ing = IngestProcess(cfg)
    url = ing.start()
    try:
        env1 = seal(keys, 1, sample_records(5))
        assert post(url, env1) == 200
        assert post(url, env1) == 200  # duplicate: stored nothing, no record
        assert post(url, b"garbage") == 400
    finally:
        ing.stop()
    # the operator enrols the agent for one more tenant and rotates in a second ingest key
    keymod.generate_ingest_keypair(tmp_path / "keys", keymod.MLKEM768_X25519, name="ingest-new")
    cfg = write_config(tmp_path, keys, tenants=("acme", "beta"), extra="decode_workers = 0",
                       private_keys=[keys.ingest_key_path, str(tmp_path / "keys" / "ingest-new.key")])
    ing = IngestProcess(cfg)
    ing.start()
    ing.stop()

    audit_dir = tmp_path / "audit"
    assert (audit_dir / "audit.key").exists() and oct(os.stat(audit_dir / "audit.key").st_mode & 0o777) == "0o600"
    r = cli("verify", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: ") and "0 records after the last checkpoint" in r.stdout
    r = cli("show", "--config", str(cfg), "--format", "json")
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    by_type: dict[str, list[dict]] = {}
    for x in recs:
        by_type.setdefault(x["type"], []).append(x["data"])
    (acc,) = by_type["batch_accepted"]
    assert acc == {"agent": keys.agent_id, "instance": "", "seq": 1, "content_sha256": hashlib.sha256(env1).hexdigest(),
                   "samples": 5, "events": 0, "tenants": ["acme"]}
    (rej,) = by_type["batch_rejected"]
    assert rej["status"] == 400 and rej["reason"]
    assert by_type["agent_enrolled"] == [{"agent": keys.agent_id, "name": keys.agent_id, "tenants": ["acme"]}]
    assert by_type["agent_tenants_changed"][0]["new"] == ["acme", "beta"]
    assert [k["alg"] for k in by_type["ingest_key_added"]] == ["x25519", "mlkem768-x25519"]
    assert len(by_type["audit_opened"]) == 2
    r = cli("show", "--config", str(cfg), "--type", "batch_rejected")
    assert "batch_rejected" in r.stdout and "status=400" in r.stdout

    # an edit is named by the CLI, with exit status 1
    seg = audit_dir / "audit-00000001.jsonl"
    lines = seg.read_bytes().splitlines(keepends=True)
    i = next(i for i, x in enumerate(lines) if b'"batch_accepted"' in x)
    lines[i] = lines[i].replace(b'"samples":5', b'"samples":4')
    seg.write_bytes(b"".join(lines))
    r = cli("verify", "--config", str(cfg))
    assert r.returncode == 1
    assert f"audit-00000001.jsonl:{i + 1}" in r.stdout and "edited" in r.stdout
    # a key named in the log is never trusted: verifying needs the public key from outside
    r = cli("verify", "--dir", str(audit_dir))
    assert r.returncode == 2 and "--public-key" in r.stderr


def test_check_config_refuses_an_audit_key_others_can_read(tmp_path):
    keys = make_keys(tmp_path / "keys")
    cfg = write_config(tmp_path, keys)
    (tmp_path / "audit").mkdir()
    key = tmp_path / "audit" / "audit.key"
    k = ed25519.Ed25519PrivateKey.generate()
    key.write_text(keymod.private_from_raw(keymod.ED25519, k.private_bytes_raw()).text())
    os.chmod(key, 0o644)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hostmond.cli", "ingest", "check-config", str(cfg)],
                              capture_output=True, text=True, timeout=60, cwd=REPO, check=False)

    r = check()
    assert r.returncode != 0 and f"chmod 600 {key}" in r.stderr
    os.chmod(key, 0o600)
    r = check()
    assert r.returncode == 0 and f"audit trail in {tmp_path / 'audit'}" in r.stdout


def test_a_write_that_fails_half_way_leaves_no_torn_line_in_the_chain(tmp_path: Path, key, monkeypatch) -> None:
    """A disk that fills mid-record: the error reaches the caller, the half line is cut away, and the
    log still verifies and goes on once writes succeed again."""
    clock = Clock()
    d = tmp_path / "audit"
    log = make_log(d, key, clock)
    log.open()
    log.batch_accepted("a1", "i1", 1, hashlib.sha256(b"1").digest(), 10, 1, ["acme"])
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd: int, data) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))  # a short write...
        raise OSError(28, "No space left on device")  # ...and the rest does not fit

    monkeypatch.setattr(audit.os, "write", short_then_full)
    with pytest.raises(OSError):
        log.batch_accepted("a1", "i1", 2, hashlib.sha256(b"2").digest(), 10, 1, ["acme"])
    monkeypatch.setattr(audit.os, "write", real_write)
    _, lines = lines_of(d)
    assert all(line.endswith(b"}\n") for line in lines), "no half record left in the segment"
    log.batch_accepted("a1", "i1", 3, hashlib.sha256(b"3").digest(), 10, 1, ["acme"])
    log.close()
    res = verify(str(d), [key.public_key().public_bytes_raw()])
    assert res.ok, res.bad
    seqs = [r["data"].get("seq") for r in audit.read_records(str(d)) if r["type"] == "batch_accepted"]
    assert seqs == [1, 3]
