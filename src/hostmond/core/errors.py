"""hostmon's exceptions, one tree::

    HostmonError                  base of everything hostmon raises on purpose
    ├── ConfigError               a config file or environment variable is wrong:
    │                             carries file, key and reason ("FILE: KEY: REASON")
    ├── PluginError               a collector plugin could not be loaded or configured;
    │                             carries where (module or entry point) and reason
    ├── KeyFileError              a key file is missing, malformed, or readable by
    │                             group/others (refused like ssh does)
    └── ShippingError             base of batch sealing/sending problems
        ├── SealError             a batch could not be built or opened (bad format,
        │                         bad signature, bad ciphertext); ``reason`` is a
        │                         fixed token counted in self-metrics
        └── SpoolError            the spool directory cannot be used

Collectors raise ``hostmond.api.CollectorUnavailable`` for "no data here", which is
not an error.
"""

from __future__ import annotations


class HostmonError(Exception):
    """Base class of hostmon's own errors."""


class ConfigError(HostmonError):
    """A bad config value. ``str()`` reads ``FILE: KEY: REASON``."""

    def __init__(self, file: str | None, key: str, reason: str) -> None:
        self.file = file or "<config>"
        self.key = key
        self.reason = reason
        super().__init__(f"{self.file}: {key}: {reason}" if key else f"{self.file}: {reason}")


class PluginError(HostmonError):
    """A plugin that failed to import or to configure; it is skipped, the agent runs on."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"plugin {where}: {reason}")


class KeyFileError(HostmonError):
    """A key file that cannot be used (missing, malformed, too open)."""


class ShippingError(HostmonError):
    """Base of shipping errors."""


class SealError(ShippingError):
    """A batch that cannot be sealed or opened. ``reason`` is a short fixed token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SpoolError(ShippingError):
    """The spool directory cannot be used."""
