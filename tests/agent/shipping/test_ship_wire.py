"""The batch wire format: test vector, round trips, tamper detection, limits."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import struct
from pathlib import Path

import msgpack
import pytest
import zstandard

from hostmond.api import Event, Sample
from hostmond.core import keys, wire
from hostmond.core.errors import SealError

DOC = Path(__file__).resolve().parents[3] / "docs" / "wire-format.md"
BIG = 1 << 24


def _vector_blocks() -> dict[str, str]:
    text = DOC.read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r"```vector-([a-z-]+)\n(.*?)```", text, re.DOTALL)}


@pytest.fixture(scope="module")
def agent_key() -> keys.PrivateKey:
    return keys.generate("ed25519")


@pytest.fixture(scope="module")
def ingest_key() -> keys.PrivateKey:
    return keys.generate("x25519")


def _records() -> list[dict]:
    samples = [
        Sample("node_load1", "gauge", 0.5, {"tenant_id": "acme", "host": "h1"}, 1700000000.0),
        Sample("node_cpu_seconds_total", "counter", 12, {"tenant_id": "beta", "cpu": "0"}, None),
    ]
    events = [Event("auth_failure", 1700000001.0, {"user": "root", "n": [1, 2.5, None, {"x": True}]}, {"tenant_id": "acme"})]
    return wire.encode_records(samples, events, default_time=1700000000.5)


def _header(agent: keys.PrivateKey, ingest: keys.PrivateKey, recs: list[dict], seq: int = 1) -> wire.BatchHeader:
    ns = sum(1 for r in recs if "s" in r)
    return wire.BatchHeader(1, ingest.alg, ingest.key_id, agent.key_id, wire.tenants_of(recs), seq, 1700000002.0, ns, len(recs) - ns)


def _open(blob: bytes, agent: keys.PrivateKey, ingest: keys.PrivateKey) -> list[dict]:
    header, hb, ct, _sig = wire.parse_envelope(blob, BIG)
    wire.verify(blob, agent.public)
    return wire.open_records(header, hb, ct, ingest, BIG, 100_000)


def test_documented_test_vector_opens_to_documented_records() -> None:
    v = _vector_blocks()
    agent_priv = keys.parse_private_key(v["agent-private"])
    agent_pub = keys.parse_public_key(v["agent-public"])
    ingest_priv = keys.parse_private_key(v["ingest-private"])
    assert agent_priv.public == agent_pub
    assert keys.parse_public_key(v["ingest-public"]) == ingest_priv.public
    assert agent_pub.key_id == "0516c510724cca94"
    assert ingest_priv.key_id == "b2b5e9cf9350997c"
    blob = base64.b64decode("".join(v["envelope"].split()))
    assert len(blob) == 437 and blob[:9].hex() == "484d42000100000067"
    header, hb, ct, _ = wire.parse_envelope(blob, 4096)
    assert header == wire.BatchHeader(1, "x25519", "b2b5e9cf9350997c", "0516c510724cca94", ("acme",), 42, 1767225602.0, 2, 1)
    wire.verify(blob, agent_pub)
    records = wire.open_records(header, hb, ct, ingest_priv, 1 << 20, 10)
    assert records == json.loads(v["records"])
    assert type(records[1]["v"]) is int and type(records[0]["v"]) is float
    # sealing anew with the documented keys opens to the same records
    again = wire.seal(header, records, agent_priv, ingest_priv.public)
    assert again != blob  # HPKE is randomized
    assert _open(again, agent_priv, ingest_priv) == records


def test_round_trip_restores_samples_and_events(agent_key, ingest_key) -> None:
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest_key, recs), recs, agent_key, ingest_key.public)
    samples, events = wire.decode_records(_open(blob, agent_key, ingest_key))
    assert samples == [
        Sample("node_load1", "gauge", 0.5, {"tenant_id": "acme", "host": "h1"}, 1700000000.0),
        Sample("node_cpu_seconds_total", "counter", 12, {"tenant_id": "beta", "cpu": "0"}, 1700000000.5),
    ]
    assert [e.to_dict() for e in events] == [
        {"kind": "auth_failure", "time": 1700000001.0, "fields": {"user": "root", "n": [1, 2.5, None, {"x": True}]}, "labels": {"tenant_id": "acme"}}
    ]
    assert wire.tenants_of(recs) == ("acme", "beta")


def test_instance_id_is_optional_signed_and_bound_into_the_header(agent_key, ingest_key) -> None:
    recs = _records()
    plain = _header(agent_key, ingest_key, recs)
    assert "iid" not in plain.to_map()  # the test vector's header has none and stays valid
    h = dataclasses.replace(plain, instance="0123456789abcdef")
    blob = wire.seal(h, recs, agent_key, ingest_key.public)
    header, _, _, _ = wire.parse_envelope(blob, BIG)
    assert header == h and header.instance == "0123456789abcdef"
    wire.verify(blob, agent_key.public)
    assert _open(blob, agent_key, ingest_key) == recs


def test_mlkem768_x25519_suite_round_trip(agent_key) -> None:
    ingest = keys.generate("mlkem768-x25519")
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest, recs), recs, agent_key, ingest.public)
    header, _, ct, _ = wire.parse_envelope(blob, BIG)
    assert header.suite == "mlkem768-x25519" and len(ct) > wire.ENC_LEN["mlkem768-x25519"]
    assert _open(blob, agent_key, ingest) == recs
    # the same ingest key text round-trips through its file format
    assert keys.parse_private_key(ingest.text()).public == ingest.public


def _regions(blob: bytes) -> dict[str, range]:
    hlen = struct.unpack_from(">I", blob, 5)[0]
    ctlen = struct.unpack_from(">I", blob, 9 + hlen)[0]
    ct0 = 13 + hlen
    return {
        "magic": range(4),
        "version": range(4, 5),
        "header_len": range(5, 9),
        "header": range(9, 9 + hlen),
        "ct_len": range(9 + hlen, 13 + hlen),
        "enc": range(ct0, ct0 + 32),
        "aead_ciphertext": range(ct0 + 32, ct0 + ctlen - 16),
        "aead_tag": range(ct0 + ctlen - 16, ct0 + ctlen),
        "signature": range(len(blob) - 64, len(blob)),
    }


def test_flipping_any_byte_of_any_region_is_detected(agent_key, ingest_key) -> None:
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest_key, recs), recs, agent_key, ingest_key.public)
    regions = _regions(blob)
    assert sum(len(r) for r in regions.values()) == len(blob)
    for name, region in regions.items():
        for pos in (region.start, (region.start + region.stop) // 2, region.stop - 1):
            bad = bytearray(blob)
            bad[pos] ^= 0x01
            with pytest.raises(SealError) as ei:
                _open(bytes(bad), agent_key, ingest_key)
            assert ei.value.reason in wire.REASONS, (name, pos)


def test_tampered_ciphertext_with_valid_signature_fails_decryption(agent_key, ingest_key) -> None:
    """An enrolled agent re-signing altered bytes still cannot get them decrypted."""
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest_key, recs), recs, agent_key, ingest_key.public)
    body = bytearray(blob[:-64])
    body[-20] ^= 0xFF  # inside the AEAD ciphertext
    forged = bytes(body) + agent_key.key.sign(bytes(body))
    header, hb, ct, _ = wire.parse_envelope(forged, BIG)
    wire.verify(forged, agent_key.public)
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct, ingest_key, BIG, 1000)
    assert ei.value.reason == "decrypt_failed"


def test_header_swapped_and_resigned_by_another_agent_fails_decryption(agent_key, ingest_key) -> None:
    other = keys.generate("ed25519")
    recs = _records()
    h = _header(agent_key, ingest_key, recs)
    blob = wire.seal(h, recs, agent_key, ingest_key.public)
    _, _, ct, _ = wire.parse_envelope(blob, BIG)
    h2 = wire.BatchHeader(**{**h.__dict__, "agent_id": other.key_id})
    hb2 = h2.pack()
    body = wire.MAGIC + struct.pack(">BI", 1, len(hb2)) + hb2 + struct.pack(">I", len(ct)) + ct
    forged = body + other.key.sign(body)
    header, hb, ct2, _ = wire.parse_envelope(forged, BIG)
    wire.verify(forged, other.public)
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct2, ingest_key, BIG, 1000)
    assert ei.value.reason == "decrypt_failed"


def test_wrong_keys_are_refused(agent_key, ingest_key) -> None:
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest_key, recs), recs, agent_key, ingest_key.public)
    header, hb, ct, _ = wire.parse_envelope(blob, BIG)
    with pytest.raises(SealError) as ei:
        wire.verify(blob, keys.generate("ed25519").public)
    assert ei.value.reason == "bad_signature"
    other_ingest = keys.generate("x25519")
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct, other_ingest, BIG, 1000)
    assert ei.value.reason == "wrong_key"  # key id differs
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct, other_ingest.key, BIG, 1000)  # bare library key: no id check
    assert ei.value.reason == "decrypt_failed"
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct, keys.generate("mlkem768-x25519"), BIG, 1000)
    assert ei.value.reason == "wrong_key"


def test_structural_errors_have_precise_reasons(agent_key, ingest_key) -> None:
    recs = _records()
    blob = wire.seal(_header(agent_key, ingest_key, recs), recs, agent_key, ingest_key.public)
    cases = {
        "too_large": (blob, len(blob) - 1),
        "malformed_envelope": (blob[:-1], BIG),
        "bad_magic": (b"XXXX" + blob[4:], BIG),
        "unsupported_version": (blob[:4] + b"\x02" + blob[5:], BIG),
    }
    for reason, (b, limit) in cases.items():
        with pytest.raises(SealError) as ei:
            wire.parse_envelope(b, limit)
        assert ei.value.reason == reason
    with pytest.raises(SealError) as ei:
        wire.parse_envelope(blob + b"\x00", BIG)
    assert ei.value.reason == "malformed_envelope"


def _seal_raw_plaintext(agent: keys.PrivateKey, ingest: keys.PrivateKey, header: wire.BatchHeader, compressed: bytes) -> bytes:
    """Build an envelope around an arbitrary compressed payload, as a hostile agent could."""
    hb = header.pack()
    prefix = wire.MAGIC + struct.pack(">BI", 1, len(hb)) + hb
    ct = wire.suite(header.suite).encrypt(compressed, ingest.public.key, info=prefix)
    body = prefix + struct.pack(">I", len(ct)) + ct
    return body + agent.key.sign(body)


def _open_err(blob: bytes, agent, ingest, max_decompressed: int = 1 << 20, max_records: int = 1000) -> str:
    header, hb, ct, _ = wire.parse_envelope(blob, BIG)
    wire.verify(blob, agent.public)
    with pytest.raises(SealError) as ei:
        wire.open_records(header, hb, ct, ingest, max_decompressed, max_records)
    return ei.value.reason


def test_zstd_bomb_is_refused_with_and_without_declared_size(agent_key, ingest_key) -> None:
    h = wire.BatchHeader(1, "x25519", ingest_key.key_id, agent_key.key_id, ("acme",), 1, 1.0, 1, 0)
    zeros = b"\x00" * (8 << 20)
    declared = zstandard.ZstdCompressor().compress(zeros)
    undeclared = zstandard.ZstdCompressor(write_content_size=False).compress(zeros)
    assert zstandard.frame_content_size(undeclared) == -1
    for payload in (declared, undeclared):
        assert len(payload) < 4096
        blob = _seal_raw_plaintext(agent_key, ingest_key, h, payload)
        assert _open_err(blob, agent_key, ingest_key, max_decompressed=1 << 20) == "decompressed_too_large"


def test_malformed_payloads_have_precise_reasons(agent_key, ingest_key) -> None:
    def hdr(ns: int = 1, ne: int = 0) -> wire.BatchHeader:
        return wire.BatchHeader(1, "x25519", ingest_key.key_id, agent_key.key_id, ("acme",), 1, 1.0, ns, ne)

    good = {"s": "m", "k": "gauge", "v": 1.0, "l": {"tenant_id": "acme"}, "t": 1.0}
    z = zstandard.ZstdCompressor().compress
    cases = [
        ("bad_compression", hdr(), b"not zstd at all"),
        ("bad_msgpack", hdr(), z(b"\xc1")),  # 0xc1 is never used in msgpack
        ("bad_msgpack", hdr(), z(msgpack.packb([good]) + b"\x01")),  # trailing data
        ("bad_record", hdr(), z(msgpack.packb({"a": 1}))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "v": "1.0"}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "v": True}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "k": "histogram"}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "l": {"tenant_id": 5}}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "extra": 1}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "l": {"tenant_id": "other"}}]))),
        ("bad_record", hdr(), z(msgpack.packb([{**good, "l": {}}]))),
        ("bad_record", hdr(0, 1), z(msgpack.packb([{"e": "x", "t": 1.0, "f": {"b": b"bytes"}, "l": {"tenant_id": "acme"}}], use_bin_type=True))),
        ("bad_msgpack", hdr(), z(msgpack.packb([{**good, "t": msgpack.ExtType(5, b"x")}]))),
        ("count_mismatch", hdr(2), z(msgpack.packb([good]))),
        ("too_many_records", hdr(0), z(msgpack.packb([good] * 5))),
    ]
    for reason, h, payload in cases:
        blob = _seal_raw_plaintext(agent_key, ingest_key, h, payload)
        assert _open_err(blob, agent_key, ingest_key, max_records=3) == reason, (reason, payload[:40])


def test_header_with_wrong_types_is_bad_header(agent_key, ingest_key) -> None:
    good = _header(agent_key, ingest_key, _records()).to_map()
    for change in (
        {"seq": "1"}, {"seq": -1}, {"created": 5}, {"tenants": []}, {"tenants": ["a", "a"]}, {"extra": 1}, {"aid": ""},
        {"iid": ""}, {"iid": 7}, {"iid": "x" * 200},
    ):
        hb = msgpack.packb({**good, **change})
        blob = wire.MAGIC + struct.pack(">BI", 1, len(hb)) + hb + struct.pack(">I", 64) + os.urandom(64) + os.urandom(64)
        with pytest.raises(SealError) as ei:
            wire.parse_envelope(blob, BIG)
        assert ei.value.reason == "bad_header", change
    hb = msgpack.packb({**good, "suite": "rot13"})
    blob = wire.MAGIC + struct.pack(">BI", 1, len(hb)) + hb + struct.pack(">I", 64) + os.urandom(64) + os.urandom(64)
    with pytest.raises(SealError) as ei:
        wire.parse_envelope(blob, BIG)
    assert ei.value.reason == "unknown_suite"


def test_decode_records_rejects_wrong_field_types() -> None:
    with pytest.raises(SealError) as ei:
        wire.decode_records([{"s": "m", "k": "gauge", "v": [1], "l": {"tenant_id": "a"}, "t": 1.0}])
    assert ei.value.reason == "bad_record"
    with pytest.raises(SealError):
        wire.decode_records([{"e": "k", "t": "now", "f": {}, "l": {}}])


def test_sample_without_time_needs_a_default() -> None:
    with pytest.raises(SealError) as ei:
        wire.encode_records([Sample("m", "gauge", 1.0, {"tenant_id": "a"})], [])
    assert ei.value.reason == "seal_failed"


def test_encode_checked_keeps_exactly_the_records_check_record_accepts() -> None:
    t = {"tenant_id": "acme"}
    samples = [
        Sample("ok", "gauge", 1.0, dict(t), 5.0),
        Sample("ok_int_no_ts", "counter", 3, {"x": "y"}),  # no tenant, no timestamp: both filled in
        Sample("", "gauge", 1.0, dict(t)),
        Sample("m", "histogram", 1.0, dict(t)),
        Sample("m", ["gauge"], 1.0, dict(t)),  # type: ignore[arg-type]
        Sample("m", "gauge", True, dict(t)),
        Sample("m", "gauge", "1", dict(t)),  # type: ignore[arg-type]
        Sample("m", "gauge", 1.0, {"tenant_id": "acme", "v": 5}),  # type: ignore[dict-item]
        Sample("m", "gauge", 1.0, {"tenant_id": "acme", "v": "x" * 1025}),
        Sample("m", "gauge", 1.0, {"": "x", "tenant_id": "acme"}),
        Sample("x" * 257, "gauge", 1.0, dict(t)),
    ]
    events = [
        Event("ok", 1.0, {"a": [1, {"b": None}]}, {}),
        Event("bad", 1.0, {"a": {1, 2}}, dict(t)),
        Event("bad", "now", {}, dict(t)),  # type: ignore[arg-type]
    ]
    records: list = []
    tenants: set = set()
    bad = wire.encode_checked(samples, events, 9.0, "dflt", records, tenants)
    assert bad == 11
    assert [r.get("s", r.get("e")) for r in records] == ["ok", "ok_int_no_ts", "ok"]
    assert records[1]["l"] == {"x": "y", "tenant_id": "dflt"} and records[1]["t"] == 9.0
    assert samples[1].labels == {"x": "y"}  # the caller's labels are not changed
    assert tenants == {"acme", "dflt"}
    for r in records:
        wire.check_record(r)


def test_encode_checked_remembers_a_series_check_but_checks_every_value_and_time() -> None:
    """The name/type/labels check is kept per series; values and timestamps are checked on every sample."""
    ok = Sample("series_ok", "gauge", 1.0, {"tenant_id": "acme", "dev": "sda"}, 5.0)
    bad_label = Sample("series_bad", "gauge", 1.0, {"tenant_id": "acme", "v": 5}, 5.0)  # type: ignore[dict-item]
    for _ in range(2):  # the second pass comes from the remembered checks
        records: list = []
        tenants: set = set()
        assert wire.encode_checked([ok, bad_label], (), 9.0, "dflt", records, tenants) == 1
        assert [r["s"] for r in records] == ["series_ok"] and tenants == {"acme"}
    same_series = [
        Sample("series_ok", "gauge", "1", {"tenant_id": "acme", "dev": "sda"}, 5.0),  # type: ignore[arg-type]
        Sample("series_ok", "gauge", 2.0, {"tenant_id": "acme", "dev": "sda"}, float("nan")),
        Sample("series_ok", "gauge", 3.0, {"tenant_id": "acme", "dev": "sda"}, 1e300),
        Sample("series_ok", "gauge", 4.0, {"tenant_id": "acme", "dev": "sda"}, 6.0),
        Sample("series_ok", "gauge", 4.0, {"tenant_id": "acme", "dev": "x" * 1025}, 6.0),  # other labels: checked
    ]
    records = []
    assert wire.encode_checked(same_series, (), 9.0, "dflt", records, set()) == 4
    assert [(r["v"], r["t"]) for r in records] == [(4.0, 6.0)]
    nodflt: list = []
    wire.encode_checked([Sample("series_t", "gauge", 1.0, {"x": "y"}, 5.0)], (), 9.0, "one", nodflt, set())
    wire.encode_checked([Sample("series_t", "gauge", 1.0, {"x": "y"}, 5.0)], (), 9.0, "two", nodflt, set())
    assert [r["l"]["tenant_id"] for r in nodflt] == ["one", "two"], "the default tenant is part of what is remembered"
    reused = {"tenant_id": "acme", "dev": "sda"}  # a collector that reuses and changes one labels dict
    first: list = []
    wire.encode_checked([Sample("series_r", "gauge", 1.0, reused, 5.0)], (), 9.0, "dflt", first, set())
    reused["dev"] = "sdb"
    assert first[0]["l"]["dev"] == "sda"
    again: list = []
    wire.encode_checked([Sample("series_r", "gauge", 1.0, {"tenant_id": "acme", "dev": "sda"}, 5.0)], (), 9.0, "dflt", again, set())
    assert again[0]["l"] == {"tenant_id": "acme", "dev": "sda"}


def test_records_packed_one_by_one_are_the_bytes_of_the_packed_list() -> None:
    """The shipper packs each record as encode_checked makes it (wire.RecordPacker): same bytes as packb(list)."""
    samples = [Sample(f"m{i % 7}", "gauge" if i % 2 else "counter", float(i) if i % 3 else i, {"d": f"x{i}"}) for i in range(300)]
    samples.append(Sample("m_nan", "gauge", float("nan"), {}, timestamp=5.0))
    events = [Event("auth_failure", 10.0 + i, {"user": "u", "n": i, "nested": {"a": [1, 2.5, None, True]}}, {"k": "v"}) for i in range(5)]
    as_list_s: list[dict] = []
    as_list_e: list[dict] = []
    ps, pe = wire.RecordPacker(), wire.RecordPacker()
    tenants: set[str] = set()
    assert wire.encode_checked(samples, (), 100.0, "acme", as_list_s, tenants) == 0
    assert wire.encode_checked((), events, 100.0, "acme", as_list_e, tenants) == 0
    wire.encode_checked(samples, (), 100.0, "acme", ps, set())  # type: ignore[arg-type]
    wire.encode_checked((), events, 100.0, "acme", pe, set())  # type: ignore[arg-type]
    assert (len(ps), len(pe)) == (len(as_list_s), len(as_list_e)) == (301, 5)
    assert wire.pack_records(ps, pe) == msgpack.packb(as_list_s + as_list_e, use_bin_type=True)
    assert wire.pack_records(wire.RecordPacker()) == msgpack.packb([], use_bin_type=True)
    with pytest.raises(SealError) as ei:
        wire.RecordPacker().append({"f": object()})
    assert ei.value.reason == "seal_failed"


def test_a_batch_sealed_from_packed_records_opens_to_the_same_records(agent_key, ingest_key) -> None:
    recs = _records()
    packer = wire.RecordPacker()
    for r in recs:
        packer.append(r)
    header = _header(agent_key, ingest_key, recs)
    blob = wire.seal_packed(header, wire.pack_records(packer), agent_key, ingest_key.public)
    assert _open(blob, agent_key, ingest_key) == _open(wire.seal(header, recs, agent_key, ingest_key.public), agent_key, ingest_key) == recs


@pytest.mark.parametrize("with_layout", [False, True])
def test_pack_sample_records_gives_the_records_encode_checked_gives(with_layout: bool) -> None:
    """The shipper packs each sample at submit and keeps each series' packed name, type and labels
    between collections; what a reader unpacks must be exactly encode_checked's records, batch after batch,
    including the samples it refuses, a changed value or time, and a reused labels dict. With a
    layout (the series order of the source's last collection) as well: round 2 changes a dict in
    place, round 3 reverses the order and makes a valid sample invalid and an invalid one valid."""
    import msgpack

    t = {"tenant_id": "acme"}
    reused = {"tenant_id": "acme", "dev": "sda"}
    samples = [
        Sample("ok", "gauge", 1.0, dict(t), 5.0),
        Sample("ok_int_no_ts", "counter", 3, {"x": "y"}),
        Sample("nan_ok", "gauge", float("nan"), dict(t), 5.0),
        Sample("", "gauge", 1.0, dict(t)),
        Sample("m", "gauge", True, dict(t)),
        Sample("m", "gauge", 1.0, {"tenant_id": "acme", "v": 5}),  # type: ignore[dict-item]
        Sample("m", "gauge", 1.0, dict(t), float("inf")),
        Sample("m", "gauge", 1.0, dict(t), 1e300),
        Sample("r", "gauge", 2.0, reused, 7.0),
        Sample("x" * 257, "gauge", 1.0, dict(t)),
    ]
    layout: list | None = [] if with_layout else None
    for round_ in range(4):  # the first fills the cache, the later ones use it
        if round_ == 2:
            reused["dev"] = "sdb"  # a collector that changes its labels dict in place
            samples[0] = Sample("ok", "gauge", 42.5, dict(t), 6.0)
        if round_ == 3:
            samples.reverse()
            samples[-1] = Sample("ok", "gauge", 42.5, {"tenant_id": 7}, 6.0)  # type: ignore[dict-item]
            samples[0] = Sample("x" * 256, "gauge", 1.0, dict(t))
        expected: list = []
        exp_tenants: set = set()
        exp_bad = wire.encode_checked(samples, (), 9.0, "dflt", expected, exp_tenants)
        packed: list = []
        tenants: set = set()
        bad = wire.pack_sample_records(samples, 9.0, "dflt", packed, tenants, layout)
        packer = wire.RecordPacker()
        packer.extend_packed(packed)
        got = msgpack.unpackb(wire.pack_records(packer), raw=False)
        assert (bad, tenants, len(packer)) == (exp_bad, exp_tenants, len(expected))
        assert (bad, tenants, len(packer)) == (6, {"acme", "dflt"}, 4)
        if layout is not None:
            assert len(layout) == len(samples)  # one place per sample, None for a refused one
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.keys() == e.keys()
            for k in e:
                assert g[k] == e[k] or (g[k] != g[k] and e[k] != e[k]), (k, g[k], e[k])  # NaN == NaN here
            wire.check_record(g)
        if round_ == 2:
            assert got[3]["l"] == {"tenant_id": "acme", "dev": "sdb"}
            assert got[0]["v"] == 42.5 and got[0]["t"] == 6.0
    assert [g["s"] for g in got] == ["x" * 256, "r", "nan_ok", "ok_int_no_ts"]
    assert got[1]["l"] == {"tenant_id": "acme", "dev": "sdb"} and got[3]["l"] == {"x": "y", "tenant_id": "dflt"}
    # a bad default time refuses the samples that need it, not the ones with their own
    packed = []
    assert wire.pack_sample_records([Sample("a", "gauge", 1.0, dict(t)), Sample("b", "gauge", 1.0, dict(t), 3.0)],
                                    float("nan"), "dflt", packed, set()) == 1
    assert [msgpack.unpackb(r)["s"] for r in packed] == ["b"]
