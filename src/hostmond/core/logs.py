"""Structured logging: one JSON object per line on stderr.

Call sites pass context with ``extra={...}``; the formatter writes every extra
attribute as a field. Nothing in hostmon logs per sample or per process: loops
that may fail many times log the first failure and a summary (see
``LogOnce``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Hashable

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str = "info", stream=None) -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hostmon", False):
            root.removeHandler(h)
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter())
    h._hostmon = True  # type: ignore[attr-defined]
    root.addHandler(h)
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class LogOnce:
    """The one log-once helper: a repeating condition is logged once, and its end too.

    ``fail``/``ok`` track a condition per key (logged again when its message changes);
    ``once`` logs the first time a key is seen until ``forget(key)`` re-arms it.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last: dict[Hashable, str] = {}

    def fail(self, key: Hashable, message: str, **fields: object) -> None:
        if self._last.get(key) != message:
            self._last[key] = message
            self.logger.error(message, extra={"key": str(key), **fields})

    def ok(self, key: Hashable, message: str, **fields: object) -> None:
        if self._last.pop(key, None) is not None:
            self.logger.info(message, extra={"key": str(key), **fields})

    def once(self, key: Hashable, level: int, message: str, **fields: object) -> bool:
        """Log ``message`` at ``level`` unless ``key`` was logged already; True when it logged."""
        if key in self._last:
            return False
        self._last[key] = message
        self.logger.log(level, message, extra=fields)
        return True

    def forget(self, key: Hashable) -> None:
        """Re-arm ``key``: the next ``once``/``fail`` with it logs again."""
        self._last.pop(key, None)
