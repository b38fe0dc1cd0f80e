"""The ingest's audit trail: an append-only, hash-chained log with signed checkpoints.

Layout (``audit.directory``, by default ``audit/`` beside the SQLite database)::

    audit-00000001.jsonl    segments: one JSON record per line, appended, never rewritten
    audit-00000002.jsonl    (a new segment starts when the current one passes segment_max_bytes)
    head.json               the latest signed checkpoint (seq, hash), replaced atomically
    audit.key / .pub        Ed25519 signing key (chmod 600) and its public key for verifiers

A record is canonical JSON (sorted keys, no spaces)::

    {"data": {...}, "hash": H, "prev": P, "seq": N, "t": UNIX_TIME, "type": T, "v": 1}

``hash`` is the SHA-256 (hex) of the canonical JSON of the record without
``hash``; ``prev`` is the ``hash`` of the record before it (64 zeros for the
very first). So editing, deleting, inserting or reordering any record breaks the
chain at that point. A ``checkpoint`` record signs ``(seq, hash)`` of the record
before it with the ingest's Ed25519 audit key, every
``checkpoint_interval_seconds`` (and at rotation and shutdown): rewriting the
chain after the fact needs that key. ``head.json`` carries the latest checkpoint
outside the log, so cutting records off the end (truncation) is detected too.

Record types: ``audit_opened``, ``segment_start`` (first record of a segment,
with the enrolment state), ``checkpoint``, ``batch_accepted``, ``batch_rejected``,
``batch_rejected_suppressed`` (rejections over the per-reason rate, counted),
``agent_enrolled``, ``agent_removed``, ``agent_tenants_changed``,
``ingest_key_added``, ``ingest_key_removed`` (the config compared with the state
the log last recorded, at every start), ``retention_deleted`` (the database's
retention) and ``audit_retention`` (whole audit segments deleted by the audit
log's own retention, which is off by default: each deletion is a record naming
the segment and its last hash, so the chain stays verifiable from the oldest
segment kept).

:func:`verify` checks all of it and names the first bad record.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from hostmond.core import keys as keymod
from hostmond.core import selfmetrics
from hostmond.core.model import COUNTER, GAUGE, MetricSpec

VERSION = 1
GENESIS = "0" * 64
SIG_CONTEXT = b"hostmon-audit-checkpoint-v1\x00"
SEGMENT_RE = re.compile(r"^audit-(\d{8})\.jsonl$")
HEAD = "head.json"
RECORD_TYPES = (
    "audit_opened",
    "segment_start",
    "checkpoint",
    "batch_accepted",
    "batch_rejected",
    "batch_rejected_suppressed",
    "agent_enrolled",
    "agent_removed",
    "agent_tenants_changed",
    "ingest_key_added",
    "ingest_key_removed",
    "retention_deleted",
    "audit_retention",
    "torn_tail_discarded",
)


AUDIT_SPECS = selfmetrics.declare(
    "ingest.audit",
    MetricSpec("hostmon_ingest_audit_last_seq", GAUGE, "Sequence number of the last audit record written (an outside witness: the log must never end below it)."),
    MetricSpec("hostmon_ingest_audit_records_total", COUNTER, "Audit records written by this process."),
    MetricSpec(
        "hostmon_ingest_audit_rejected_suppressed_total",
        COUNTER,
        "Refused batches not recorded one by one (over audit.rejected_records_per_minute; counted in summary records).",
    ),
)


class AuditError(Exception):
    """The audit log cannot be used (unreadable directory, broken last segment)."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def record_hash(rec: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in rec.items() if k != "hash"})).hexdigest()


def signed_message(seq: int, head_hash: str) -> bytes:
    return SIG_CONTEXT + str(seq).encode() + b"\x00" + head_hash.encode()


def key_id(public_raw: bytes) -> str:
    """The key id of an Ed25519 public key, as agent/shipping/keys.py computes it."""
    return keymod.key_id_of(keymod.ED25519, public_raw)


def segment_name(n: int) -> str:
    return f"audit-{n:08d}.jsonl"


def list_segments(directory: str) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = [(int(m.group(1)), os.path.join(directory, n)) for n in names if (m := SEGMENT_RE.match(n))]
    return sorted(out)


