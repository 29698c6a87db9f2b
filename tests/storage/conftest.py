"""The `stores` fixture: every store backend, one test run per backend (the contract every store must keep)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.storage.sqlite import SQLiteStore
from tests.storage.helpers import run

STORES = ["sqlite", "snowflake"]


class Stores:
    """Opens stores of one kind on one data folder: each `run` is a new process on the same data. The Snowflake
    store runs on Snowpark's local emulator (`local_testing=True`), no account and no network."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind, self.data_dir = kind, data_dir
        self.sessions: Any = None
        if kind == "snowflake":
            pytest.importorskip("snowflake.snowpark")
            from tests.snowflake.outage import FlakySessions

            self.sessions = FlakySessions()

    async def open(self) -> Any:
        if self.sessions is not None:
            from tests.snowflake.outage import open_store

            return await open_store(self.data_dir, self.sessions)
        store = SQLiteStore(self.data_dir)
        await store.open()
        return store

    def run(self, test: Callable[[Any], Awaitable[None]]) -> None:
        """Open a store, run `test` on it, close it."""

        async def go() -> None:
            store = await self.open()
            try:
                await test(store)
            finally:
                await store.close()

        run(go())

    def close(self) -> None:
        if self.sessions is not None:
            self.sessions.close()


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    provider = Stores(request.param, tmp_path)
    yield provider
    provider.close()
