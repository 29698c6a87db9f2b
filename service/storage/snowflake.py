"""The Snowflake store: the job queue lives on the gateway's block volume (the SQLite store), and every job,
transcript, translation and batch is exported to the Snowflake tables of sql/01_tables.sql in group commits.

Why not the queue in Snowflake: a warehouse is not an OLTP queue. Every statement costs 100-400 ms, UPDATE,
DELETE and MERGE on a standard table take a table lock (more than 20 waiters fail with 000625), and any poll
keeps the warehouse (and its credits) awake. Measured with tests/snowflake/latency.py, a queue of one
statement per state change sustained 0.4 jobs/s; docs/benchmarks.md has the before and after.
https://docs.snowflake.com/en/sql-reference/transactions#resource-locking
https://docs.snowflake.com/en/user-guide/warehouses-considerations#automating-warehouse-suspension
A hybrid table (row locks) would still cost ~250 ms per state change and a running warehouse for every
claim and poll: https://docs.snowflake.com/en/user-guide/tables-hybrid

So: claims, progress, waits, counts and reads are local (microseconds, no warehouse). Every write records
in the same SQLite transaction which rows changed (`exports`: kind, id, version); the exporter
(snowflake_export.py) writes them with one MERGE per table per flush, at most every `export_interval_s`,
and clears a mark only if its version did not move meanwhile. A crash, an outage or a lost reply leaves
the marks in place and the next flush MERGEs the same rows again: one row per job, the latest state. An idle
gateway has no marks and issues no statement, so the warehouse suspends.

The queue belongs to one gateway instance (its block volume): the gateway service runs exactly one instance
(spec/gateway.yaml, deploy/config.yaml); the Ray workers are what scales.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from service.storage.snowflake_export import EXPORTS_SCHEMA, Exporter, ExportStatus
from service.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from service.config import Settings
    from service.storage.snowflake_session import SessionSource

log = logging.getLogger(__name__)
T = TypeVar("T")


class SnowflakeStore(SQLiteStore):
    """The SQLite store on the block volume, mirrored into Snowflake tables by an `Exporter`."""

    def __init__(self, settings: Settings, sessions: SessionSource) -> None:
        super().__init__(settings.gateway.data_dir)
        self.settings = settings
        self.exporter = Exporter(self, sessions, settings)
        self._marked = False  # set in the worker thread by `_changed`, read on the event loop by `_run`

    def _schema(self, conn: sqlite3.Connection) -> None:
        conn.executescript(EXPORTS_SCHEMA)

    def _changed(self, conn: sqlite3.Connection, kind: str, ids: list[str]) -> None:
        if not ids:
            return
        if kind == "deleted":  # nothing else of a deleted job needs exporting
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM exports WHERE kind != 'batch' AND id IN ({marks})", ids)
        conn.executemany(
            "INSERT INTO exports (kind, id, version) VALUES (?, ?, 1)"
            " ON CONFLICT (kind, id) DO UPDATE SET version = version + 1",
            [(kind, i) for i in ids],
        )
        self._marked = True

    def _purgeable(self) -> str:
        # Retention deletes local copies only: never a job whose latest state is not in Snowflake yet, and
        # never with a "deleted" mark (the tables are the analysts' record and keep it).
        return " AND id NOT IN (SELECT id FROM exports)"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await super()._run(fn)
        finally:
            if self._marked:
                self._marked = False
                self.exporter.poke()

    async def open(self) -> None:
        await super().open()
        await self.exporter.open()

    async def close(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self.exporter.close()  # a last flush, best effort: what stays is exported by the next process
        await super().close()

    async def flush(self) -> int:
        """Export every pending change now; how many are still pending (tests, shutdown)."""
        return await self.exporter.flush()

    def export_status(self) -> ExportStatus:
        return self.exporter.status
