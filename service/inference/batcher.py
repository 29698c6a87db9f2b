"""Dynamic batching of 30 s windows that forms each batch when the engine is free to run it.

Ray Serve's `@serve.batch` closes a batch `batch_wait_timeout_s` after its first item even while the
previous batch is still running, so under load the engine works through a queue of small batches (mean
2-3 windows for 16 concurrent jobs on CPU). Here the batch is taken from the queue only once the engine
is idle: everything that arrived while it was busy goes into the next call, up to `max_batch_size`. An
idle engine waits for stragglers only while they keep arriving (a burst of jobs lands in one batch, a
lone job waits `quiet_s`), never past `max_wait_s` from the oldest window's arrival, so a loaded engine
never waits at all.

Windows carry a priority (`Lane` order: interactive 0 before bulk 1): the next batch is the key of the most
urgent waiting window (then the oldest), filled with that key's windows most urgent first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.waits import wait_event

Item = TypeVar("Item")
Key = TypeVar("Key")
Result = TypeVar("Result")


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    arrived: float
    future: asyncio.Future[Result] = field(repr=False)
    priority: int = 0  # lower first

    @property
    def rank(self) -> tuple[int, float]:
        return self.priority, self.arrived


class Batcher(Generic[Item, Key, Result]):
    """Queue items per key (items that may share a call); one worker runs the oldest key's items in
    batches through `run(key, items) -> results`, one result per item, in a thread."""

    def __init__(
        self,
        run: Callable[[Key, list[Item]], list[Result]],
        max_batch_size: int,
        quiet_s: float,
        max_wait_s: float,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.quiet_s = quiet_s
        self.max_wait_s = max(max_wait_s, quiet_s)
        self.batches = 0  # calls made, and the items they held: their ratio is the mean batch size
        self.items = 0
        self._queues: OrderedDict[Key, deque[_Waiting[Item, Result]]] = OrderedDict()
        self._arrival = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, key: Key, item: Item, priority: int = 0) -> Result:
        """The item's result once the batch holding it has run; the engine's exception if it failed. Items of a
        lower `priority` go first."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(_Waiting(item, time.monotonic(), future, priority))
        self._arrival.set()
        return await future

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _first(self) -> tuple[Key, deque[_Waiting[Item, Result]]] | None:
        """The key of the most urgent waiting item (the oldest among equals), and its queue."""
        live = [(key, q) for key, q in self._queues.items() if q]
        return min(live, key=lambda kq: min(w.rank for w in kq[1])) if live else None

    async def _gather(self) -> tuple[Key, list[_Waiting[Item, Result]]]:
        """Wait for work, then for stragglers while they keep coming: until the first key's batch is full,
        or no item has joined it for `quiet_s`, or its oldest item has waited `max_wait_s`. Take up to
        `max_batch_size` of that key's items, most urgent first (dropping cancelled ones)."""
        while True:
            oldest = self._first()
            if oldest is None:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            key, queue = oldest
            due = min(queue[0].arrived + self.max_wait_s, queue[-1].arrived + self.quiet_s)
            remaining = due - time.monotonic()
            if len(queue) < self.max_batch_size and remaining > 0:
                self._arrival.clear()
                await wait_event(self._arrival, remaining)
                continue
            ranked = sorted(queue, key=lambda w: w.rank)
            taken, rest = ranked[: self.max_batch_size], ranked[self.max_batch_size :]
            if rest:
                self._queues[key] = deque(sorted(rest, key=lambda w: w.arrived))
            else:
                del self._queues[key]
            taken = [w for w in taken if not w.future.done()]
            if taken:
                return key, taken

    async def _work(self) -> None:
        while True:
            key, taken = await self._gather()
            self.batches += 1
            self.items += len(taken)
            try:
                results = await asyncio.to_thread(self.run, key, [w.item for w in taken])
                if len(results) != len(taken):
                    raise RuntimeError(f"the engine returned {len(results)} results for {len(taken)} windows")
            except Exception as exc:  # the callers see the engine's error; the worker goes on
                for waiting in taken:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            for waiting, result in zip(taken, results):
                if not waiting.future.done():
                    waiting.future.set_result(result)
