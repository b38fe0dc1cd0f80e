"""``compliance``: declarative host policies (CIS-mapped default), evaluated at a long interval.

``policy`` (format and validation, pure), ``checks`` (evaluators and parsers),
``host`` (all reads under rootfs/proc_root and the allow-listed commands),
``collector`` (the collector, its metrics and events). See docs/compliance.md.
"""

from __future__ import annotations

from hostmond.collectors.compliance.collector import ComplianceCollector, ComplianceConfig  # entry point compliance in pyproject.toml

__all__ = ["ComplianceCollector", "ComplianceConfig"]
