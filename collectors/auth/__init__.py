"""Failed-login collector: journald, auth.log/secure and btmp, with brute-force detection.

Modules: ``parse`` (pure parser), ``timestamps``, ``tail`` (text files through
rotation), ``btmp``, ``journal``, ``bruteforce`` (bounded sliding windows),
``collector`` (the ``auth`` collector). See docs/auth-parsing.md.
"""

from __future__ import annotations

from collectors.auth.collector import AuthCollector, AuthConfig  # registered with @agent.registry.register

__all__ = ["AuthCollector", "AuthConfig"]