def _fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass
class _State:
    agents: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # id -> {name, tenants}
    keys: dict[str, str] = dataclasses.field(default_factory=dict)  # ingest key id -> algorithm

    def apply(self, rtype: str, data: Mapping[str, Any]) -> None:
        if rtype == "segment_start":
            st = data.get("state", {})
            self.agents = {k: dict(v) for k, v in st.get("agents", {}).items()}
            self.keys = dict(st.get("keys", {}))
        elif rtype == "agent_enrolled":
            self.agents[data["agent"]] = {"name": data["name"], "tenants": list(data["tenants"])}
        elif rtype == "agent_removed":
            self.agents.pop(data["agent"], None)
        elif rtype == "agent_tenants_changed":
            if data["agent"] in self.agents:
                self.agents[data["agent"]]["tenants"] = list(data["new"])
        elif rtype == "ingest_key_added":
            self.keys[data["key_id"]] = data["alg"]
        elif rtype == "ingest_key_removed":
            self.keys.pop(data["key_id"], None)

    def to_json(self) -> dict[str, Any]:
        return {"agents": self.agents, "keys": self.keys}


class AuditLog:
    """Writer of the audit log. Thread-safe; every method that appends writes (and fsyncs) before it returns."""

    def __init__(
        self,
        directory: str,
        signing_key: ed25519.Ed25519PrivateKey,
        *,
        checkpoint_interval: float = 300.0,
        segment_max_bytes: int = 64 * 1024 * 1024,
        retention_seconds: float = 0.0,
        fsync: bool = True,
        rejected_per_minute: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._key = signing_key
        self.public_raw = signing_key.public_key().public_bytes_raw()
        self.key_id = key_id(self.public_raw)
        self.checkpoint_interval = checkpoint_interval
        self.segment_max_bytes = segment_max_bytes
        self.retention_seconds = retention_seconds
        self.fsync = fsync
        self.rejected_per_minute = rejected_per_minute
        self.clock = clock
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self.seq = 0
        self.head = GENESIS
        self._last_type = ""
        self._last_checkpoint = 0.0
        self.state = _State()
        self._rejected: dict[str, tuple[float, int, int]] = {}  # reason -> (window start, recorded, suppressed)
        self.records_written = 0
        self.rejected_suppressed = 0
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()

    # -- opening ---------------------------------------------------------------
    def open(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with self._lock:
            segs = list_segments(self.directory)
            if segs:
                self._resume(*segs[-1])
            else:
                self._start_segment(1)
            self._append("audit_opened", {"key_id": self.key_id, "version": VERSION})
            self._last_checkpoint = self.clock()
        if self.checkpoint_interval > 0:
            self._stop.clear()
            self._timer = threading.Thread(target=self._timer_loop, name="audit-checkpoint", daemon=True)
            self._timer.start()

    def _resume(self, n: int, path: str) -> None:
        """Continue the last segment: restore seq, head hash and state from its records."""
        with open(path, "rb") as f:
            data = f.read()
        torn = b""
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            data, torn = data[:cut], data[cut:]
        state = _State()
        last: dict[str, Any] | None = None
        for i, line in enumerate(data.splitlines(), 1):
            try:
                rec = json.loads(line)
            except ValueError:
                raise AuditError(f"{path}:{i}: not a JSON record; run `hostmon ingest audit verify` and move the segment aside") from None
            state.apply(rec.get("type", ""), rec.get("data", {}))
            last = rec
        if last is None:
            raise AuditError(f"{path}: empty segment (no segment_start record)")
        self.state = state
        self.seq = int(last["seq"])
        self.head = str(last["hash"])
        self._last_type = str(last["type"])
        self._segment = n
        if torn:
            # A crash mid-write left a partial line: cut it off, and say so in the log itself.
            with open(path, "r+b") as f:
                f.truncate(len(data))
                f.flush()
                os.fsync(f.fileno())
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size
        if torn:
            self._append("torn_tail_discarded", {"bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest()})

    def _start_segment(self, n: int) -> None:
        path = os.path.join(self.directory, segment_name(n))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._segment, self._size = fd, n, 0
        _fsync_dir(self.directory)
        self._append("segment_start", {"segment": n, "state": self.state.to_json()})

    # -- appending -------------------------------------------------------------
    def _append(self, rtype: str, data: Mapping[str, Any]) -> dict[str, Any]:
        assert self._fd is not None, "audit log not open"
        rec: dict[str, Any] = {"v": VERSION, "seq": self.seq + 1, "t": round(self.clock(), 6), "type": rtype, "data": dict(data), "prev": self.head}
        rec["hash"] = record_hash(rec)
        line = canonical(rec) + b"\n"
        view = memoryview(line)
        try:
            while view:  # os.write may write less than asked
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            # disk full mid-line: cut the segment back to the last whole record, so the chain never
            # holds a torn line; the caller sees the error (the ingest counts it as a storage failure)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self.seq, self.head, self._last_type = rec["seq"], rec["hash"], rtype
        self._size += len(line)
        self.records_written += 1
        self.state.apply(rtype, data)
        return rec

    def append(self, rtype: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record (type from RECORD_TYPES); checkpoint and rotate when due."""
        if rtype not in RECORD_TYPES:
            raise ValueError(f"unknown audit record type {rtype!r}")
        with self._lock:
            rec = self._append(rtype, data)
            if self.checkpoint_interval > 0 and self.clock() - self._last_checkpoint >= self.checkpoint_interval:
                self._checkpoint()
            if self._size >= self.segment_max_bytes:
                self._checkpoint()
                self._start_segment(self._segment + 1)
                self._checkpoint()
            return rec

    def _checkpoint(self) -> None:
        self._last_checkpoint = self.clock()
        if self._last_type == "checkpoint":
            return
        seq, head = self.seq, self.head
        sig = self._key.sign(signed_message(seq, head))
        data = {"upto_seq": seq, "upto_hash": head, "key_id": self.key_id, "sig": base64.b64encode(sig).decode()}
        self._append("checkpoint", data)
        self._write_head(dict(data, segment=self._segment))

    def _write_head(self, data: dict[str, Any]) -> None:
        path = os.path.join(self.directory, HEAD)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, canonical(data) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)

    def checkpoint(self) -> None:
        """Sign the chain head now (nothing is written when the last record already is a checkpoint)."""
        with self._lock:
            if self._fd is not None:
                self._checkpoint()

    def _timer_loop(self) -> None:
        step = min(1.0, self.checkpoint_interval)
        while not self._stop.wait(step):
            with self._lock:
                if self._fd is not None and self.clock() - self._last_checkpoint >= self.checkpoint_interval:
                    self._checkpoint()

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join(timeout=5)
            self._timer = None
        with self._lock:
            if self._fd is None:
                return
            self._checkpoint()
            os.close(self._fd)
            self._fd = None

    # -- what the ingest records -----------------------------------------------
    def batch_accepted(self, agent: str, instance: str, seq: int, content_hash: bytes, samples: int, events: int, tenants: list[str]) -> None:
        self.append("batch_accepted", {
            "agent": agent, "instance": instance, "seq": seq, "content_sha256": content_hash.hex(),
            "samples": samples, "events": events, "tenants": sorted(set(tenants)),
        })

    def batch_rejected(self, reason: str, status: int, detail: str = "") -> bool:
        """Record a refused batch; at most ``rejected_per_minute`` per reason, the rest counted
        in one ``batch_rejected_suppressed`` record when the minute is over. True when recorded."""
        with self._lock:
            now = self.clock()
            start, recorded, suppressed = self._rejected.get(reason, (now, 0, 0))
            if now - start >= 60:
                if suppressed:
                    self.append("batch_rejected_suppressed", {"reason": reason, "count": suppressed, "since": round(start, 3)})
                start, recorded, suppressed = now, 0, 0
            if recorded >= self.rejected_per_minute:
                self._rejected[reason] = (start, recorded, suppressed + 1)
                self.rejected_suppressed += 1
                return False
            self._rejected[reason] = (start, recorded + 1, suppressed)
            self.append("batch_rejected", {"reason": reason, "status": status, "detail": detail[:200]})
            return True

    def sync_config(self, agents: Mapping[str, tuple[str, list[str]]], ingest_keys: Mapping[str, str]) -> int:
        """Compare the running config (agent id -> (name, tenants); key id -> algorithm) with the
        state the log recorded last; append one record per difference. Returns how many."""
        n = 0
        with self._lock:
            known = self.state.agents
            for aid in sorted(set(known) - set(agents)):
                self.append("agent_removed", {"agent": aid, "name": known[aid]["name"]})
                n += 1
            for aid in sorted(agents):
                name, tenants = agents[aid][0], sorted(agents[aid][1])
                if aid not in known:
                    self.append("agent_enrolled", {"agent": aid, "name": name, "tenants": tenants})
                    n += 1
                elif sorted(known[aid]["tenants"]) != tenants:
                    self.append("agent_tenants_changed", {"agent": aid, "name": name, "old": sorted(known[aid]["tenants"]), "new": tenants})
                    n += 1
            keys = self.state.keys
            for kid in sorted(set(keys) - set(ingest_keys)):
                self.append("ingest_key_removed", {"key_id": kid, "alg": keys[kid]})
                n += 1
            for kid in sorted(set(ingest_keys) - set(keys)):
                self.append("ingest_key_added", {"key_id": kid, "alg": ingest_keys[kid]})
                n += 1
        return n

    def retention_deleted(self, samples: int, events: int, batches: int) -> None:
        self.append("retention_deleted", {"samples": samples, "events": events, "batches": batches})

    def apply_retention(self) -> list[int]:
        """The audit log's own retention: delete closed segments whose last record is older than
        retention_seconds (0: never). Each deletion is recorded first. Returns the deleted numbers."""
        if self.retention_seconds <= 0:
            return []
        deleted: list[int] = []
        with self._lock:
            cutoff = self.clock() - self.retention_seconds
            for n, path in list_segments(self.directory):
                if n >= self._segment:
                    break
                last = _last_record(path)
                if last is None or float(last["t"]) >= cutoff:
                    break
                first = _first_record(path)
                self.append("audit_retention", {
                    "segment": n, "first_seq": first["seq"] if first else None, "last_seq": last["seq"],
                    "last_hash": last["hash"], "last_time": last["t"],
                })
                os.unlink(path)
                deleted.append(n)
            if deleted:
                _fsync_dir(self.directory)
                self._checkpoint()
        return deleted


def _first_record(path: str) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        line = f.readline()
    return json.loads(line) if line.strip() else None


def _last_record(path: str) -> dict[str, Any] | None:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        lines = [x for x in f.read().splitlines() if x.strip()]
    return json.loads(lines[-1]) if lines else None


# -- reading and verifying -------------------------------------------------------------
@dataclasses.dataclass
class BadRecord:
    file: str
    line: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}" + (f" (seq {self.seq})" if self.seq is not None else "") + f": {self.reason}"


@dataclasses.dataclass
class VerifyResult:
    records: int = 0
    checkpoints: int = 0
    segments: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_checkpoint_seq: int | None = None
    unsigned_tail: int = 0
    bad: BadRecord | None = None

    @property
    def ok(self) -> bool:
        return self.bad is None


def iter_records(directory: str) -> Iterator[tuple[str, int, bytes]]:
    """(segment path, line number, raw line) of every record, oldest first."""
    for _, path in list_segments(directory):
        with open(path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for i, line in enumerate(lines, 1):
            yield path, i, line


def verify(directory: str, public_keys: list[bytes]) -> VerifyResult:
    """Check the chain, every checkpoint signature (against ``public_keys`` only: a key named in the
    log is never trusted) and head.json; name the first bad record."""
    res = VerifyResult()
    trusted = {key_id(k): ed25519.Ed25519PublicKey.from_public_bytes(k) for k in public_keys}
    segs = list_segments(directory)
    res.segments = len(segs)
    if not segs:
        res.bad = BadRecord(directory, 0, None, "no audit segments here")
        return res
    nums = [n for n, _ in segs]
    for a, b in itertools.pairwise(nums):
        if b != a + 1:
            res.bad = BadRecord(os.path.join(directory, segment_name(a + 1)), 0, None, "segment missing (deleted without an audit_retention record)")
            return res
    prev: str | None = None
    last_seq: int | None = None
    retained: dict[int, dict[str, Any]] = {}  # segment -> audit_retention data
    first_prev: tuple[str, int, int, str] | None = None  # (file, line, seq, prev) of the oldest kept record
    cur_seg = 0
    for path, line_no, raw in iter_records(directory):
        seg = int(SEGMENT_RE.match(os.path.basename(path)).group(1))  # type: ignore[union-attr]
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict):
                raise TypeError("not an object")
            seq, rtype, data = int(rec["seq"]), str(rec["type"]), rec["data"]
            rec_prev, rec_hash = str(rec["prev"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError) as e:
            res.bad = BadRecord(path, line_no, None, f"not a valid record ({e}): truncated or edited")
            return res
        if canonical(rec) != raw:
            res.bad = BadRecord(path, line_no, seq, "not in canonical form: edited")
            return res
        if record_hash(rec) != rec_hash:
            res.bad = BadRecord(path, line_no, seq, "hash does not match the record's content: edited")
            return res
        if prev is None:
            first_prev = (path, line_no, seq, rec_prev)
            res.first_seq = seq
            if seg == 1 and (seq != 1 or rec_prev != GENESIS):
                res.bad = BadRecord(path, line_no, seq, "the first segment does not start the chain (seq 1, prev 0...0): records deleted")
                return res
        else:
            if rec_prev != prev:
                res.bad = BadRecord(path, line_no, seq, "prev does not match the hash of the record before it: a record was deleted, inserted or reordered")
                return res
            if seq != (last_seq or 0) + 1:
                res.bad = BadRecord(path, line_no, seq, f"sequence jumps from {last_seq} to {seq}")
                return res
        if seg != cur_seg:
            if rtype != "segment_start" or data.get("segment") != seg:
                res.bad = BadRecord(path, line_no, seq, "a segment must start with its segment_start record")
                return res
            cur_seg = seg
        if rtype not in RECORD_TYPES:
            res.bad = BadRecord(path, line_no, seq, f"unknown record type {rtype!r}")
            return res
        if rtype == "checkpoint":
            pub = trusted.get(str(data.get("key_id")))
            if pub is None:
                res.bad = BadRecord(path, line_no, seq, f"checkpoint signed by key {data.get('key_id')!r}, which is not a trusted audit key")
                return res
            if data.get("upto_seq") != seq - 1 or data.get("upto_hash") != rec_prev:
                res.bad = BadRecord(path, line_no, seq, "checkpoint does not cover the record before it")
                return res
            try:
                pub.verify(base64.b64decode(str(data.get("sig")), validate=True), signed_message(seq - 1, rec_prev))
            except (InvalidSignature, ValueError):
                res.bad = BadRecord(path, line_no, seq, "checkpoint signature is invalid: the chain was rewritten")
                return res
            res.checkpoints += 1
            res.last_checkpoint_seq = seq
        if rtype == "audit_retention":
            retained[int(data["segment"])] = data
        prev, last_seq = rec_hash, seq
        res.records += 1
    res.last_seq = last_seq
    # the oldest kept segment must follow a segment whose deletion was recorded, with its last hash
    if first_prev is not None and nums[0] > 1:
        gone = retained.get(nums[0] - 1)
        path, line_no, seq, p = first_prev
        if gone is None:
            res.bad = BadRecord(path, line_no, seq, f"segment {nums[0] - 1} and older are missing without an audit_retention record")
            return res
        if gone.get("last_hash") != p or gone.get("last_seq") != seq - 1:
            res.bad = BadRecord(path, line_no, seq, f"does not follow the last record of deleted segment {nums[0] - 1} as recorded")
            return res
    res.unsigned_tail = (last_seq or 0) - (res.last_checkpoint_seq or 0)
    # head.json: the latest checkpoint, kept outside the log: records cut off the end show here
    head_path = os.path.join(directory, HEAD)
    try:
        with open(head_path, "rb") as f:
            head = json.loads(f.read())
        hseq, hhash = int(head["upto_seq"]), str(head["upto_hash"])
        pub = trusted.get(str(head.get("key_id")))
        if pub is None:
            raise ValueError(f"signed by key {head.get('key_id')!r}, not a trusted audit key")
        pub.verify(base64.b64decode(str(head["sig"]), validate=True), signed_message(hseq, hhash))
    except FileNotFoundError:
        return res  # no checkpoint written yet
    except (ValueError, KeyError, TypeError, InvalidSignature) as e:
        res.bad = BadRecord(head_path, 0, None, f"head is not a valid signed checkpoint ({e or 'bad signature'})")
        return res
    if last_seq is None or hseq + 1 > last_seq:
        res.bad = BadRecord(head_path, 0, hseq, f"the log ends at seq {last_seq} but the signed head covers seq {hseq} and its checkpoint: records were cut off the end")
        return res
    if not _has_record(directory, hseq, hhash):
        res.bad = BadRecord(head_path, 0, hseq, "the signed head's record is not in the log: the chain was replaced")
    return res


def _has_record(directory: str, seq: int, h: str) -> bool:
    for _, _, raw in iter_records(directory):
        rec = json.loads(raw)
        if rec["seq"] == seq:
            return bool(rec["hash"] == h)
    return False


def read_records(directory: str) -> Iterator[dict[str, Any]]:
    for _, _, raw in iter_records(directory):
        try:
            yield json.loads(raw)
        except ValueError:
            yield {"type": "unreadable", "raw": raw[:200].decode("utf-8", "replace")}


# -- wiring with the ingest's config ---------------------------------------------------------
def paths(cfg: Any) -> tuple[str, str]:
    """(audit directory, signing key file) of an IngestConfig: defaults beside the database."""
    a = cfg.audit
    directory = a.directory or os.path.join(os.path.dirname(os.path.abspath(cfg.sqlite.path)), "audit")
    return directory, a.signing_key or os.path.join(directory, "audit.key")


def load_signing_key(path: str, create: bool = True) -> ed25519.Ed25519PrivateKey:
    """Load the Ed25519 audit key (refused when group/others can read it), creating it with its .pub if missing."""
    d, base = os.path.split(path)
    name = base.removesuffix(".key")
    if create and not os.path.lexists(path):
        os.makedirs(d or ".", mode=0o700, exist_ok=True)
        if base.endswith(".key"):
            keymod.ensure_keypair(d, name, keymod.ED25519)
        else:
            raise AuditError(f"{path}: audit signing key missing (a file named *.key is created on first start)")
    k = keymod.load_private_key(path, (keymod.ED25519,))
    return ed25519.Ed25519PrivateKey.from_private_bytes(k.raw)


def load_public_keys(paths_: list[str]) -> list[bytes]:
    """Raw Ed25519 public keys from .pub files (or .key files: their public half)."""
    out = []
    for p in paths_:
        with open(p, encoding="utf-8") as f:
            text = f.read()
        if "-private " in text.split("\n", 1)[0]:
            out.append(keymod.parse_private_key(text, (keymod.ED25519,)).public.raw)
        else:
            out.append(keymod.parse_public_key(text, (keymod.ED25519,)).raw)
    return out


def from_config(cfg: Any) -> AuditLog | None:
    """The AuditLog of an IngestConfig (not opened), or None when audit.enabled is false."""
    if not cfg.audit.enabled:
        return None
    directory, key_path = paths(cfg)
    a = cfg.audit
    return AuditLog(
        directory,
        load_signing_key(key_path),
        checkpoint_interval=a.checkpoint_interval_seconds,
        segment_max_bytes=a.segment_max_bytes,
        retention_seconds=a.retention_seconds,
        fsync=a.fsync,
        rejected_per_minute=a.rejected_records_per_minute,
    )


def config_state(keys: Any) -> tuple[dict[str, tuple[str, list[str]]], dict[str, str]]:
    """(agent id -> (name, tenants), ingest key id -> algorithm) of LoadedKeys, for sync_config."""
    agents = {aid: (e.name, sorted(e.tenants)) for aid, e in keys.agents.items()}
    return agents, {kid: k.alg for kid, k in keys.private.items()}


class AuditMetrics:
    """prometheus_client collector: where the chain stands (an outside witness of truncation)."""

    def __init__(self, log_: AuditLog) -> None:
        self.log = log_

    def describe(self) -> list[object]:
        return []

    def collect(self) -> Iterator[object]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        def h(name: str) -> str:
            return selfmetrics.spec(name).help

        yield GaugeMetricFamily("hostmon_ingest_audit_last_seq", h("hostmon_ingest_audit_last_seq"), value=self.log.seq)
        yield CounterMetricFamily("hostmon_ingest_audit_records", h("hostmon_ingest_audit_records_total"), value=self.log.records_written)
        yield CounterMetricFamily(
            "hostmon_ingest_audit_rejected_suppressed",
            h("hostmon_ingest_audit_rejected_suppressed_total"),
            value=self.log.rejected_suppressed,
        )
