"""Series (cardinality) limits per agent and per tenant.

A series is a sample name with its full label set (tenant included); the
decoder gives each distinct series of a batch a stable 64-bit id
(:func:`ingest.decode.check_records`). A series is *active* until it has not been
seen for ``window`` seconds. A batch that would take an agent past
``max_per_agent`` active series, or a tenant past ``max_per_tenant``, is refused
whole (422 ``agent_series_limit`` / ``tenant_series_limit``: the agent drops it
and counts it; retrying could not help) and nothing of it is remembered. Series
already active never count again, so an agent at its limit still delivers
every batch of the series it had.

Series ids are 8-byte digests (:func:`ingest.decode.check_records` sends them
concatenated per tenant). The ids live in memory (about 200 bytes a series, counted once for its agent and once for its tenant): a restart of the ingest
forgets them, which only lets in up to one window of series again. Memory is
bounded by the limits: at most ``max_per_agent`` per enrolled agent.
"""

from __future__ import annotations

import time


class SeriesLimiter:
    def __init__(self, max_per_agent: int, max_per_tenant: int, window: float) -> None:
        self.max_per_agent = max_per_agent
        self.max_per_tenant = max_per_tenant
        self.window = window
        self._agents: dict[str, dict[bytes, float]] = {}  # agent id -> series id -> last seen
        self._tenants: dict[str, dict[bytes, float]] = {}
        self._last_prune = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.max_per_agent > 0 or self.max_per_tenant > 0

    def admit(self, agent_id: str, packed: dict[str, bytes], now: float | None = None) -> tuple[str, str] | None:
        """Record the batch's series, or return (reason, detail) when it would pass a limit."""
        if not self.enabled or not packed:
            return None
        series = {t: [b[i : i + 8] for i in range(0, len(b), 8)] for t, b in packed.items()}
        now = time.monotonic() if now is None else now
        if now - self._last_prune > min(60.0, self.window / 4):
            self.prune(now)
        mine = self._agents.get(agent_id, {})
        if self.max_per_agent > 0:
            new = sum(1 for ids in series.values() for i in ids if i not in mine)
            if new and len(mine) + new > self.max_per_agent:
                return (
                    "agent_series_limit",
                    (
                        f"{new} new series would take this agent to {len(mine) + new} active series; "
                        f"the limit is {self.max_per_agent} (limits.max_series_per_agent)"
                    ),
                )
        if self.max_per_tenant > 0:
            for tenant, ids in series.items():
                known = self._tenants.get(tenant, {})
                new = sum(1 for i in ids if i not in known)
                if new and len(known) + new > self.max_per_tenant:
                    return (
                        "tenant_series_limit",
                        (
                            f"{new} new series would take tenant {tenant[:64]} to {len(known) + new} active series; "
                            f"the limit is {self.max_per_tenant} (limits.max_series_per_tenant)"
                        ),
                    )
        mine = self._agents.setdefault(agent_id, mine)
        for tenant, ids in series.items():
            known = self._tenants.setdefault(tenant, {})
            for i in ids:
                mine[i] = now
                known[i] = now
        return None

    def prune(self, now: float | None = None) -> int:
        """Forget series not seen within the window; returns the active series of all tenants."""
        now = time.monotonic() if now is None else now
        self._last_prune = now
        cut = now - self.window
        for table in (self._agents, self._tenants):
            for key in list(table):
                ids = table[key]
                stale = [i for i, t in ids.items() if t < cut]
                for i in stale:
                    del ids[i]
                if not ids:
                    del table[key]
        return self.active()

    def active(self) -> int:
        return sum(len(ids) for ids in self._tenants.values())
