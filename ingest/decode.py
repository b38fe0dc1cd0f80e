"""Check and decode one batch envelope: the CPU-bound half of the ingest.

:class:`Decoder` runs every check that needs no database (structure,
enrollment, signature, tenants, key id, age, decryption, bounded
decompression, record types) and returns a :class:`Decoded` batch ready to be
stored, or raises :class:`Rejected` with a fixed reason. It holds no state
between calls, so it runs in a pool of worker *processes* (``decode_workers``:
the ingest then uses every core, free of the GIL) or in threads of the ingest
process (the embedded ingest). What crosses the process boundary is small: the
envelope in, a compressed block and a per-(tenant, name) summary out.

Nothing is decrypted before the envelope's signature checked out against the
enrolled key of the agent it names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import time
from typing import Any

import msgpack
import zstandard

from hostmond.core import keys as keymod
from hostmond.core import wire
from hostmond.core.errors import SealError

# SealError reason (or the ingest's own reason) -> HTTP status
STATUS: dict[str, int] = {
    "wrong_content_type": 415,
    "body_too_large": 413,
    "decompressed_too_large": 413,
    "too_many_records": 413,
    "busy": 503,
    "remote_write_unavailable": 503,
    "storage_unavailable": 503,
    "malformed_envelope": 400,
    "bad_magic": 400,
    "unsupported_version": 400,
    "bad_header": 400,
    "unknown_suite": 400,
    "unknown_key_id": 400,
    "wrong_key": 400,
    "created_in_future": 425,
    "decrypt_failed": 400,
    "bad_compression": 400,
    "bad_msgpack": 400,
    "bad_signature": 401,
    "unknown_agent": 401,
    "tenant_not_allowed": 403,
    "replay": 409,
    "too_old": 409,
    "bad_record": 422,
    "count_mismatch": 422,
    "bad_timestamp": 422,
    "label_collision": 422,
    "agent_series_limit": 422,
    "tenant_series_limit": 422,
    "body_timeout": 408,
}
# wire's too_large is the body limit: one reason per cause in the metrics
_RENAME = {"too_large": "body_too_large", "seal_failed": "bad_record"}

SAMPLE = "sample"
EVENT = "event"

# The instance id an agent sends (header "iid"): secrets.token_hex(8), docs/wire-format.md.
_IID = re.compile(r"[0-9a-f]{16}")
# Timestamps must be finite and fit remote write's int64 milliseconds.
MAX_ABS_TIMESTAMP = 9.2e15
# Prometheus label names; anything else is sanitised by remote write (ingest.remote_write).
_LABEL_OK = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Rejected(Exception):
    """A batch refused with ``reason`` (a fixed token) and its HTTP ``status``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = _RENAME.get(reason, reason)
        self.detail = detail
        self.status = STATUS.get(self.reason, 400)

    def __reduce__(self) -> tuple[Any, ...]:  # crosses the process pool intact
        return (Rejected, (self.reason, self.detail))


@dataclasses.dataclass(slots=True)
class IndexRow:
    tenant: str
    kind: str  # SAMPLE or EVENT
    name: str  # metric name or event kind
    n: int
    min_ts: float
    max_ts: float


