"""Who goes first in the Ray app: lanes as priorities, and a semaphore that serves its waiters by rank.

A job's lane (`options.Lane`, chosen by the gateway) becomes a priority: interactive 0, bulk 1. The Decoder's
decode slots and its window budget are `PrioritySemaphore`s, and the Whisper deployment's `Batcher` takes the
most urgent windows first, so a short file or a service-function row never waits behind a stage batch's queue.
Within a lane the budget ranks a job's next window by the windows that job has already sent, then by the file's
length: a long file does not hold back the files that came after it (round robin between jobs), and in each
round the shortest file goes first (shortest job first: the least waiting in all); ties go in arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from service.options import Lane

LANE_PRIORITY: dict[Lane, int] = {"interactive": 0, "bulk": 1}


class PrioritySemaphore:
    """An asyncio semaphore whose waiters are served lowest rank first (then first come): `acquire(rank)`,
    `release()`. A waiter cancelled after it was granted gives its unit to the next one."""

    def __init__(self, value: int) -> None:
        self._value = value
        self._waiters: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def locked(self) -> bool:
        return self._value == 0

    def waiting(self) -> int:
        return sum(1 for *_, future in self._waiters if not future.done())

    def try_acquire(self) -> bool:
        """A unit now if one is free and nobody waits; False else (never waits)."""
        if self._value > 0 and not self.waiting():
            self._value -= 1
            return True
        return False

    async def acquire(self, rank: Any = 0) -> bool:
        if self._value > 0 and not self.waiting():
            self._value -= 1
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rank, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled: pass the unit on
                self.release()
            raise
        return True

    def release(self) -> None:
        while self._waiters:
            *_, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._value += 1
