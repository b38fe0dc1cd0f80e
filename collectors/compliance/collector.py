"""``compliance``: evaluates declarative policies (the built-in default and the operator's) once an hour.

Each check's verdict becomes ``hostmon_compliance_check{policy,check,severity}``
(1 pass, 0 fail; checks that do not apply or could not be decided have no
series and are counted in ``hostmon_compliance_checks{policy,result}``). A
change of a check's result emits a ``compliance`` event with the evidence and
the remediation; the last results live in the collector's state file, so a
restart does not repeat events. See ``docs/compliance.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from hostmond.collectors.compliance.checks import ERROR, FAIL, NOT_APPLICABLE, PASS, STATUSES, evaluate, os_families
from hostmond.collectors.compliance.host import ALLOWED_COMMANDS, HostView
from hostmond.collectors.compliance.policy import Policy, default_policy_path, load_policy

from hostmond.api import GAUGE, Collector, CollectorConfig, CollectorContext, Event, MetricSpec, Sample, field


def _check_commands(v: list[str]) -> None:
    bad = [c for c in v if c not in ALLOWED_COMMANDS]
    if bad:
        raise ValueError(f"unknown command {bad[0]!r} (allowed: {', '.join(ALLOWED_COMMANDS)})")


@dataclass
class ComplianceConfig(CollectorConfig):
    interval: float | None = field(3600.0, "Seconds between evaluations of the policies (one run reads a few hundred files and walks the scanned trees).")
    timeout: float | None = field(300.0, "Seconds one evaluation may take before it is abandoned.")
    default_policy: bool = field(True, "Evaluate the built-in default policy (docs/compliance.md lists its checks).")
    policies: list[str] = field([], "Further policy files (TOML, format in docs/compliance.md) evaluated beside the default one.")
    skip_checks: list[str] = field([], "Checks not evaluated, as 'policy.check' or a bare check id (for every policy).")
    commands: list[str] = field(
        [],
        "Allow-listed commands that 'command' checks may run (fixed arguments, no shell), e.g. nft_ruleset; none by default.",
        check=_check_commands,
    )
    command_timeout: float = field(10.0, "Seconds an allowed command may run.")


class ComplianceCollector(Collector[ComplianceConfig]):
    name = "compliance"
    default_enabled = False  # walks /usr and /etc: opt in (docs/compliance.md)
    config_class = ComplianceConfig
    metrics = (
        MetricSpec(
            "hostmon_compliance_check",
            GAUGE,
            "Result of one compliance check: 1 pass, 0 fail (no series when it does not apply or could not be decided).",
            ("policy", "check", "severity"),
        ),
        MetricSpec(
            "hostmon_compliance_checks",
            GAUGE,
            "Checks of a policy by result of the last run (pass, fail, not_applicable, error).",
            ("policy", "result"),
        ),
        MetricSpec("hostmon_compliance_score", GAUGE, "Share of a policy's decided checks that pass (pass / (pass + fail)), 0 to 1.", ("policy",)),
        MetricSpec("hostmon_compliance_run_duration_seconds", GAUGE, "Seconds the last evaluation of a policy took.", ("policy",), "seconds"),
        MetricSpec("hostmon_compliance_scanned_entries", GAUGE, "Directory entries the last evaluation of a policy walked (bounded by each check's max_entries).", ("policy",)),
        MetricSpec("hostmon_compliance_last_run_timestamp_seconds", GAUGE, "When the policies were last evaluated, in unixtime.", (), "seconds"),
    )

    def __init__(self, config: ComplianceConfig, ctx: CollectorContext) -> None:
        super().__init__(config, ctx)
        paths = ([default_policy_path()] if self.config.default_policy else []) + list(self.config.policies)
        self.policies: list[Policy] = [load_policy(p) for p in paths]  # a bad policy fails construction (and a reload)
        names = [p.name for p in self.policies]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"two policies are named {min(dup)!r}; policy names must be unique")
        self._last: dict[str, str] | None = None
        self._cancel = threading.Event()

    def start(self) -> None:
        saved = self.ctx.state.load().get("results")
        self._last = dict(saved) if isinstance(saved, dict) else {}

    def stop(self) -> None:
        self._cancel.set()  # a tree walk still running in its worker thread ends at its next directory

    def _skipped(self, policy: str, check: str) -> bool:
        s = self.config.skip_checks
        return check in s or f"{policy}.{check}" in s

    def collect(self) -> Iterator[Sample | Event]:
        if self._last is None:
            self.start()
        assert self._last is not None
        host = HostView(self.ctx.rootfs, self.ctx.proc_root, tuple(self.config.commands), self.config.command_timeout, self._cancel)
        families = os_families(host.read_text("/etc/os-release") or host.read_text("/usr/lib/os-release"))
        now = time.time()
        out: list[Sample | Event] = []
        results: dict[str, str] = {}
        for policy in self.policies:
            t0 = time.monotonic()
            scanned0 = host.entries_scanned
            counts = dict.fromkeys(STATUSES, 0)
            for check in policy.checks:
                if self._skipped(policy.name, check.id):
                    counts[NOT_APPLICABLE] += 1
                    continue
                r = evaluate(check, host, families)
                counts[r.status] += 1
                key = f"{policy.name}.{check.id}"
                results[key] = r.status
                if r.status in (PASS, FAIL):
                    out.append(self.sample("hostmon_compliance_check", 1 if r.status == PASS else 0,
                                           {"policy": policy.name, "check": check.id, "severity": check.severity}))
                prev = self._last.get(key)
                if prev != r.status and (prev is not None or r.status in (FAIL, ERROR)):
                    out.append(Event("compliance", now, {
                        "policy": policy.name,
                        "check": check.id,
                        "title": check.title,
                        "severity": check.severity,
                        "cis": check.cis,
                        "cis_title": check.cis_title,
                        "result": r.status,
                        "previous": prev or "",
                        "evidence": r.evidence,
                        "remediation": check.remediation,
                    }))
                if r.status == ERROR:
                    self.partial_error("check_undecided")
            for status, n in counts.items():
                out.append(self.sample("hostmon_compliance_checks", n, {"policy": policy.name, "result": status}))
            decided = counts[PASS] + counts[FAIL]
            out.append(self.sample("hostmon_compliance_score", counts[PASS] / decided if decided else 1.0, {"policy": policy.name}))
            out.append(self.sample("hostmon_compliance_run_duration_seconds", time.monotonic() - t0, {"policy": policy.name}))
            out.append(self.sample("hostmon_compliance_scanned_entries", host.entries_scanned - scanned0, {"policy": policy.name}))
        out.append(self.sample("hostmon_compliance_last_run_timestamp_seconds", now))
        self._last = results
        self.ctx.state.save({"results": results})
        yield from out

    def last_results(self) -> dict[str, str]:
        return dict(self._last or {})
