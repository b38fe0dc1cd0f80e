"""Structured logging on stderr: one JSON object per line, or logfmt (``log_format``).

logfmt is node_exporter's format (``ts=... level=info msg="..." key=value``),
for a drop-in whose log pipeline already parses it.

Call sites pass context with ``extra={...}``; the formatter writes every extra
attribute as a field. Nothing in hostmon logs per sample or per process: loops
that may fail many times log the first failure and a summary (see
``LogOnce``).
"""

from __future__ import annotations

import json
import logging
import re
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


def _logfmt_value(v: object) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, (int, float)) else str(v)
    if s == "" or any(c in s for c in ' ="\\') or any(ord(c) < 32 for c in s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
    return s


_KEY_BAD = re.compile(r"[^A-Za-z0-9_.:-]")


class LogfmtFormatter(logging.Formatter):
    """``ts=2026-01-01T00:00:00.000Z level=info logger=hostmon.runtime msg="..." k=v``, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"logger={_logfmt_value(record.name)}", f"msg={_logfmt_value(record.getMessage())}"]
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                parts.append(f"{_KEY_BAD.sub('_', k) or '_'}={_logfmt_value(v)}")
        if record.exc_info:
            parts.append(f"exc={_logfmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


FORMATTERS: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "logfmt": LogfmtFormatter}


def setup(level: str = "info", stream=None, fmt: str = "json") -> None:  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_hostmon", False):
            root.removeHandler(h)
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(FORMATTERS[fmt]())
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
