"""Small asyncio helpers that shutdown paths rely on.

Python 3.11's ``asyncio.wait_for`` loses a cancellation when the awaited future
finishes in the same loop iteration as the ``cancel()`` (CPython gh-86296, fixed
in 3.12): it returns the result instead of raising ``CancelledError``. A loop
task cancelled by a ``stop()`` at that moment goes on running, and a stop that
awaits it waits for ever. So the agent uses ``asyncio.timeout()`` instead of
``wait_for``, and shutdown paths cancel with :func:`cancel_and_wait`, which
cancels again for as long as the task has not ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("hostmon.aio")

RECANCEL_AFTER = 0.5  # seconds a cancelled task gets to end before it is cancelled again


async def cancel_and_wait(task: asyncio.Future[Any] | None, recancel_after: float = RECANCEL_AFTER) -> None:
    """Cancel ``task`` and return once it has ended, whatever it raised.

    A task that ignores or loses a cancellation is cancelled again every
    ``recancel_after`` seconds (and a warning says so once). If the caller
    itself is cancelled meanwhile, that cancellation propagates as usual.
    """
    if task is None:
        return
    warned = False
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=recancel_after)
        if not task.done() and not warned:
            warned = True
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.warning("a task did not end when cancelled; cancelling it again", extra={"task": name})
    consume(task)


def consume(fut: Any) -> None:
    """Mark a finished future's exception as retrieved (no 'exception was never retrieved' noise),
    or do so when it finishes."""
    if fut.done():
        if not fut.cancelled():
            with contextlib.suppress(BaseException):
                fut.exception()
    else:
        fut.add_done_callback(consume)
