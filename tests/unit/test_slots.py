"""The dispatcher's resizable limit of jobs in flight."""

from __future__ import annotations

import asyncio

from service.jobs.slots import Slots


def test_growing_the_limit_lets_a_waiter_in_and_shrinking_waits_for_holders() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        slots.resize(2)  # the Ray app gained a replica
        await asyncio.wait_for(waiter, 1)
        assert slots.held == 2
        slots.resize(1)  # it lost one: the two holders finish, the next acquire waits until one has
        third = asyncio.ensure_future(slots.acquire())
        slots.release()
        await asyncio.sleep(0.01)
        assert not third.done() and slots.held == 1
        slots.release()
        await asyncio.wait_for(third, 1)
        assert slots.held == 1

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_no_trace() -> None:
    async def scenario() -> None:
        slots = Slots(1)
        await slots.acquire()
        waiter = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        slots.release()
        assert slots.held == 0 and not slots._waiters

    asyncio.run(scenario())
