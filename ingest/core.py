"""The ingest's work on a batch, without HTTP: verify, decrypt, deduplicate, store, audit, count.

:class:`IngestCore` is what ``hostmon ingest run`` serves over HTTP
(:class:`hostmond.ingest.server.IngestServer` adds the listener, the endpoint
security and the handlers) and what the embedded ingest of ``hostmon run`` calls
in-process (:mod:`hostmond.ingest.embedded`): the agent's own batches need no
socket, no HTTP stack and no web framework, only the same checks and the same
durable store. :meth:`IngestCore.accept` takes a batch body and returns an
:class:`Answer` (the HTTP status and JSON body the server sends).

A batch goes through checks, cheapest first (content type, sizes, envelope,
signature, tenants, age, decryption, decompression, records); the first that
fails answers its status with ``{"status": "rejected", "reason": R, "detail": ...}``,
counts ``hostmon_ingest_rejected_total{reason}`` and stores nothing. The status
of each reason is ``hostmond.ingest.decode.STATUS``, listed in docs/ingest.md (a test
checks that the two agree).

Success is ``200 {"status": "stored"}`` only after the SQLite commit (and,
with remote write on, after the receiver's 2xx). Sending the very same
envelope again (an honest retry whose answer was lost) is
``200 {"status": "duplicate"}`` and stores nothing. A retryable failure of
the remote-write receiver answers 503 (``remote_write_unavailable``) so the
agent keeps the batch and retries.

The order matters for safety: nothing is decrypted before the signature of an
enrolled agent checked out, and the dedupe decision is made again inside the
storing transaction, so two racing copies of one batch store it once.

Test-only fault hook: with ``HOSTMON_INGEST_FAULT=kill_after_commit`` the
process SIGKILLs itself right after the first commit, before answering (the
proof that an agent's retry then stores no duplicate).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import sqlite3
import time
from typing import Any

from hostmond.ingest import audit as auditmod
from hostmond.ingest.config import IngestConfig, LoadedKeys, load_keys
from hostmond.ingest.decode import (
    SAMPLE,
    STATUS,
    Decoded,
    Decoder,
    DecoderSpec,
    Rejected,
    decode_in_worker,
    init_worker,
)
from hostmond.ingest.limits import SeriesLimiter
from hostmond.ingest.sqlite_sink import DUPLICATE, REPLAY, STORED, SqliteSink
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from hostmond.core import selfmetrics
from hostmond.core.aio import cancel_and_wait
from hostmond.core.model import COUNTER, GAUGE, HISTOGRAM, MetricSpec

log = logging.getLogger("hostmon.ingest")

STORAGE_PROBE_SECONDS = 1.0
FAULT_ENV = "HOSTMON_INGEST_FAULT"

INGEST_SPECS = selfmetrics.declare(
    "ingest.core",
    MetricSpec("hostmon_ingest_rejected_total", COUNTER, "Batches refused, by reason (nothing of them was stored).", ("reason",)),
    MetricSpec("hostmon_ingest_batches_total", COUNTER, "Batches answered 200, by result (stored, or duplicate of a stored batch).", ("result",)),
    MetricSpec("hostmon_ingest_samples_total", COUNTER, "Samples stored, by tenant.", ("tenant_id",)),
    MetricSpec("hostmon_ingest_events_total", COUNTER, "Events stored, by tenant.", ("tenant_id",)),
    MetricSpec("hostmon_ingest_received_bytes_total", COUNTER, "Bytes of batch envelopes received (accepted or not).", (), "bytes"),
    MetricSpec("hostmon_ingest_store_duration_seconds", HISTOGRAM, "Time to store one batch durably (commit included).", (), "seconds"),
    MetricSpec("hostmon_ingest_inflight", GAUGE, "Batches being checked or stored now."),
    MetricSpec("hostmon_ingest_inflight_limit", GAUGE, "Most batches in work at once; more are answered 503 (counted as rejected{reason=\"busy\"})."),
    MetricSpec("hostmon_ingest_uploads", GAUGE, "Batch bodies being received now (before they take an inflight slot)."),
    MetricSpec("hostmon_ingest_uploads_limit", GAUGE, "Most batch bodies received at once (limits.max_uploads); more are answered 503 (rejected{reason=\"busy\"})."),
    MetricSpec("hostmon_ingest_active_series", GAUGE, "Distinct sample series seen within limits.series_window_seconds, all tenants."),
    MetricSpec("hostmon_ingest_storage_ok", GAUGE, "1 while the SQLite database takes writes, 0 after a storage error until a probe write succeeds (/readyz answers 503 meanwhile)."),
    MetricSpec("hostmon_ingest_storage_errors_total", COUNTER, "SQLite write failures (disk full, I/O error, locked); each batch refused meanwhile is also rejected{reason=\"storage_unavailable\"}."),
    MetricSpec("hostmon_ingest_remote_write_requests_total", COUNTER, "Remote-write requests, by result (success, retryable_error, rejected).", ("result",)),
    MetricSpec("hostmon_ingest_remote_write_dropped_samples_total", COUNTER, "Samples the remote-write receiver refused for good (4xx); they are still stored in SQLite."),
    MetricSpec("hostmon_ingest_sqlite_used_bytes", GAUGE, "Bytes of the SQLite database in use (pages minus free pages).", (), "bytes"),
    MetricSpec("hostmon_ingest_sqlite_limit_bytes", GAUGE, "sqlite.max_bytes (0: no size limit).", (), "bytes"),
    MetricSpec("hostmon_ingest_retention_deleted_total", COUNTER, "Rows deleted by retention, by kind (samples, events).", ("kind",)),
    MetricSpec("hostmon_ingest_enrolled_agents", GAUGE, "Agents enrolled in the config."),
    MetricSpec("hostmon_ingest_private_keys", GAUGE, "Ingest private keys loaded (more than one during a rotation)."),
)

_PROM_CLASS = {COUNTER: Counter, GAUGE: Gauge, HISTOGRAM: Histogram}


def _prom(name: str, registry: CollectorRegistry, **kw: Any) -> Any:
    """The prometheus_client metric of a declared self-metric: its HELP, type and labels come from the spec."""
    spec = selfmetrics.spec(name)
    base = name.removesuffix("_total") if spec.type == COUNTER else name  # the client adds _total itself
    return _PROM_CLASS[spec.type](base, spec.help, list(spec.labels), registry=registry, **kw)


class IngestMetrics:
    def __init__(self, tenants: set[str], inflight_limit: int) -> None:
        disable_created_metrics()  # no *_created series: they double the output and no one reads them
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)  # the process_* families (selfmetrics.PROCESS_SPECS)
        self.rejected = _prom("hostmon_ingest_rejected_total", r)
        for reason in sorted(STATUS):
            self.rejected.labels(reason)
        self.batches = _prom("hostmon_ingest_batches_total", r)
        for res in (STORED, DUPLICATE):
            self.batches.labels(res)
        self.samples = _prom("hostmon_ingest_samples_total", r)
        self.events = _prom("hostmon_ingest_events_total", r)
        for t in sorted(tenants):  # enrolled tenants only: a bounded label set
            self.samples.labels(t)
            self.events.labels(t)
        self.bytes = _prom("hostmon_ingest_received_bytes_total", r)
        self.store_seconds = _prom(
            "hostmon_ingest_store_duration_seconds", r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.inflight = _prom("hostmon_ingest_inflight", r)
        self.inflight_limit = _prom("hostmon_ingest_inflight_limit", r)
        self.inflight_limit.set(inflight_limit)
        self.uploads = _prom("hostmon_ingest_uploads", r)
        self.uploads_limit = _prom("hostmon_ingest_uploads_limit", r)
        self.active_series = _prom("hostmon_ingest_active_series", r)
        self.storage_ok = _prom("hostmon_ingest_storage_ok", r)
        self.storage_ok.set(1)
        self.storage_errors = _prom("hostmon_ingest_storage_errors_total", r)
        self.rw_requests = _prom("hostmon_ingest_remote_write_requests_total", r)
        for res in ("success", "retryable_error", "rejected"):
            self.rw_requests.labels(res)
        self.rw_dropped = _prom("hostmon_ingest_remote_write_dropped_samples_total", r)
        self.db_bytes = _prom("hostmon_ingest_sqlite_used_bytes", r)
        self.db_limit = _prom("hostmon_ingest_sqlite_limit_bytes", r)
        self.retention_deleted = _prom("hostmon_ingest_retention_deleted_total", r)
        for k in ("samples", "events"):
            self.retention_deleted.labels(k)
        self.agents = _prom("hostmon_ingest_enrolled_agents", r)
        self.keys = _prom("hostmon_ingest_private_keys", r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the ingest answers to one batch: the HTTP status, the JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


class IngestCore:
    """Owns the sinks, the keys, the decoder and the counters; answers batches (no HTTP here)."""

    def __init__(self, cfg: IngestConfig, keys: LoadedKeys | None = None) -> None:
        self.cfg = cfg
        self.keys = keys if keys is not None else load_keys(cfg)
        lim = cfg.limits
        self.sink = SqliteSink(
            cfg.sqlite.path,
            synchronous=cfg.sqlite.synchronous,
            retention_seconds=cfg.sqlite.retention_seconds,
            max_bytes=cfg.sqlite.max_bytes,
            wal_max_bytes=cfg.sqlite.wal_max_bytes,
            dedupe_seconds=lim.max_batch_age_seconds + lim.max_clock_skew_seconds + 60,
        )
        self.remote: Any = None  # RemoteWriteSink (imported only when configured: it needs an HTTP client)
        if cfg.remote_write.url:
            from hostmond.ingest.remote_write import RemoteWriteSink

            self.remote = RemoteWriteSink(
                cfg.remote_write.url,
                timeout_seconds=cfg.remote_write.timeout_seconds,
                ca_file=cfg.remote_write.ca_file,
                headers=cfg.remote_write.headers,
                tenant_header=cfg.remote_write.tenant_header,
            )
        tenants = {t for e in self.keys.agents.values() for t in e.tenants if t != "*"}
        self.metrics = IngestMetrics(tenants, lim.max_inflight)
        self.metrics.uploads_limit.set(lim.max_uploads)
        self.series = SeriesLimiter(lim.max_series_per_agent, lim.max_series_per_tenant, lim.series_window_seconds)
        self.metrics.agents.set(len(self.keys.agents))
        self.metrics.keys.set(len(self.keys.private))
        self.metrics.db_limit.set(cfg.sqlite.max_bytes)
        self.audit = auditmod.from_config(cfg)  # the audit trail (ingest/audit.py); None when off
        if self.audit is not None:
            self.metrics.registry.register(auditmod.AuditMetrics(self.audit))  # type: ignore[arg-type]
        self.spec = DecoderSpec(
            private_keys=tuple((k.alg, k.raw) for k in self.keys.private.values()),
            agents=tuple((e.name, e.public.raw, tuple(sorted(e.tenants))) for e in self.keys.agents.values()),
            max_body_bytes=lim.max_body_bytes,
            max_decompressed_bytes=lim.max_decompressed_bytes,
            max_records=lim.max_records,
            max_batch_age_seconds=lim.max_batch_age_seconds,
            max_clock_skew_seconds=lim.max_clock_skew_seconds,
            remote_write=self.remote is not None,
            remote_write_per_tenant=bool(cfg.remote_write.tenant_header),
            series_ids=lim.max_series_per_agent > 0 or lim.max_series_per_tenant > 0,
        )
        self.decoder = Decoder(self.spec)
        workers = cfg.decode_workers if cfg.decode_workers >= 0 else (os.cpu_count() or 1)
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._threads = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(lim.max_inflight, 4)), thread_name_prefix="ingest-decode")
        self._inflight = 0
        self._uploads = 0
        self._storage_failed_since: float | None = None
        self._storage_refused = 0
        self._storage_task: asyncio.Task[None] | None = None
        self._log_state: dict[str, tuple[float, int]] = {}
        self._fault = os.environ.get(FAULT_ENV, "")
        self._retention_task: asyncio.Task[None] | None = None
        self._ready = False
        self.url = ""

    # -- life cycle -------------------------------------------------------------
    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn, not fork: the ingest may run inside the agent, with threads
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_worker,
            initargs=(self.spec,),
        )

    async def open(self) -> None:
        if self.workers > 0 and self._pool is None:
            self._pool = self._new_pool()
        await self.sink.open()
        if self.audit is not None:
            self.audit.open()
            self.audit.sync_config(*auditmod.config_state(self.keys))
        if self.remote is not None:
            await self.remote.start()
        self.metrics.db_bytes.set(await self.sink.used_bytes())
        self._retention_task = asyncio.create_task(self._retention_loop())
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        if self._storage_task is not None:
            await cancel_and_wait(self._storage_task)
            self._storage_task = None
        if self._retention_task is not None:
            await cancel_and_wait(self._retention_task)
            self._retention_task = None
        if self.remote is not None:
            await self.remote.close()
        await self.sink.close()
        if self.audit is not None:
            self.audit.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def run_retention(self) -> None:
        self.metrics.active_series.set(self.series.prune())
        if self._storage_failed_since is not None:
            return  # the storage probe runs; retention writes too
        res = await self.sink.retention()
        self.metrics.retention_deleted.labels("samples").inc(res.samples_deleted)
        self.metrics.retention_deleted.labels("events").inc(res.events_deleted)
        self.metrics.db_bytes.set(res.used_bytes)
        if self.audit is not None:
            if res.samples_deleted or res.events_deleted or res.batches_forgotten:
                self.audit.retention_deleted(res.samples_deleted, res.events_deleted, res.batches_forgotten)
            self.audit.apply_retention()
        if res.samples_deleted or res.events_deleted:
            log.info(
                "retention deleted %d samples and %d events (database now %d bytes)",
                res.samples_deleted, res.events_deleted, res.used_bytes,
            )

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sqlite.retention_interval_seconds)
            try:
                await self.run_retention()
            except Exception:  # keep serving; the next pass tries again
                log.exception("retention pass failed")

    def readiness(self) -> Answer:
        """/readyz: 200 once the sink is open and while storage takes writes."""
        if not self._ready:
            return Answer(503, {"status": "not_ready"})
        if self._storage_failed_since is not None:
            return Answer(503, {"status": "not_ready", "reason": "storage_unavailable"})
        return Answer(200, {"status": "ready"})

    # -- batches ------------------------------------------------------------------
    def _reject(self, e: Rejected) -> Answer:
        self.metrics.rejected.labels(e.reason).inc()
        if self.audit is not None:
            try:
                self.audit.batch_rejected(e.reason, e.status, e.detail)
            except OSError as err:  # the audit trail's disk is full too: not ready, probe (below)
                self._storage_failed(err)
        headers = {"Retry-After": "1"} if e.status == 503 else None
        # At most one log line per reason a minute: a flood of bad batches must not flood the log.
        now = time.monotonic()
        last, suppressed = self._log_state.get(e.reason, (-1e9, 0))
        if now - last >= 60:
            more = f" ({suppressed} more like it in the last minute, counted)" if suppressed else ""
            log.warning("batch refused: %s: %s%s", e.reason, e.detail, more)
            self._log_state[e.reason] = (now, 0)
        else:
            self._log_state[e.reason] = (last, suppressed + 1)
        return Answer(e.status, {"status": "rejected", "reason": e.reason, "detail": e.detail[:300]}, headers)

    async def accept(self, blob: bytes) -> Answer:
        """One whole batch body: checked, stored and counted; never raises for a bad batch."""
        self.metrics.bytes.inc(len(blob))
        # Only a complete body takes a slot for the CPU and storage work.
        if self._inflight >= self.cfg.limits.max_inflight:
            return self._reject(Rejected("busy", "too many batches in work"))
        self._inflight += 1
        self.metrics.inflight.set(self._inflight)
        try:
            return await self._process(blob)
        except Rejected as e:
            return self._reject(e)
        finally:
            self._inflight -= 1
            self.metrics.inflight.set(self._inflight)

    async def _decode(self, blob: bytes) -> Decoded:
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            try:
                return await loop.run_in_executor(self._pool, decode_in_worker, blob)
            except concurrent.futures.process.BrokenProcessPool:
                # A worker died (killed, out of memory): start a new pool, answer 503 so the agent retries.
                log.error("a decode worker process died; restarting the pool")
                self._pool = self._new_pool()
                raise Rejected("busy", "decode worker restarted; retry") from None
        return await loop.run_in_executor(self._threads, self.decoder.decode, blob)

    async def _process(self, blob: bytes) -> Answer:
        d = await self._decode(blob)
        known = await self.sink.lookup(d.agent_id, d.instance, d.seq)
        if known is not None:
            if known == d.hash:
                self.metrics.batches.labels(DUPLICATE).inc()
                return Answer(200, {"status": DUPLICATE})
            raise Rejected("replay", f"sequence {d.seq} was stored with other content")
        refused = self.series.admit(d.agent_id, d.series)
        if refused is not None:
            raise Rejected(*refused)
        self.metrics.active_series.set(self.series.active())
        if self._storage_failed_since is not None:
            self._storage_refused += 1
            raise Rejected("storage_unavailable", "the ingest cannot write its database now; retry later")
        if self.remote is not None and d.remote_write:
            await self._remote_write(d)
        t0 = time.perf_counter()
        try:
            result = await self.sink.store(d)
        except sqlite3.Error as e:
            # Disk full, I/O error, locked database: nothing was committed; the agent keeps the batch and retries.
            self._storage_failed(e)
            raise Rejected("storage_unavailable", "the ingest cannot write its database now; retry later") from None
        self.metrics.store_seconds.observe(time.perf_counter() - t0)
        if self._fault == "kill_after_commit" and result == STORED:
            os.kill(os.getpid(), signal.SIGKILL)
        if result == REPLAY:
            raise Rejected("replay", f"sequence {d.seq} was stored with other content")
        self.metrics.batches.labels(result).inc()
        if result == STORED:
            if self.audit is not None:
                try:
                    self.audit.batch_accepted(d.agent_id, d.instance, d.seq, d.hash, d.n_samples, d.n_events, [r.tenant for r in d.index])
                except OSError as err:
                    # Committed in SQLite (a retry would be "duplicate"), so still 200; but no more
                    # batches until the audit trail can write again.
                    log.error("batch %s/%d stored but not recorded in the audit trail: %s", d.agent_id[:16], d.seq, err)
                    self._storage_failed(err)
            for row in d.index:
                (self.metrics.samples if row.kind == SAMPLE else self.metrics.events).labels(row.tenant).inc(row.n)
        return Answer(200, {"status": result})

    def _storage_failed(self, e: sqlite3.Error | OSError) -> None:
        """Log once, go not-ready, and probe until a write succeeds (checkpointing the WAL first)."""
        self.metrics.storage_errors.inc()
        self._storage_refused += 1
        if self._storage_failed_since is not None:
            return
        self._storage_failed_since = time.monotonic()
        self.metrics.storage_ok.set(0)
        log.error(
            "cannot store batches (SQLite or the audit trail): %s; answering 503 storage_unavailable (agents keep their batches) "
            "and /readyz not ready until a probe write succeeds (every %g s)",
            e, STORAGE_PROBE_SECONDS,
        )
        self._storage_task = asyncio.get_running_loop().create_task(self._storage_probe_loop(), name="hostmon-ingest-storage-probe")

    async def _storage_probe_loop(self) -> None:
        while True:
            await asyncio.sleep(STORAGE_PROBE_SECONDS)
            try:
                await self.sink.probe()
                if self.audit is not None:
                    self.audit.checkpoint()  # the audit trail must take a write too
            except (sqlite3.Error, OSError):
                self.metrics.storage_errors.inc()
                continue
            assert self._storage_failed_since is not None
            log.info(
                "storage recovered after %.0f s (%d batches answered 503 meanwhile, the agents resend them)",
                time.monotonic() - self._storage_failed_since, self._storage_refused,
            )
            self._storage_failed_since = None
            self._storage_refused = 0
            self.metrics.storage_ok.set(1)
            self._storage_task = None
            with contextlib.suppress(Exception):
                self.metrics.db_bytes.set(await self.sink.used_bytes())
            return

    async def _remote_write(self, d: Decoded) -> None:
        from hostmond.ingest.remote_write import RemoteWriteError

        assert self.remote is not None
        for tenant, body in d.remote_write:
            try:
                await self.remote.write_body(body, tenant)
            except RemoteWriteError as e:
                if e.retryable:
                    self.metrics.rw_requests.labels("retryable_error").inc()
                    log.warning("remote write failed, agent will retry: %s", e)
                    raise Rejected("remote_write_unavailable", "the remote-write receiver is unavailable; retry later") from None
                self.metrics.rw_requests.labels("rejected").inc()
                self.metrics.rw_dropped.inc(d.n_samples if not tenant else sum(r.n for r in d.index if r.tenant == tenant and r.kind == SAMPLE))
                log.error("remote write receiver refused samples%s for good (kept in SQLite): %s", f" of tenant {tenant}" if tenant else "", e)
                continue
            self.metrics.rw_requests.labels("success").inc()