@dataclasses.dataclass(slots=True)
class Decoded:
    agent_id: str
    instance: str  # the agent process's stream (header "iid"; "" when not sent)
    seq: int
    created: float
    hash: bytes  # SHA-256 of the whole envelope: the dedupe identity
    n_samples: int
    n_events: int
    block: bytes  # zstd(msgpack(records)) as the agent compressed it, validated
    index: list[IndexRow]
    # snappy protobuf WriteRequests, when asked for: one (tenant, body) pair, or one per
    # tenant with remote_write.tenant_header (tenant "" when not split)
    remote_write: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    # tenant -> the 8-byte ids of the distinct sample series in the batch, concatenated (series limits)
    series: dict[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """Picklable description of a :class:`Decoder` (for worker processes)."""

    private_keys: tuple[tuple[str, bytes], ...]  # (alg, raw private key)
    agents: tuple[tuple[str, bytes, tuple[str, ...]], ...]  # (name, raw ed25519 public key, tenants)
    max_body_bytes: int
    max_decompressed_bytes: int
    max_records: int
    max_batch_age_seconds: float
    max_clock_skew_seconds: float
    remote_write: bool = False
    remote_write_per_tenant: bool = False  # one WriteRequest per tenant (remote_write.tenant_header)
    series_ids: bool = True  # compute series ids (off when no series limit is set)


class Decoder:
    def __init__(self, spec: DecoderSpec) -> None:
        self.spec = spec
        self.private: dict[str, keymod.PrivateKey] = {}
        for alg, raw in spec.private_keys:
            k = keymod.private_from_raw(alg, raw)
            self.private[k.key_id] = k
        self.agents: dict[str, tuple[str, keymod.PublicKey, frozenset[str]]] = {}
        for name, raw, tenants in spec.agents:
            pub = keymod.public_from_raw(keymod.ED25519, raw)
            self.agents[keymod.agent_id_of(pub)] = (name, pub, frozenset(tenants))

    def decode(self, blob: bytes, now: float | None = None) -> Decoded:
        s = self.spec
        try:
            header, header_bytes, ct, _sig = wire.parse_envelope(blob, s.max_body_bytes)
        except SealError as e:
            raise Rejected(e.reason, e.detail) from None
        if header.instance and not _IID.fullmatch(header.instance):
            raise Rejected("bad_header", "iid must be 16 lowercase hex digits")
        enrolled = self.agents.get(header.agent_id)
        if enrolled is None:
            raise Rejected("unknown_agent", f"agent {header.agent_id[:32]} is not enrolled")
        name, pub, allowed = enrolled
        try:
            wire.verify(blob, pub)
        except SealError as e:
            raise Rejected(e.reason, e.detail) from None
        denied = [] if "*" in allowed else [t for t in header.tenants if t not in allowed]
        if denied:
            raise Rejected("tenant_not_allowed", f"agent {name} may not write tenant {denied[0][:64]}")
        key = self.private.get(header.key_id)
        if key is None:
            raise Rejected("unknown_key_id", f"batch sealed to ingest key {header.key_id[:32]}, not held here")
        now = time.time() if now is None else now
        if header.created < now - s.max_batch_age_seconds:
            raise Rejected("too_old", f"batch created {now - header.created:.0f}s ago")
        if header.created > now + s.max_clock_skew_seconds:
            raise Rejected("created_in_future", f"batch created {header.created - now:.0f}s in the future")
        try:
            records = wire.open_records(header, header_bytes, ct, key, s.max_decompressed_bytes, s.max_records)
        except SealError as e:
            raise Rejected(e.reason, e.detail) from None
        series = check_records(records, s.series_ids)
        index = summarize(records)
        # Store the agent's own compressed payload (now fully validated) rather than
        # packing the records again: decrypting a second time costs far less than
        # msgpack + zstd of the records. The HPKE info is the envelope prefix, as
        # documented in docs/wire-format.md: everything up to the end of the header.
        block = wire.suite(header.suite).decrypt(ct, key.key, info=blob[: 9 + len(header_bytes)])
        rw: list[tuple[str, bytes]] = []
        if s.remote_write and header.n_samples:
            from hostmond.ingest.remote_write import compress, encode_write_request

            if s.remote_write_per_tenant:
                by_tenant: dict[str, list[tuple[str, Any, Any, Any]]] = {}
                for r in records:
                    if "s" in r:
                        by_tenant.setdefault(r["l"]["tenant_id"], []).append((r["s"], r["l"], r["v"], r["t"]))
                rw = [(t, compress(encode_write_request(rows))) for t, rows in sorted(by_tenant.items())]
            else:
                rw = [("", compress(encode_write_request((r["s"], r["l"], r["v"], r["t"]) for r in records if "s" in r)))]
        return Decoded(
            header.agent_id,
            header.instance,
            header.seq,
            header.created,
            hashlib.sha256(blob).digest(),
            header.n_samples,
            header.n_events,
            block,
            index,
            rw,
            series,
        )


def _labels_collide(names: tuple[str, ...]) -> str | None:
    """The first label name that collides with another after remote-write sanitising, or None."""
    from hostmond.ingest.remote_write import sanitize_label_name

    seen: dict[str, str] = {"__name__": "__name__"}  # the metric name is a label in remote write
    for n in names:
        fixed = n if _LABEL_OK.fullmatch(n) else sanitize_label_name(n)
        other = seen.get(fixed)
        if other is not None:
            return f"label {n[:64]!r} collides with {other[:64]!r} (both are {fixed[:64]!r} in Prometheus)"
        seen[fixed] = n
    return None


def check_records(records: list[dict[str, Any]], series_ids: bool = True) -> dict[str, bytes]:
    """The ingest's own checks on validated records; returns the series ids per tenant.

    Refuses (422) a record whose timestamp is NaN, infinite or outside the
    int64 milliseconds of remote write (``bad_timestamp``: SQLite and remote
    write cannot store it, and a retry cannot fix it), and a sample whose
    label names collide after Prometheus sanitising (``label_collision``:
    ``tenant-id`` would become ``tenant_id`` and overwrite the real tenant in
    the receiver). Sample *values* may be NaN or +-Inf: they are valid
    Prometheus values and are stored as they are.

    The series ids (for the series limits, :mod:`ingest.limits`) are 8-byte
    BLAKE2b digests of the msgpack of (name, labels), concatenated per tenant:
    cheap to make and to send back from a worker process. Labels are taken in
    the order the agent sent them (an agent's collectors always send one
    series' labels in the same order).
    """
    ok_names: set[tuple[str, ...]] = set()
    keys: dict[str, set[bytes]] = {}
    pack = msgpack.Packer().pack
    for r in records:
        t = r["t"]
        if not -MAX_ABS_TIMESTAMP < t < MAX_ABS_TIMESTAMP:  # False for NaN too
            what = f"sample {r['s'][:64]!r}" if "s" in r else f"event {r['e'][:64]!r}"
            raise Rejected("bad_timestamp", f"{what} has timestamp {t!r}: not a finite time")
        if "s" not in r:
            continue
        labels = r["l"]
        names = tuple(labels)
        if names not in ok_names:
            clash = _labels_collide(names)
            if clash is not None:
                raise Rejected("label_collision", f"sample {r['s'][:64]!r}: {clash}")
            ok_names.add(names)
        if series_ids:
            tenant = labels["tenant_id"]
            got = keys.get(tenant)
            if got is None:
                got = keys[tenant] = set()
            got.add(pack((r["s"], labels)))
    # Hash each distinct series once (a batch holds several samples of most series).
    b2 = hashlib.blake2b
    return {t: b"".join([b2(k, digest_size=8).digest() for k in ks]) for t, ks in keys.items()}


def summarize(records: list[dict[str, Any]]) -> list[IndexRow]:
    """One index row per (tenant, kind, name) with its count and time range."""
    acc: dict[tuple[str, str, str], list[Any]] = {}
    for r in records:
        if "s" in r:
            key = (r["l"]["tenant_id"], SAMPLE, r["s"])
        else:
            key = (r["l"]["tenant_id"], EVENT, r["e"])
        t = r["t"]
        a = acc.get(key)
        if a is None:
            acc[key] = [1, t, t]
        else:
            a[0] += 1
            if t < a[1]:
                a[1] = t
            elif t > a[2]:
                a[2] = t
    return [IndexRow(k[0], k[1], k[2], a[0], float(a[1]), float(a[2])) for k, a in acc.items()]


def read_block(block: bytes) -> list[dict[str, Any]]:
    """The records of a stored block (validated by the ingest before it was stored)."""
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(block), read_across_frames=True) as r:
        data = r.read()
    return msgpack.unpackb(data, raw=False)  # type: ignore[no-any-return]


# -- worker-process entry points ------------------------------------------------------

_worker: Decoder | None = None


def init_worker(spec: DecoderSpec) -> None:
    global _worker
    _worker = Decoder(spec)


def decode_in_worker(blob: bytes, now: float | None = None) -> Decoded:
    if _worker is None:
        raise RuntimeError("worker not initialised")
    return _worker.decode(blob, now)
