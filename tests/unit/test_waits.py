"""`service/waits.py`: a wait on an event never swallows a cancellation, and a task that swallowed one is still
stopped (the gateway's lifespan hung on a dispatcher loop that had)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from service.waits import cancel_and_wait, wait_event


async def _cancelled_as_the_event_is_set(wait: object) -> asyncio.Task[object]:
    """A task waiting through `wait(event)`, cancelled in the same loop turn as its event is set."""
    event = asyncio.Event()
    task: asyncio.Task[object] = asyncio.create_task(wait(event))  # type: ignore[operator]
    await asyncio.sleep(0.01)  # the task is waiting
    event.set()
    await asyncio.sleep(0)  # the event's waiter is done; the task has not run yet
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return task


def test_a_cancellation_that_arrives_with_the_event_is_kept() -> None:
    task = asyncio.run(_cancelled_as_the_event_is_set(lambda event: wait_event(event, 10)))
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps cancellations from Python 3.12")
def test_asyncio_wait_for_swallows_that_cancellation_before_python_3_12() -> None:
    """Why wait_event exists: the same race through asyncio.wait_for ends the task as if not cancelled."""

    async def with_wait_for(event: asyncio.Event) -> bool:
        return await asyncio.wait_for(event.wait(), 10)

    task = asyncio.run(_cancelled_as_the_event_is_set(with_wait_for))
    assert not task.cancelled() and task.result() is True


def test_wait_event_answers_set_and_timeout() -> None:
    async def run() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        event.set()
        return timed_out, await wait_event(event, 0.01)

    assert asyncio.run(run()) == (False, True)


def test_a_task_that_swallows_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    async def run() -> int:
        swallowed = 0

        async def stubborn() -> None:
            nonlocal swallowed
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    swallowed += 1
                    if swallowed > 1:
                        raise

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(cancel_and_wait(task, retry_s=0.05), 5)
        assert task.cancelled()
        return swallowed

    assert asyncio.run(run()) == 2
