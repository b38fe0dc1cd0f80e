"""Shared helpers for the ingest tests: keys, configs, sealed batches, a real ingest process."""

from __future__ import annotations

import dataclasses
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hostmond.ingest.query import query_samples
from hostmond.ingest.sqlite_sink import counts

from hostmond.core import keys as keymod
from hostmond.core import wire

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class KeySet:
    dir: Path
    agent: keymod.PrivateKey
    agent_pub_path: str
    ingest: keymod.PrivateKey
    ingest_key_path: str
    ingest_pub_path: str

    @property
    def agent_id(self) -> str:
        return self.agent.key_id


def make_keys(d: Path, suite: str = keymod.X25519, agent_name: str = "agent") -> KeySet:
    d.mkdir(parents=True, exist_ok=True)
    a = keymod.generate_agent_identity(d, agent_name) if not (d / f"{agent_name}.key").exists() else None
    i = keymod.generate_ingest_keypair(d, suite, name=f"ingest-{suite}") if not (d / f"ingest-{suite}.key").exists() else None
    apriv = keymod.load_private_key(d / f"{agent_name}.key")
    ipriv = keymod.load_private_key(d / f"ingest-{suite}.key")
    del a, i
    return KeySet(d, apriv, str(d / f"{agent_name}.pub"), ipriv, str(d / f"ingest-{suite}.key"), str(d / f"ingest-{suite}.pub"))


def write_config(
    d: Path,
    keys: KeySet | Sequence[KeySet],
    tenants: Sequence[str] = ("acme",),
    *,
    listen: str = "127.0.0.1:0",
    extra: str = "",
    limits: str = "",
    sqlite: str = "",
    private_keys: Sequence[str] | None = None,
    web: str | None = None,
    db: Path | None = None,
) -> Path:
    """An ingest config in ``d``. ``extra`` goes at the top level; ``web`` is the body of a ``[web]`` table
    (sub-tables like ``[web.tls_server_config]`` may follow in it). With ``web=None`` the rate limit is off:
    these tests and bench/ingest_bench.py fire many batches from 127.0.0.1 on purpose; the tests of the
    rate limit (test_ingest_tls.py) pass their own ``web``."""
    ks = [keys] if isinstance(keys, KeySet) else list(keys)
    pk = private_keys if private_keys is not None else sorted({k.ingest_key_path for k in ks})
    lines = [f'listen = "{listen}"', "private_keys = [" + ", ".join(f'"{p}"' for p in pk) + "]", extra]
    seen = set()
    for k in ks:
        if k.agent_id in seen:
            continue
        seen.add(k.agent_id)
        lines += ["[[agents]]", f'public_key = "{k.agent_pub_path}"', "tenants = [" + ", ".join(f'"{t}"' for t in tenants) + "]"]
    lines += ["[limits]", limits, "[sqlite]", f'path = "{db or d / "ingest.db"}"', sqlite]
    lines += ["[web]", "[web.rate_limit]\nrequests_per_second = 0" if web is None else web]
    p = d / "ingest.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def sample_records(n: int, tenant: str = "acme", t0: float | None = None, seq: int = 0, name: str = "node_load1") -> list[dict[str, Any]]:
    t = time.time() if t0 is None else t0
    return [
        {"s": name, "k": "gauge", "v": float(seq * 100000 + i), "l": {"tenant_id": tenant, "host": "h1", "i": str(i)}, "t": t + i * 0.001}
        for i in range(n)
    ]


def event_records(n: int, tenant: str = "acme", t0: float | None = None) -> list[dict[str, Any]]:
    t = time.time() if t0 is None else t0
    return [
        {"e": "auth_failure", "t": t + i, "f": {"user": f"u{i}", "ip": "10.0.0.1"}, "l": {"tenant_id": tenant, "host": "h1"}}
        for i in range(n)
    ]


def seal(
    keys: KeySet,
    seq: int,
    records: list[dict[str, Any]],
    *,
    tenants: Sequence[str] | None = None,
    created: float | None = None,
    key_id: str | None = None,
    n_samples: int | None = None,
    n_events: int | None = None,
    instance: str = "",
) -> bytes:
    ns = sum(1 for r in records if isinstance(r, dict) and "s" in r) if n_samples is None else n_samples
    ne = (len(records) - ns) if n_events is None else n_events
    tn = tuple(tenants) if tenants is not None else wire.tenants_of(records)
    header = wire.BatchHeader(
        wire.FORMAT_VERSION,
        keys.ingest.alg,
        key_id or keys.ingest.key_id,
        keys.agent_id,
        tn,
        seq,
        time.time() if created is None else created,
        ns,
        ne,
        instance,
    )
    return wire.seal(header, records, keys.agent, keys.ingest.public)


def db_counts(path: str | Path) -> dict[str, int]:
    """batches (dedupe records), blocks, samples, events stored; all zero when no database yet."""
    if not Path(path).exists():
        return {"batches": 0, "blocks": 0, "samples": 0, "events": 0}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return counts(conn)
    finally:
        conn.close()


def all_samples(path: str | Path, tenant: str = "acme") -> list[tuple[str, tuple[tuple[str, str], ...], float, float]]:
    """Every stored sample of ``tenant`` as (name, sorted labels, value, ts), in time order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(r["name"], tuple(sorted(r["labels"].items())), r["value"], r["timestamp"]) for r in query_samples(conn, tenant)]
    finally:
        conn.close()


class IngestProcess:
    """``hostmon ingest run --config FILE`` (python -m hostmond.cli) as a real subprocess."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, log: Path | None = None, nofile: int | None = None) -> None:
        self.config = config
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the ingest process
        self.env = {**os.environ, **(env or {})}
        self.log = log or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20.0) -> str:
        self._logf = open(self.log, "ab")
        # prlimit (util-linux) sets the fd limit of the new process only
        limit = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] if self.nofile else []
        self.proc = subprocess.Popen(
            [*limit, sys.executable, "-m", "hostmond.cli", "ingest", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=self._logf,
            env=self.env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"listening on (\S+)\n", buf)
                if m:
                    self.url = m.group(1).decode()
                    return self.url
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"ingest did not start: {buf!r} {self.log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if getattr(self, "_logf", None) is not None:
            self._logf.close()
