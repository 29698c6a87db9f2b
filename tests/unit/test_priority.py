"""The Ray app's priority semaphore (service/inference/priority.py): lowest rank first, then first come;
a unit granted to a waiter that was cancelled meanwhile goes to the next one."""

from __future__ import annotations

import asyncio

from service.inference.priority import LANE_PRIORITY, PrioritySemaphore


def test_waiters_are_served_by_rank_then_arrival() -> None:
    async def main() -> list[str]:
        sem = PrioritySemaphore(1)
        await sem.acquire()
        served: list[str] = []

        async def waiter(name: str, rank: object) -> None:
            await sem.acquire(rank)
            served.append(name)

        tasks = []
        for name, rank in [("bulk-a", (1, 0)), ("bulk-b-second-window", (1, 1)), ("bulk-c", (1, 0))]:
            tasks.append(asyncio.create_task(waiter(name, rank)))
            await asyncio.sleep(0)
        tasks.append(asyncio.create_task(waiter("interactive", (0, 5))))
        await asyncio.sleep(0)
        for _ in tasks:
            sem.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return served

    assert asyncio.run(main()) == ["interactive", "bulk-a", "bulk-c", "bulk-b-second-window"]
    assert LANE_PRIORITY["interactive"] < LANE_PRIORITY["bulk"]


def test_a_cancelled_waiter_never_keeps_a_unit() -> None:
    async def main() -> tuple[bool, bool]:
        sem = PrioritySemaphore(1)
        await sem.acquire()
        gone = asyncio.create_task(sem.acquire(0))
        later = asyncio.create_task(sem.acquire(1))
        await asyncio.sleep(0)
        sem.release()  # granted to `gone`...
        gone.cancel()  # ...which is cancelled before it runs: the unit passes to `later`
        await asyncio.sleep(0)
        await asyncio.wait_for(later, 1)
        waiting = asyncio.create_task(sem.acquire(0))  # nothing left: waits
        await asyncio.sleep(0)
        blocked = not waiting.done()
        waiting.cancel()
        sem.release()
        return blocked, sem.locked()

    blocked, locked = asyncio.run(main())
    assert blocked and not locked  # one unit, back after the last release


def test_interactive_files_take_the_decoders_reserve_when_bulk_files_hold_every_slot() -> None:
    """The Decoder's decode slots (`Decoder._decode_slot`): DECODE_CONCURRENCY shared slots, plus a reserve only
    interactive jobs take, at once, when every shared slot is held."""
    from types import SimpleNamespace

    from service.inference import deployment

    decode_slot = deployment.Decoder.func_or_class._decode_slot
    bulk, interactive = LANE_PRIORITY["bulk"], LANE_PRIORITY["interactive"]

    async def main() -> list[str]:
        decoder = SimpleNamespace(_slots=PrioritySemaphore(1), _interactive_slots=PrioritySemaphore(1))
        first = await decode_slot(decoder, bulk)  # the only shared slot: a long bulk file
        reserved = await asyncio.wait_for(decode_slot(decoder, interactive), 1)  # at once, from the reserve
        waiting_bulk = asyncio.create_task(decode_slot(decoder, bulk))
        waiting_short = asyncio.create_task(decode_slot(decoder, interactive))  # reserve used up: waits, first
        await asyncio.sleep(0)
        assert not waiting_bulk.done() and not waiting_short.done()
        first.release()
        got = await asyncio.wait_for(waiting_short, 1)
        assert not waiting_bulk.done()
        got.release()
        await asyncio.wait_for(waiting_bulk, 1)
        return [
            "shared" if first is decoder._slots else "reserve",
            "shared" if reserved is decoder._slots else "reserve",
            "shared" if got is decoder._slots else "reserve",
        ]

    assert asyncio.run(main()) == ["shared", "reserve", "shared"]
