"""Waiting on an asyncio event with a time limit, without losing a cancellation.

Python 3.11's `asyncio.wait_for` returns the awaited result when the task is cancelled in the same loop turn as
that result arrives, swallowing the cancellation (https://github.com/python/cpython/issues/86296, fixed in 3.12).
A loop that waits on a wake-up event with `wait_for` and is then cancelled at shutdown can thus keep running, and
whoever awaits its end waits forever: the gateway's lifespan hung that way in a test, when the dispatcher's wait
returned on a wake-up left set in the very turn its cancellation arrived.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False after `timeout` seconds; a cancellation always propagates."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
    return bool(done)


async def cancel_and_wait(task: asyncio.Task[None], retry_s: float = 1.0) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `retry_s` while it runs on (it
    swallowed a cancellation); its own exception, if any, is raised here, its cancellation is not."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_s)
    if not task.cancelled():
        task.result()
