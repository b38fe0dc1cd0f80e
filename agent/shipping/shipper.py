"""The shipper: buffer -> sealed batch -> spool -> ingest, losing nothing silently.

It is an :class:`hostmond.agent.handoff.Consumer`: the runtime calls :meth:`Shipper.submit`
with each tagged collection (non-blocking; a full buffer drops and counts). A
batch loop closes batches by size or age, seals them in a worker thread and
writes them to the spool before anything is sent. A send loop posts spooled
batches oldest first and deletes each one only on the ingest's 2xx. On a clean
:meth:`stop` the buffer is sealed into the spool, so nothing held in memory is
lost; after a crash, whatever reached the spool is sent on the next start.

Life cycle, from the runtime::

    shipper = Shipper(cfg.shipping, state_dir=..., tenant_ids=[cfg.tenant_id],
                      agent_key_path=...)
    await shipper.start()        # raises KeyFileError / SpoolError / ConfigError
    runtime.add_consumer(shipper)
    ...
    await shipper.stop()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from hostmond.agent.handoff import Collection
from hostmond.agent.shipping.batcher import Batcher, Chunk
from hostmond.agent.shipping.config import ShippingConfig
from hostmond.agent.shipping.sender import (
    ACKED,
    DROP,
    DROP_STATUSES,
    RETRY_REASONS,
    Deliver,
    LocalSender,
    Sender,
    retry_wait,
)
from hostmond.agent.shipping.spool import SeqStore, Spool

from hostmond.core import keys, memory, selfmetrics, wire
from hostmond.core.aio import cancel_and_wait
from hostmond.core.errors import ConfigError, KeyFileError, SealError, SpoolError
from hostmond.core.logs import LogOnce
from hostmond.core.model import COUNTER, GAUGE, MetricSpec, Sample

log = logging.getLogger("hostmon.shipping")

UNSPOOLED_LIMIT = 8  # sealed batches held in memory while the spool cannot be written
PROBE_FLOOR = 0.1  # shortest wait between two tries, however full the spool
MAX_LAYOUTS = 256  # sources whose series order submit() remembers (wire.pack_sample_records)

METRICS: tuple[MetricSpec, ...] = selfmetrics.declare(
    "agent.shipping.shipper",
    MetricSpec("hostmon_shipper_buffer_records", GAUGE, "Records waiting in memory to be sealed into a batch."),
    MetricSpec("hostmon_shipper_buffer_limit_records", GAUGE, "Most records the in-memory buffer holds (shipping.buffer_limit_records)."),
    MetricSpec("hostmon_shipper_buffer_dropped_total", COUNTER, "Records dropped because the in-memory buffer was full."),
    MetricSpec("hostmon_shipper_invalid_records_total", COUNTER, "Records dropped before sealing because a field had the wrong type or size."),
    MetricSpec("hostmon_shipper_batches_sealed_total", COUNTER, "Batches sealed (packed, compressed, encrypted, signed)."),
    MetricSpec("hostmon_shipper_seal_failures_total", COUNTER, "Batches that could not be sealed; their records are lost and counted here."),
    MetricSpec("hostmon_shipper_loop_crashes_total", COUNTER, "Unexpected errors in the shipper's batch or send loop (each loop restarts itself)."),
    MetricSpec("hostmon_spool_bytes", GAUGE, "Bytes of sealed batches in the spool.", unit="bytes"),
    MetricSpec("hostmon_spool_batches", GAUGE, "Sealed batches in the spool waiting for the ingest's acknowledgement."),
    MetricSpec("hostmon_spool_limit_bytes", GAUGE, "Most bytes the spool holds (shipping.spool_limit_bytes).", unit="bytes"),
    MetricSpec("hostmon_spool_dropped_batches_total", COUNTER, "Oldest batches dropped to keep the spool under its limit."),
    MetricSpec("hostmon_spool_dropped_samples_total", COUNTER, "Samples inside batches dropped from the full spool."),
    MetricSpec("hostmon_spool_corrupt_total", COUNTER, "Truncated or corrupt spool files moved aside into spool/corrupt."),
    MetricSpec("hostmon_spool_write_errors_total", COUNTER, "Failed attempts to write a batch to the spool (disk full, ...)."),
    MetricSpec("hostmon_spool_oldest_batch_age_seconds", GAUGE, "Age of the oldest batch in the spool; 0 when empty.", unit="seconds"),
    MetricSpec("hostmon_ship_sent_batches_total", COUNTER, "Batches acknowledged by the ingest (stored or duplicate)."),
    MetricSpec("hostmon_ship_sent_samples_total", COUNTER, "Samples in batches acknowledged by the ingest."),
    MetricSpec("hostmon_ship_duplicate_total", COUNTER, "Acknowledgements that said the batch was already stored (a retry after a lost answer)."),
    MetricSpec("hostmon_ship_failed_total", COUNTER, "Send attempts that failed and will be retried, by reason.", ("reason",)),
    MetricSpec("hostmon_ship_retries_total", COUNTER, "Send attempts repeated after a failure."),
    MetricSpec("hostmon_ship_rejected_total", COUNTER, "Batches the ingest rejected for good (dropped from the spool), by HTTP status.", ("status",)),
    MetricSpec("hostmon_ship_rejected_samples_total", COUNTER, "Samples inside batches the ingest rejected for good."),
    MetricSpec("hostmon_ship_send_duration_seconds_total", COUNTER, "Seconds spent in send attempts (divide by attempts for the mean).", unit="seconds"),
    MetricSpec("hostmon_ship_send_attempts_total", COUNTER, "Send attempts, successful or not."),
    MetricSpec("hostmon_ship_last_send_duration_seconds", GAUGE, "Duration of the last send attempt.", unit="seconds"),
    MetricSpec("hostmon_ship_quarantined_batches_total", COUNTER, "Batches that kept failing alike while later ones were accepted, moved into spool/quarantine."),
    MetricSpec("hostmon_ship_quarantined_samples_total", COUNTER, "Samples inside quarantined batches."),
    MetricSpec("hostmon_ship_request_timeout_seconds", GAUGE, "Request timeout in use: request_timeout, raised after timeouts up to request_timeout_max.", unit="seconds"),
)


class Shipper:
    """Consumer that seals, spools and ships every collection it is given."""

    def __init__(
        self,
        config: ShippingConfig,
        *,
        state_dir: str,
        tenant_ids: Sequence[str],
        agent_key_path: str | None = None,
        ingest_public_key_path: str | None = None,
        ingest_url: str | None = None,
        rng: random.Random | None = None,
        local: Deliver | None = None,
    ) -> None:
        if not tenant_ids:
            raise ValueError("tenant_ids must name at least the agent's own tenant")
        self.config = config
        self.state_dir = state_dir
        self.tenant_ids = tuple(tenant_ids)
        self.agent_key_path = agent_key_path or config.resolved_agent_key(state_dir)
        self.ingest_public_key_path = ingest_public_key_path or config.ingest_public_key
        self.ingest_url = ingest_url or config.ingest_url
        self.local = local  # an ingest in this process (the embedded one): batches go to it without HTTP
        self.rng = rng or random.Random()
        # per source, its series as packed at its last collection (see wire.pack_sample_records)
        self._layouts: dict[str, list[Any]] = {}
        self.batcher = Batcher(
            config.batch_max_records, config.batch_max_age, config.batch_jitter, config.buffer_limit_records, self.rng
        )
        self.spool: Spool | None = None
        self.seqs: SeqStore | None = None
        self.sender: Sender | LocalSender | None = None
        self.agent_key: keys.PrivateKey | None = None
        self.ingest_key: keys.PublicKey | None = None
        self._batch_task: asyncio.Task[None] | None = None
        self._send_task: asyncio.Task[None] | None = None
        self._batch_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._seal_lock = asyncio.Lock()
        self._seq_error = False
        self._sealing = 0  # records taken from the buffer and being sealed right now
        self._unspooled: collections.deque[tuple[wire.BatchHeader, bytes]] = collections.deque()
        self.log_once = LogOnce(log)
        self._failing_since: float | None = None
        self._strikes: dict[int, tuple[str, int]] = {}  # seq -> (answer, times in a row)
        self._suspect: int | None = None  # a batch failed quarantine_after times alike; a later one probes
        self.request_timeout = config.request_timeout  # adapted: see _adapt_timeout
        # counters
        self.invalid_records = 0
        self.loop_crashes = 0
        self.sealed = 0
        self.seal_failures = 0
        self.sent_batches = 0
        self.sent_samples = 0
        self.duplicates = 0
        self.failed: dict[str, int] = {r: 0 for r in RETRY_REASONS}
        self.retries = 0
        # every status that drops a batch is exposed at 0 from the start, so alerts see it before the first drop
        self.rejected: dict[str, int] = {str(st): 0 for st in sorted(DROP_STATUSES)}
        self.rejected_samples = 0
        self.send_seconds = 0.0
        self.send_attempts = 0
        self.last_send_duration = 0.0

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Load keys, open the spool and start the batch and send loops."""
        if not self.ingest_url:
            raise ConfigError(None, "shipping.ingest_url", "no ingest URL (the embedded ingest passes its own)")
        if not self.ingest_public_key_path:
            raise ConfigError(None, "shipping.ingest_public_key", "required when shipping to an ingest")
        self.agent_key = keys.load_private_key(self.agent_key_path, (keys.ED25519,))
        self.ingest_key = keys.load_public_key(self.ingest_public_key_path, keys.INGEST_ALGORITHMS)
        if self.config.suite and self.ingest_key.alg != self.config.suite:
            raise KeyFileError(
                f"{self.ingest_public_key_path}: the ingest key is {self.ingest_key.alg}, "
                f"but shipping.suite asks for {self.config.suite}"
            )
        spool_dir = self.config.resolved_spool_dir(self.state_dir)
        self.spool = Spool(spool_dir, self.config.spool_limit_bytes, self.agent_key.public)
        await asyncio.to_thread(self.spool.open)
        self.seqs = SeqStore(os.path.join(self.state_dir, "shipping", "seq.json"))
        highest = self.spool.max_seq()
        floor = 0 if highest is None else highest + 1
        await asyncio.to_thread(self.seqs.open, self.agent_key.key_id, floor)
        self.sender = LocalSender(self.local) if self.local is not None else Sender(
            self.ingest_url,
            agent_id=self.agent_key.key_id,
            ca_file=self.config.ca_file,
            client_cert=self.config.client_cert,
            client_key=self.config.client_key,
            connect_timeout=self.config.connect_timeout,
            request_timeout=self.config.request_timeout,
        )
        self._batch_task = asyncio.create_task(self._supervise(self._batch_loop), name="hostmon-shipper-batch")
        self._send_task = asyncio.create_task(self._supervise(self._send_loop), name="hostmon-shipper-send")
        log.info(
            "shipping batches",
            extra={
                "ingest_url": self.ingest_url,
                "agent_id": self.agent_key.key_id,
                "ingest_key_id": self.ingest_key.key_id,
                "suite": self.ingest_key.alg,
                "spool": spool_dir,
                "spooled_batches": len(self.spool),
            },
        )

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Seal what is buffered into the spool; optionally keep sending up to ``drain_timeout`` s."""
        if self._batch_task is not None:
            # never cancel a batch in the middle of sealing or spooling: wait for the lock first
            async with self._seal_lock:
                self._batch_task.cancel()
            # cancelled under the lock above; cancel_and_wait repeats it (harmless) until the task has ended
            await cancel_and_wait(self._batch_task)
            self._batch_task = None
        if self.spool is not None:
            await self.flush()
            if drain_timeout > 0 and self._send_task is not None:
                await self.wait_sent(drain_timeout)
        if self._send_task is not None:
            await cancel_and_wait(self._send_task)
            self._send_task = None
        if self.sender is not None:
            await self.sender.close()
        if self._unspooled:
            n = sum(h.n_samples + h.n_events for h, _ in self._unspooled)
            log.error("batches could not be written to the spool before exit; their records are lost",
                      extra={"batches": len(self._unspooled), "records": n})

    async def _supervise(self, loop: Any) -> None:
        """Run a loop forever: an unexpected error is logged and the loop restarts a second later."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.loop_crashes += 1
                log.exception("shipper loop failed; restarting it", extra={"loop": loop.__name__})
                await asyncio.sleep(1.0)

    # -- the Consumer protocol --------------------------------------------------------
    def submit(self, collection: Collection) -> None:
        """Take one collection (never blocks; a full buffer drops the collection and counts it)."""
        before = self.batcher.dropped
        was_empty = self.batcher.records == 0
        # Samples are packed now, not when the batch is sealed: a batch fills for up to batch_max_age
        # (10 s), and its packed records hold less than half the memory of the samples (127 vs 286 B a sample).
        records: list[bytes] = []
        tenants: set[str] = set()
        try:
            layout = self._layouts.get(collection.collector)
            if layout is None:
                if len(self._layouts) >= MAX_LAYOUTS:  # sources come and go (renamed collectors): start over
                    self._layouts.clear()
                layout = self._layouts[collection.collector] = []
            invalid = wire.pack_sample_records(
                collection.samples, collection.time, self.tenant_ids[0], records, tenants, layout
            )
        except SealError:  # a value msgpack cannot pack: the collection's samples are refused, not the agent
            records, tenants, invalid = [], set(), len(collection.samples)
        if invalid:
            self._invalid(invalid)
        # a shallow copy of the events: the runtime may reuse its lists after submit() returns
        self.batcher.add(collection.time, records, list(collection.events), frozenset(tenants))
        if self.batcher.dropped != before:
            self.log_once.once(("buffer_full",), logging.WARNING,
                               "shipper buffer full: collections are dropped (counted in hostmon_shipper_buffer_dropped_total)",
                               limit_records=self.batcher.limit_records)
        # wake the batch loop when a batch is full, or when a new batch started (it sets the deadline)
        if self.batcher.records >= self.batcher.max_records or (was_empty and self.batcher.records):
            self._batch_wake.set()

    # -- batching and sealing ---------------------------------------------------------
    async def _batch_loop(self) -> None:
        while True:
            if self._unspooled:
                async with self._seal_lock:
                    await self._write_unspooled()
            if self.batcher.due():
                await self._seal_one()
                if self._seq_error:
                    self._seq_error = False
                    await asyncio.sleep(1.0)
                continue
            timeout: float | None = None
            if self.batcher.deadline is not None:
                timeout = max(0.0, self.batcher.deadline - self.batcher.clock())
            if self._unspooled:
                timeout = 1.0 if timeout is None else min(timeout, 1.0)
            self._batch_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._batch_wake.wait()

    async def flush(self) -> None:
        """Seal everything buffered now into the spool (the batch size still applies)."""
        async with self._seal_lock:
            await self._write_unspooled()
        while self.batcher.records:
            before = self.batcher.records
            await self._seal_one()
            if self.batcher.records >= before:  # no progress (sequence file unwritable)
                break

    async def _seal_one(self) -> None:
        assert self.spool is not None
        async with self._seal_lock:
            chunks = self.batcher.take()
            if not chunks:
                return
            self._sealing = sum(len(c) for c in chunks)
            try:
                sealed = await asyncio.to_thread(self._seal_chunks, chunks)
            except SealError as e:
                self.seal_failures += 1
                n = sum(len(c) for c in chunks)
                log.error("batch could not be sealed; its records are lost", extra={"reason": e.reason, "records": n, "error": str(e)})
                return
            except OSError as e:  # the sequence file could not be written
                self.batcher.put_back(chunks)
                self.log_once.once(("seq_write",), logging.ERROR, "cannot reserve a batch sequence number; retrying", error=str(e))
                self._seq_error = True
                return
            finally:
                self._sealing = 0
            if sealed is None:
                return
            self._unspooled.append(sealed)
            await self._write_unspooled()

    def _seal_chunks(self, chunks: list[Chunk]) -> tuple[wire.BatchHeader, bytes] | None:
        """Encode, validate, number and seal (runs in a worker thread)."""
        assert self.seqs is not None and self.agent_key is not None and self.ingest_key is not None
        default = self.tenant_ids[0]
        tenants: set[str] = set()
        # packed record by record: the batch never exists as a list of dicts (wire.RecordPacker)
        srecs = wire.RecordPacker()
        erecs = wire.RecordPacker()
        invalid = 0
        for c in chunks:
            srecs.extend_packed(c.samples)  # packed and checked at submit()
            tenants.update(c.tenants)
            invalid += wire.encode_checked((), c.events, c.time, default, erecs, tenants)  # type: ignore[arg-type]
        ns = len(srecs)
        n = ns + len(erecs)
        if invalid:
            self._invalid(invalid)
        if not n:
            return None
        seq = self.seqs.next()
        header = wire.BatchHeader(
            wire.FORMAT_VERSION, self.ingest_key.alg, self.ingest_key.key_id, self.agent_key.key_id,
            tuple(sorted(tenants)), seq, time.time(), ns, n - ns, self.seqs.instance,
        )
        blob = wire.seal_packed(header, wire.pack_records(srecs, erecs), self.agent_key, self.ingest_key)
        self.sealed += 1
        del srecs, erecs
        memory.trim()  # the batch-sized buffers just freed: not kept resident until the next batch
        return header, blob

    def _invalid(self, n: int) -> None:
        self.invalid_records += n
        self.log_once.once(("invalid_records",), logging.WARNING,
                           "records with wrong field types or sizes dropped before sealing "
                           "(counted in hostmon_shipper_invalid_records_total)")

    async def _write_unspooled(self) -> None:
        assert self.spool is not None
        while self._unspooled:
            header, blob = self._unspooled[0]
            try:
                await asyncio.to_thread(self.spool.put, header, blob)
            except SpoolError as e:
                self.log_once.once(("spool_write",), logging.ERROR,
                               "cannot write to the spool; holding sealed batches in memory and retrying", error=str(e))
                while len(self._unspooled) > UNSPOOLED_LIMIT:
                    h, _ = self._unspooled.popleft()
                    self.spool.dropped_batches += 1
                    self.spool.dropped_samples += h.n_samples
                    self.spool.dropped_events += h.n_events
                return
            self._unspooled.popleft()
            self.log_once.forget(("spool_write",))
            self._send_wake.set()

    # -- sending ----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        assert self.spool is not None and self.sender is not None
        attempt = 0
        cfg = self.config
        while True:
            # oldest first; a suspect batch (see _strike) waits while a later one probes the ingest
            entry = self.spool.claim_oldest(skip=self._suspect)
            if entry is None and self._suspect is not None:
                entry = self.spool.claim_oldest()  # nothing else to probe with: retry the suspect itself
            if entry is None:
                self._send_wake.clear()
                await self._send_wake.wait()
                continue
            blob = self.spool.take_fresh(entry)  # just written by this process: no read back
            if blob is None:
                blob = await asyncio.to_thread(self.spool.read, entry)
            if blob is None:
                self._forget(entry.seq)
                continue
            t0 = time.monotonic()
            try:
                res = await self.sender.send(blob, entry.seq, timeout=self.request_timeout)
            except BaseException:
                self.spool.release(entry.seq)
                raise
            dt = time.monotonic() - t0
            self.send_attempts += 1
            self.send_seconds += dt
            self.last_send_duration = dt
            self._adapt_timeout(res.reason == "timeout", res.status is not None, dt)
            if res.outcome == ACKED:
                self.sent_batches += 1
                self.sent_samples += entry.n_samples
                self.duplicates += res.duplicate
                await asyncio.to_thread(self.spool.remove, entry.seq)
                if self._failing_since is not None:
                    log.info("ingest reachable again", extra={"failed_for_seconds": round(time.monotonic() - self._failing_since, 1)})
                    self._failing_since = None
                self._forget(entry.seq)
                if self._suspect is not None:
                    # a later batch was accepted while the suspect keeps failing: the fault is in that batch
                    await asyncio.to_thread(self._quarantine_suspect)
                attempt = 0
            elif res.outcome == DROP:
                status = str(res.status)
                self.rejected[status] = self.rejected.get(status, 0) + 1
                self.rejected_samples += entry.n_samples
                await asyncio.to_thread(self.spool.remove, entry.seq)
                self._forget(entry.seq)
                self.log_once.once(("rejected", status, res.reason), logging.ERROR,
                               "ingest rejected a batch for good; it is dropped (further rejections like it are counted, not logged)",
                               status=res.status, reason=res.reason, seq=entry.seq)
                attempt = 0
            else:
                self.spool.release(entry.seq)
                self.failed[res.reason] = self.failed.get(res.reason, 0) + 1
                self.retries += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("cannot deliver batches to the ingest; keeping them in the spool and retrying",
                                extra={"reason": res.reason, "status": res.status, "ingest_url": self.ingest_url})
                self._strike(entry.seq, res.reason, res.status)
                wait = retry_wait(attempt, cfg.backoff_first, cfg.backoff_max, res.retry_after, self.rng)
                attempt += 1
                await asyncio.sleep(min(wait, self._pressure_cap()))

    # -- a batch that fails alone is quarantined -------------------------------------
    def _strike(self, seq: int, reason: str, status: int | None) -> None:
        """Count a failure of batch ``seq``; after ``quarantine_after`` alike answers it becomes the suspect.

        Only answers from the ingest count (an HTTP status), never connection errors
        or timeouts: those say the ingest is away, not that the batch is bad. A
        suspect is quarantined only when a later batch is then accepted; when the
        later batch fails too, the ingest fails for everyone and nothing is set aside.
        """
        if self._suspect is not None and seq != self._suspect:
            self._suspect = None  # the probe failed as well: not this batch's fault
            self._strikes.clear()
            return
        if status is None:
            self._strikes.pop(seq, None)
            return
        way = f"{reason}:{status}"
        prev = self._strikes.get(seq)
        n = prev[1] + 1 if prev is not None and prev[0] == way else 1
        self._strikes = {seq: (way, n)}  # only the head of the queue has a streak
        if n >= self.config.quarantine_after:
            self._suspect = seq

    def _forget(self, seq: int) -> None:
        self._strikes.pop(seq, None)
        if self._suspect == seq:
            self._suspect = None

    def _quarantine_suspect(self) -> None:
        assert self.spool is not None
        seq, self._suspect = self._suspect, None
        if seq is None:
            return
        way, n = self._strikes.pop(seq, ("", 0))
        entry = self.spool.quarantine(seq, way)
        if entry is None:
            return
        self.log_once.once(("quarantined", way), logging.ERROR,
                       "a batch kept failing while later batches were accepted; moved to the spool's quarantine/ "
                       "directory (further ones are counted in hostmon_ship_quarantined_batches_total, not logged)",
                       seq=seq, answer=way, attempts=n, samples=entry.n_samples)

    # -- timing -----------------------------------------------------------------------
    def _adapt_timeout(self, timed_out: bool, answered: bool, took: float) -> None:
        """Double the request timeout after a timeout (up to request_timeout_max); shrink it back after answers.

        A slow but working ingest then gets requests long enough to answer, so the
        spool drains instead of the same batch timing out for ever.
        """
        base = self.config.request_timeout
        top = max(base, self.config.request_timeout_max)
        if timed_out:
            new = min(top, self.request_timeout * 2)
            if new > self.request_timeout:
                self.log_once.once(("slow_ingest",), logging.WARNING,
                               "ingest answers slower than the request timeout; allowing longer requests",
                               timeout=new, request_timeout_max=top)
            self.request_timeout = new
        elif answered:
            self.request_timeout = max(base, min(self.request_timeout, 4 * took))

    def _pressure_cap(self) -> float:
        """Longest retry wait the spool allows: half the estimated time until it must drop a batch.

        With a nearly full spool the sender probes often, so once the ingest is back it
        sends before the next batch forces a drop (never below 0.1 s between tries).
        """
        assert self.spool is not None
        return max(PROBE_FLOOR, self.spool.seconds_to_next_drop() / 2)

    async def wait_sent(self, timeout: float) -> bool:
        """Wait until the buffer and the spool are empty (all acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            idle = self.batcher.records == 0 and not self._sealing and not self._unspooled
            if idle and self.spool is not None and len(self.spool) == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    # -- self-metrics -----------------------------------------------------------------
    def self_metrics(self) -> Iterable[Sample]:
        def s(name: str, value: float, labels: dict[str, str] | None = None) -> Sample:
            return Sample(name, _TYPES[name], value, labels or {})

        b = self.batcher
        out = [
            s("hostmon_shipper_buffer_records", b.records),
            s("hostmon_shipper_buffer_limit_records", b.limit_records),
            s("hostmon_shipper_buffer_dropped_total", b.dropped),
            s("hostmon_shipper_invalid_records_total", self.invalid_records),
            s("hostmon_shipper_batches_sealed_total", self.sealed),
            s("hostmon_shipper_seal_failures_total", self.seal_failures),
            s("hostmon_shipper_loop_crashes_total", self.loop_crashes),
            s("hostmon_spool_limit_bytes", self.config.spool_limit_bytes),
        ]
        sp = self.spool
        if sp is not None:
            oldest = sp.oldest_created()
            out += [
                s("hostmon_spool_bytes", sp.bytes),
                s("hostmon_spool_batches", len(sp)),
                s("hostmon_spool_dropped_batches_total", sp.dropped_batches),
                s("hostmon_spool_dropped_samples_total", sp.dropped_samples),
                s("hostmon_spool_corrupt_total", sp.corrupt),
                s("hostmon_spool_write_errors_total", sp.write_errors),
                s("hostmon_spool_oldest_batch_age_seconds", max(0.0, time.time() - oldest) if oldest else 0.0),
                s("hostmon_ship_quarantined_batches_total", sp.quarantined_batches),
                s("hostmon_ship_quarantined_samples_total", sp.quarantined_samples),
            ]
        out += [
            s("hostmon_ship_sent_batches_total", self.sent_batches),
            s("hostmon_ship_sent_samples_total", self.sent_samples),
            s("hostmon_ship_duplicate_total", self.duplicates),
            s("hostmon_ship_retries_total", self.retries),
            s("hostmon_ship_rejected_samples_total", self.rejected_samples),
            s("hostmon_ship_send_duration_seconds_total", self.send_seconds),
            s("hostmon_ship_send_attempts_total", self.send_attempts),
            s("hostmon_ship_last_send_duration_seconds", self.last_send_duration),
            s("hostmon_ship_request_timeout_seconds", self.request_timeout),
        ]
        out += [s("hostmon_ship_failed_total", v, {"reason": r}) for r, v in sorted(self.failed.items())]
        out += [s("hostmon_ship_rejected_total", v, {"status": st}) for st, v in sorted(self.rejected.items())]
        return out


_TYPES = {m.name: m.type for m in METRICS}
