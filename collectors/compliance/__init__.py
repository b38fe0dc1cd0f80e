"""``compliance``: declarative host policies (CIS-mapped default), evaluated at a long interval.

``policy`` (format and validation, pure), ``checks`` (evaluators and parsers),
``host`` (all reads under rootfs/proc_root and the allow-listed commands),
``collector`` (the collector, its metrics and events). See docs/compliance.md.
"""

from __future__ import annotations

from collectors.compliance.collector import ComplianceCollector, ComplianceConfig  # registered with @agent.registry.register

__all__ = ["ComplianceCollector", "ComplianceConfig"]
