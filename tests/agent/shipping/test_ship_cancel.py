"""Stopping never hangs on a lost cancellation.

Python 3.11's ``asyncio.wait_for`` returns the awaited result instead of raising
``CancelledError`` when the result arrives in the same loop iteration as the
cancel (CPython gh-86296). The shipper's send loop awaited the sender's
``wait_for``: a stop that cancelled it at that moment waited for ever (a CI run
hung in ``test_stop_while_a_batch_is_being_sealed_loses_nothing``).
"""

from __future__ import annotations

import asyncio
import socket

from hostmond.agent.shipping import sender as snd

from hostmond.core.aio import cancel_and_wait


def refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: every connect is refused at once
    return f"http://127.0.0.1:{port}"


async def test_a_send_cancelled_at_any_moment_ends_cancelled() -> None:
    """Cancel a loop of sends to a refused port at many points of an attempt; every cancel must end it.

    Each attempt finishes within microseconds in a worker thread, so some cancels land in the
    iteration where its result arrives; with wait_for about 1 in 60 of them was lost."""
    sender = snd.Sender(refused_url(), request_timeout=5.0)
    lost = 0
    trials = 0
    try:
        for delay in range(12):
            for spins in range(25):
                async def sends() -> None:
                    while True:
                        await sender.send(b"x" * 64, 1)

                task = asyncio.create_task(sends())
                await asyncio.sleep(0.0002 * delay)
                for _ in range(spins):
                    await asyncio.sleep(0)
                task.cancel()
                done, _ = await asyncio.wait((task,), timeout=2.0)
                trials += 1
                if not done:
                    lost += 1
                    await cancel_and_wait(task)
                else:
                    assert task.cancelled()
    finally:
        await sender.close()
    assert trials == 300
    assert lost == 0, f"{lost} of {trials} cancellations were lost"


async def test_cancel_and_wait_cancels_again_a_task_that_lost_its_cancel() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:  # what a lost cancellation looks like from outside
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await cancel_and_wait(task, recancel_after=0.05)
    assert task.cancelled()
    assert swallowed == 1
    assert loop.time() - t0 < 1.0
    await cancel_and_wait(task)  # an ended task: returns at once
    await cancel_and_wait(None)
