"""The window batcher: batches form when the engine is free, per key, bounded, and errors reach callers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.inference.batcher import Batcher


class Engine:
    """A stand-in model call that records each batch it gets and takes `seconds` per call."""

    def __init__(self, seconds: float = 0.0, fail_on: str | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.calls: list[tuple[str, list[int]]] = []
        self.started = threading.Event()

    def __call__(self, key: str, items: list[int]) -> list[int]:
        self.calls.append((key, list(items)))
        self.started.set()
        time.sleep(self.seconds)
        if self.fail_on == key:
            raise RuntimeError("engine fault")
        return [i * 10 for i in items]


def run(coro):
    return asyncio.run(coro)


async def keep_busy(batcher: Batcher, engine: Engine, key: str = "en") -> asyncio.Task:
    """Submit item 0 and return once the engine is working on it (its task, to await later)."""
    first = asyncio.create_task(batcher.submit(key, 0))
    await asyncio.to_thread(engine.started.wait, 5)
    return first


def test_items_arriving_while_the_engine_is_busy_form_the_next_batch() -> None:
    engine = Engine(seconds=0.3)

    async def main() -> list[int]:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.01, max_wait_s=0.02)
        first = await keep_busy(batcher, engine)
        rest = [asyncio.create_task(batcher.submit("en", i)) for i in range(1, 11)]
        return await asyncio.gather(first, *rest)

    assert run(main()) == [i * 10 for i in range(11)]
    assert [items for _, items in engine.calls] == [[0], list(range(1, 11))]


def test_a_burst_arriving_a_little_apart_lands_in_one_batch() -> None:
    engine = Engine()

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.2, max_wait_s=5)
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(batcher.submit("en", i)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        assert (batcher.batches, batcher.items) == (1, 5)

    run(main())
    assert [items for _, items in engine.calls] == [[0, 1, 2, 3, 4]]


def test_a_lone_item_runs_after_the_quiet_time_not_the_longest_wait() -> None:
    engine = Engine()

    async def main() -> int:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.01, max_wait_s=60)
        return await asyncio.wait_for(batcher.submit("en", 7), timeout=10)

    assert run(main()) == 70


def test_batches_never_exceed_the_max_size_and_keep_arrival_order() -> None:
    engine = Engine(seconds=0.05)

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=8, quiet_s=0.01, max_wait_s=0.05)
        await asyncio.gather(*(batcher.submit("en", i) for i in range(20)))

    run(main())
    assert [items for _, items in engine.calls] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]


def test_items_with_different_keys_never_share_a_call_and_the_oldest_key_goes_first() -> None:
    engine = Engine(seconds=0.2)

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.01, max_wait_s=0.02)
        first = await keep_busy(batcher, engine, "busy")
        tasks = [asyncio.create_task(batcher.submit("hi", 1)), asyncio.create_task(batcher.submit("en", 2))]
        tasks += [asyncio.create_task(batcher.submit("hi", 3)), asyncio.create_task(batcher.submit("en", 4))]
        await asyncio.gather(first, *tasks)

    run(main())
    assert engine.calls == [("busy", [0]), ("hi", [1, 3]), ("en", [2, 4])]


def test_an_engine_error_reaches_every_caller_in_the_batch_and_the_worker_goes_on() -> None:
    engine = Engine(fail_on="bad")

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.05, max_wait_s=0.1)
        results = await asyncio.gather(*(batcher.submit("bad", i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "engine fault" in str(r) for r in results)
        assert await batcher.submit("good", 5) == 50

    run(main())


def test_a_caller_that_gave_up_is_left_out_of_the_batch() -> None:
    engine = Engine(seconds=0.2)

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=16, quiet_s=0.01, max_wait_s=0.02)
        first = await keep_busy(batcher, engine)
        gone = asyncio.create_task(batcher.submit("en", 1))
        kept = asyncio.create_task(batcher.submit("en", 2))
        await asyncio.sleep(0)
        gone.cancel()
        assert await kept == 20
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone

    run(main())
    assert [items for _, items in engine.calls] == [[0], [2]]


def test_the_most_urgent_items_go_first_whatever_their_key() -> None:
    """Priorities (lanes: interactive 0, bulk 1): the next batch is the key of the most urgent waiting item,
    filled most urgent first; among equals the oldest."""
    engine = Engine(seconds=0.3)

    async def main() -> None:
        batcher = Batcher(engine, max_batch_size=2, quiet_s=0.01, max_wait_s=0.02)
        first = await keep_busy(batcher, engine)
        bulk = [asyncio.create_task(batcher.submit("en", i, priority=1)) for i in (1, 2, 3)]
        await asyncio.sleep(0.02)
        urgent = [asyncio.create_task(batcher.submit("hi", 4, priority=0))]
        urgent.append(asyncio.create_task(batcher.submit("en", 5, priority=0)))
        await asyncio.gather(first, *bulk, *urgent)

    run(main())
    # "hi" 4 is the most urgent and oldest of the urgent: its key goes first; then "en" with 5 ahead of the bulk.
    assert engine.calls == [("en", [0]), ("hi", [4]), ("en", [5, 1]), ("en", [2, 3])]
