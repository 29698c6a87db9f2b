"""A counting limit whose size may change while tasks hold it (the dispatcher's jobs in flight)."""

from __future__ import annotations

import asyncio


class Slots:
    """Like `asyncio.Semaphore(limit)`, but `resize()` changes the limit: growing wakes waiters at once,
    shrinking lets the holders finish (no new slot until they are under the new limit)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> None:
        while self.held >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        """Every waiter checks the limit again (there are few: the dispatcher's loop)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
