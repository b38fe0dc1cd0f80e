"""A small sd_notify(3) client with no dependency.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` set to the path
of a unix datagram socket (or an abstract socket, written with a leading
``@``). The service reports its state by sending newline-separated
``KEY=VALUE`` assignments to it:

* ``READY=1``     start-up finished (hostmon: after its first full collection);
* ``STATUS=...``  a one-line summary shown by ``systemctl status``;
* ``STOPPING=1``  shutdown began;
* ``WATCHDOG=1``  keep-alive, expected at least every ``WATCHDOG_USEC``.

With ``NOTIFY_SOCKET`` unset (run by hand, in a container) every call is a
no-op, so callers never need to check.

:func:`run_watchdog` is the keep-alive loop. It runs as a task on the agent's
event loop, so a stalled loop stops the pings by itself, and it also asks a
``healthy()`` callable (the runtime's "are my collector loops alive?") before
each ping: when either fails, systemd kills and restarts the service after
``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "run_watchdog"]

log = logging.getLogger(__name__)


def _socket_address(value: str) -> str | bytes:
    """Turn a NOTIFY_SOCKET value into an address for ``socket.sendto``."""
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@'.
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """Sends state notifications to systemd (or does nothing when not under systemd)."""

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
    ) -> None:
        self._address: str | bytes | None = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is enabled only when ``WATCHDOG_USEC`` is a positive
        integer and ``WATCHDOG_PID`` is unset or equals this process's pid (as
        sd_watchdog_enabled(3) does: the variables may have been inherited from
        a parent that systemd watches, not us).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
                usec = None
            pid = env.get("WATCHDOG_PID", "")
            if usec is not None and pid:
                try:
                    if int(pid) != os.getpid():
                        usec = None
                except ValueError:
                    log.warning("ignoring WATCHDOG_PID=%r: not an integer", pid)
                    usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        """True when NOTIFY_SOCKET was set (messages are actually sent)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; returns whether it was sent.

        Errors (socket gone, systemd not listening) are logged once and never
        raised: a monitoring agent must not die because its supervisor is away.
        """
        if self._address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self._address, exc)
                self._warned = True
            return False
        return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        # STATUS is one line; a newline would start a new assignment.
        line = " ".join(text.split())
        return self.notify(f"STATUS={line[:512]}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half of WATCHDOG_USEC), or None when no watchdog."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000 / 2

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


async def run_watchdog(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Send WATCHDOG=1 every half-interval while ``healthy()`` is true.

    Returns at once when the watchdog is disabled. Runs until cancelled. As a
    coroutine on the event loop it pings only when the loop gets to run it: a
    loop blocked by synchronous work sends nothing, and systemd restarts the
    service once ``WatchdogSec`` passes without a ping. A ``healthy()`` that
    raises counts as unhealthy.
    """
    interval = notifier.watchdog_interval()
    if interval is None or not notifier.enabled:
        return
    was_healthy = True
    while True:
        try:
            ok = bool(healthy())
        except Exception:
            log.exception("watchdog health check raised; withholding WATCHDOG=1")
            ok = False
        if ok:
            notifier.watchdog()
        elif was_healthy:
            log.warning("agent unhealthy: withholding WATCHDOG=1 (systemd restarts the service after WatchdogSec)")
        was_healthy = ok
        await asyncio.sleep(interval)
