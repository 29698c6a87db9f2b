"""Snowpark local testing (Snowflake's own emulator, `local_testing=True`) behind a session provider that can
simulate an outage: while `down` is set, the session raises on every use, as an unreachable Snowflake does."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from snowflake.snowpark import Session
from snowflake.snowpark.exceptions import SnowparkSessionException

from service.config import Settings
from service.storage.snowflake import SnowflakeStore
from tests.storage.helpers import HINDI, add_job, run, transcript_of

__all__ = ["HINDI", "FlakySessions", "add_job", "eventually", "open_store", "rows_in", "run", "transcript_of"]


class _FlakySession:
    """Forwards to the emulator session; raises while the provider is down (or its budget is spent)."""

    def __init__(self, sessions: FlakySessions) -> None:
        self._sessions = sessions

    def __getattr__(self, name: str) -> Any:
        self._sessions.check()
        return getattr(self._sessions.session, name)


class FlakySessions:
    """A SessionProvider stand-in: one emulator session for the whole test, with a switchable outage."""

    def __init__(self) -> None:
        self.session = Session.SessionBuilder().config("local_testing", True).create()
        self.down = False
        self.budget: int | None = None  # uses left before the outage starts (None: no limit)
        self.invalidated = 0

    def check(self) -> None:
        if self.budget is not None:
            if self.budget == 0:
                self.down = True
                self.budget = None
            else:
                self.budget -= 1
        if self.down:
            raise SnowparkSessionException("Snowflake unreachable (simulated outage)")

    def get(self) -> Any:
        if self.down:
            raise ConnectionError("Snowflake unreachable (simulated outage)")
        return _FlakySession(self)

    def invalidate(self) -> None:
        self.invalidated += 1

    def close(self) -> None:
        self.session.close()


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        store="snowflake",
        snowflake_local_testing=True,
        export_interval_s=overrides.pop("export_interval_s", 0.02),
        export_retry_s=overrides.pop("export_retry_s", 0.05),
        **overrides,
    )


async def open_store(tmp_path: Path, sessions: FlakySessions, **overrides: Any) -> SnowflakeStore:
    store = SnowflakeStore(settings_for(tmp_path, **overrides), sessions)  # type: ignore[arg-type]
    await store.open()
    return store


def rows_in(sessions: FlakySessions, table: str, job_id: str) -> list[dict[str, Any]]:
    """What the emulated Snowflake holds (the export's tables), read behind the store's back."""
    from snowflake.snowpark.functions import col

    return [r.as_dict() for r in sessions.session.table(table).filter(col("JOB_ID") == job_id).collect()]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
