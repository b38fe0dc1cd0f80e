"""The spool: sealed batches on disk, waiting for the ingest's acknowledgement.

One file per batch, ``<seq:020d>.hmb``, holding the sealed envelope exactly as it
is sent, so the spool is encrypted and signed at rest. A batch is written to a
temporary file, fsync-ed, renamed into place and the directory fsync-ed: a crash
leaves either the whole batch or no batch. The spool is bounded in bytes; making
room drops the oldest batches and counts them (one evicted while it is being
sent is counted when that send fails; if it succeeds nothing was lost). A file that is truncated or corrupt (does not parse, or its signature does
not verify with the agent's own key) is moved into ``corrupt/`` and counted; the
newest :data:`CORRUPT_KEEP` such files are kept for inspection.

Sequence numbers (:class:`SeqStore`) are reserved durably in blocks before use,
so they never repeat across restarts, crashes included.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import secrets
import threading
import time
from typing import Any

from hostmond.agent import safedir
from hostmond.core import wire
from hostmond.core.durable import fsync_dir
from hostmond.core.errors import SealError, SpoolError

SUFFIX = ".hmb"
TMP_PREFIX = ".tmp-"
CORRUPT_DIR = "corrupt"
QUARANTINE_DIR = "quarantine"
CORRUPT_KEEP = 32
SEQ_BLOCK = 64

log = logging.getLogger("hostmon.shipping.spool")


def write_durably(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    d = os.path.dirname(path) or "."
    tmp = os.path.join(d, f"{TMP_PREFIX}{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(d)


@dataclasses.dataclass
class SpoolEntry:
    seq: int
    path: str
    size: int
    n_samples: int
    n_events: int
    created: float


class Spool:
    """A bounded directory of sealed batches, oldest (lowest seq) first. Thread-safe."""

    def __init__(self, directory: str, limit_bytes: int, agent_public_key: Any, max_batch_bytes: int = 64 << 20) -> None:
        self.dir = directory
        self.corrupt_dir = os.path.join(directory, CORRUPT_DIR)
        self.quarantine_dir = os.path.join(directory, QUARANTINE_DIR)
        self.limit_bytes = int(limit_bytes)
        self.agent_public_key = agent_public_key
        self.max_batch_bytes = max_batch_bytes
        self._lock = threading.Lock()
        self._entries: dict[int, SpoolEntry] = {}  # insertion order == seq order
        self._in_flight: set[int] = set()
        self._doomed: dict[int, SpoolEntry] = {}  # evicted while being sent
        # The bytes of batches written since the start and not yet handed to the sender: the send
        # loop takes them from here instead of reading the file back (a thread hop, a read and a
        # signature check per batch for bytes this process sealed itself). Bounded; files read from
        # disk (after a restart, a retry, or past the bound) are verified as before.
        self._fresh: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._fresh_bytes = 0
        self._puts: collections.deque[tuple[float, int]] = collections.deque(maxlen=16)  # (monotonic, bytes)
        self.bytes = 0
        self.dropped_batches = 0
        self.dropped_samples = 0
        self.dropped_events = 0
        self.corrupt = 0
        self.write_errors = 0
        self.quarantined_batches = 0
        self.quarantined_samples = 0

    # -- start-up -------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory (0700) and index what is there; corrupt files are moved aside.

        The directory must belong to the agent's user and not be writable by group
        or others, and so must ``corrupt/`` and ``quarantine/`` inside it (no links):
        otherwise another user could make the agent delete or read files elsewhere.
        """
        try:
            safedir.ensure_private_dir(self.dir)
            safedir.ensure_private_subdir(self.dir, CORRUPT_DIR)
            if os.path.lexists(self.quarantine_dir):  # made on first use
                safedir.ensure_private_subdir(self.dir, QUARANTINE_DIR)
            names = os.listdir(self.dir)
        except safedir.UnsafeDirError as e:
            raise SpoolError(f"cannot use the spool directory: {e.strerror}") from None
        except OSError as e:
            raise SpoolError(f"{self.dir}: cannot use the spool directory: {e.strerror}") from None
        found: list[SpoolEntry] = []
        for name in names:
            path = os.path.join(self.dir, name)
            if name in (CORRUPT_DIR, QUARANTINE_DIR):
                continue
            if name.startswith(TMP_PREFIX):
                # a write that never reached its rename: the batch is incomplete
                self._move_aside(path, "incomplete write")
                continue
            if not name.endswith(SUFFIX):
                continue
            entry = self._check_file(path)
            if entry is not None:
                found.append(entry)
        found.sort(key=lambda e: e.seq)
        with self._lock:
            self._entries = {e.seq: e for e in found}
            self.bytes = sum(e.size for e in found)
        if found:
            log.info("spool holds batches from an earlier run", extra={"batches": len(found), "bytes": self.bytes})

    def _check_file(self, path: str) -> SpoolEntry | None:
        try:
            blob = safedir.read_regular(path, self.max_batch_bytes + 1)
        except OSError as e:  # a link, FIFO or device named like a batch, or unreadable
            self._move_aside(path, f"unreadable: {e.strerror}")
            return None
        try:
            header = self._verify(blob)
        except SealError as e:
            self._move_aside(path, e.reason)
            return None
        expected = f"{header.seq:020d}{SUFFIX}"
        if os.path.basename(path) != expected:
            self._move_aside(path, "file name does not match its sequence number")
            return None
        return SpoolEntry(header.seq, path, len(blob), header.n_samples, header.n_events, header.created)

    def _verify(self, blob: bytes) -> wire.BatchHeader:
        header, _, _, _ = wire.parse_envelope(blob, self.max_batch_bytes)
        wire.verify(blob, self.agent_public_key)
        return header

    def _move_aside(self, path: str, why: str) -> None:
        self.corrupt += 1
        dest = self._move_into(self.corrupt_dir, path)
        log.warning("corrupt spool file moved aside", extra={"path": path, "reason": why, "moved_to": dest})

    def _move_into(self, directory: str, path: str) -> str:
        """Rename ``path`` (never followed: a link moves as a link) into ``directory``; keep the newest few."""
        name = os.path.basename(path)
        dest = os.path.join(directory, f"{int(time.time())}-{name.lstrip('.')}")
        try:
            os.replace(path, dest)
        except OSError:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._prune(directory)
        return dest

    def _prune(self, directory: str) -> None:
        """Keep the newest :data:`CORRUPT_KEEP` entries; the directory is opened without following a link."""
        try:
            fd = safedir.open_dir_nofollow(directory)
        except OSError:
            return
        try:
            names = sorted(os.listdir(fd))
            for name in names[: max(0, len(names) - CORRUPT_KEEP)]:
                try:
                    os.unlink(name, dir_fd=fd)  # unlink never follows a link: it removes the link
                except OSError:
                    pass
        finally:
            os.close(fd)

    def quarantine(self, seq: int, why: str) -> SpoolEntry | None:
        """Move a batch the ingest keeps failing on into ``quarantine/`` and count it; None if gone."""
        with self._lock:
            if seq in self._in_flight:
                return None
            e = self._entries.pop(seq, None)
            self._doomed.pop(seq, None)
            if e is None:
                return False
            self.bytes -= e.size
            self.quarantined_batches += 1
            self.quarantined_samples += e.n_samples
        try:
            safedir.ensure_private_subdir(self.dir, QUARANTINE_DIR)
        except OSError as err:
            log.error("cannot make the quarantine directory; the batch is deleted", extra={"error": str(err)})
        dest = self._move_into(self.quarantine_dir, e.path)
        log.debug("batch quarantined", extra={"seq": e.seq, "reason": why, "moved_to": dest})
        return e

    # -- queries ----------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def seqs(self) -> list[int]:
        with self._lock:
            return list(self._entries)

    def max_seq(self) -> int | None:
        with self._lock:
            return max(self._entries) if self._entries else None

    def oldest_created(self) -> float | None:
        with self._lock:
            for e in self._entries.values():
                return e.created
        return None

    # -- writing --------------------------------------------------------------------
    def put(self, header: wire.BatchHeader, blob: bytes) -> list[int]:
        """Store a sealed batch durably; returns the seqs dropped to make room.

        Raises SpoolError when the file cannot be written (disk full, ...); the
        spool is then unchanged and the caller still holds the batch.
        """
        size = len(blob)
        dropped: list[int] = []
        if size > self.limit_bytes:
            with self._lock:
                self._count_drop(header.n_samples, header.n_events)
            log.error(
                "batch larger than the whole spool limit, dropped",
                extra={"seq": header.seq, "bytes": size, "limit_bytes": self.limit_bytes},
            )
            return [header.seq]
        with self._lock:
            while self.bytes + size > self.limit_bytes and self._entries:
                victim = next(iter(self._entries.values()))
                if victim.seq in self._in_flight:
                    # being sent right now: its fate (sent, rejected or dropped) is counted when the send ends
                    self._doomed[victim.seq] = victim
                else:
                    self._count_drop(victim.n_samples, victim.n_events)
                self._remove_locked(victim.seq)
                dropped.append(victim.seq)
        if dropped:
            log.warning(
                "spool full: oldest batches dropped",
                extra={"dropped_batches": len(dropped), "limit_bytes": self.limit_bytes},
            )
        path = os.path.join(self.dir, f"{header.seq:020d}{SUFFIX}")
        try:
            write_durably(path, blob)
        except OSError as e:
            with self._lock:
                self.write_errors += 1
            raise SpoolError(f"{path}: cannot write batch: {e.strerror}") from None
        with self._lock:
            self._entries[header.seq] = SpoolEntry(header.seq, path, size, header.n_samples, header.n_events, header.created)
            self.bytes += size
            self._fresh[header.seq] = blob
            self._fresh_bytes += size
            while self._fresh_bytes > FRESH_MAX_BYTES or len(self._fresh) > FRESH_MAX_BATCHES:
                _, old = self._fresh.popitem(last=False)
                self._fresh_bytes -= len(old)
            self._puts.append((time.monotonic(), size))
        return dropped

    def seconds_to_next_drop(self) -> float:
        """Estimated seconds until a put must drop the oldest batch, from the recent rate of puts.

        When the spool has no room for another batch of the recent average size, that
        is the time to the next expected put; ``inf`` when too few puts were seen.
        """
        with self._lock:
            if len(self._puts) < 2:
                return float("inf")
            first, last = self._puts[0][0], self._puts[-1][0]
            span = last - first
            if span <= 0:
                return 0.0
            interval = span / (len(self._puts) - 1)
            avg = sum(n for _, n in self._puts) / len(self._puts)
            free = self.limit_bytes - self.bytes
        until_next_put = max(0.0, last + interval - time.monotonic())
        if free < avg:
            return until_next_put
        return until_next_put + (free - avg) / avg * interval

    def _count_drop(self, n_samples: int, n_events: int) -> None:
        self.dropped_batches += 1
        self.dropped_samples += n_samples
        self.dropped_events += n_events

    def _remove_locked(self, seq: int) -> None:
        e = self._entries.pop(seq, None)
        self._in_flight.discard(seq)
        fresh = self._fresh.pop(seq, None)
        if fresh is not None:
            self._fresh_bytes -= len(fresh)
        if e is None:
            return
        self.bytes -= e.size
        try:
            os.unlink(e.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("cannot delete spooled batch", extra={"path": e.path, "error": err.strerror})

    # -- sending side -----------------------------------------------------------------
    def claim_oldest(self, skip: int | None = None) -> SpoolEntry | None:
        """The oldest batch not already being sent, marked as being sent.

        A batch evicted while it is being sent is counted as dropped only if that
        send fails (:meth:`release`); if the ingest acknowledges it, it was not lost.
        """
        with self._lock:
            for seq, e in self._entries.items():
                if seq not in self._in_flight and seq != skip:
                    self._in_flight.add(seq)
                    return e
        return None

    def release(self, seq: int) -> None:
        """The send failed: the batch stays and may be sent (or dropped) again."""
        with self._lock:
            self._in_flight.discard(seq)
            victim = self._doomed.pop(seq, None)
            if victim is not None:  # evicted meanwhile: now it is really dropped
                self._count_drop(victim.n_samples, victim.n_events)

    def remove(self, seq: int) -> None:
        """Acknowledged (or rejected for good): delete the batch."""
        with self._lock:
            self._doomed.pop(seq, None)  # delivered after all: not a drop
            self._remove_locked(seq)

    def take_fresh(self, entry: SpoolEntry) -> bytes | None:
        """The batch's bytes as this process wrote them, when still held (see ``_fresh``); else None:
        then :meth:`read` it from the file. Taken once: a retry reads (and verifies) the file."""
        with self._lock:
            if entry.seq not in self._entries:  # removed or evicted meanwhile: read() decides
                return None
            blob = self._fresh.pop(entry.seq, None)
            if blob is not None:
                self._fresh_bytes -= len(blob)
            return blob

    def read(self, entry: SpoolEntry) -> bytes | None:
        """The batch's bytes, verified; a corrupt file is moved aside and None returned."""
        try:
            blob = safedir.read_regular(entry.path, self.max_batch_bytes + 1)
            self._verify(blob)
        except (OSError, SealError) as e:
            reason = e.reason if isinstance(e, SealError) else "unreadable"
            with self._lock:
                self._in_flight.discard(entry.seq)
                doomed = self._doomed.pop(entry.seq, None)
                if doomed is not None:  # evicted to make room between claim and read
                    self._count_drop(doomed.n_samples, doomed.n_events)
                    return None
                if self._entries.pop(entry.seq, None) is not None:
                    self.bytes -= entry.size
            if os.path.lexists(entry.path):
                self._move_aside(entry.path, reason)
            else:
                self.corrupt += 1
                log.warning("spooled batch vanished", extra={"path": entry.path})
            return None
        return blob


FRESH_MAX_BYTES = 8 << 20  # written batches kept in memory for the sender, at most (see Spool._fresh)
FRESH_MAX_BATCHES = 16


class SeqStore:
    """Batch sequence numbers that never repeat: blocks are reserved durably before use.

    The first number after a start is the largest of: the reserved high-water
    mark on disk, one past the highest seq still in the spool, and the current
    time in milliseconds, so even a lost state file does not bring old numbers
    back (unless more than one batch per millisecond was sealed on average).

    ``instance`` is a random id kept in the same file: the numbers are unique per
    (agent id, instance), so processes that share one agent identity (the pods of a
    DaemonSet) never reuse each other's numbers. A lost file gives a new instance.
    """

    def __init__(self, path: str, block: int = SEQ_BLOCK) -> None:
        self.path = path
        self.block = block
        self._next = 0
        self._reserved = 0
        self.instance = ""
        self._lock = threading.Lock()

    def open(self, agent_id: str, floor: int = 0) -> None:
        stored = 0
        instance = ""
        try:
            data = json.loads(safedir.read_regular(self.path, 1 << 16))
            if isinstance(data, dict) and data.get("agent_id") == agent_id and isinstance(data.get("reserved"), int):
                stored = data["reserved"]
                iid = data.get("instance")
                if isinstance(iid, str) and re.fullmatch(r"[0-9a-f]{16}", iid):
                    instance = iid
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("sequence file unreadable; continuing above the clock", extra={"path": self.path, "error": str(e)})
        self.agent_id = agent_id
        self.instance = instance or secrets.token_hex(8)
        self._next = max(stored, floor, int(time.time() * 1000))
        self._reserved = self._next
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)

    def next(self) -> int:
        """The next sequence number, durably reserved before it is returned."""
        with self._lock:
            if self._next >= self._reserved:
                reserved = self._next + self.block
                data = json.dumps({"agent_id": self.agent_id, "instance": self.instance, "reserved": reserved}).encode()
                write_durably(self.path, data)
                self._reserved = reserved
            seq = self._next
            self._next += 1
            return seq
