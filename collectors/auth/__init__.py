"""Failed-login collector: journald, auth.log/secure and btmp, with brute-force detection.

Modules: ``parse`` (pure parser), ``timestamps``, ``tail`` (text files through
rotation), ``btmp``, ``journal``, ``bruteforce`` (bounded sliding windows),
``collector`` (the ``auth`` collector). See docs/auth-parsing.md.
"""

from __future__ import annotations

from hostmond.collectors.auth.collector import (  # found through the hostmon.collectors entry point 'auth'
    AuthCollector,
    AuthConfig,
)

__all__ = ["AuthCollector", "AuthConfig"]
