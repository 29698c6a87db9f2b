"""EMULATED account costs on top of Snowpark local testing: every statement the emulator runs is charged the
latency a real account takes, and DML takes the table lock a real account takes. The emulator itself answers
in microseconds, takes no locks and adds none of the round trips Snowpark makes against an account, so a
design that fits the bare emulator can still drown a warehouse; this harness shows it.

What is charged, and where it comes from:
- A SELECT on a warm warehouse: `select_s` (default 150 ms); UPDATE/DELETE/MERGE/INSERT: `dml_s` (400 ms on
  an XS warehouse; docs/benchmarks.md lists the sources). Both need a running warehouse.
- UPDATE, DELETE and MERGE on a standard table hold a table lock; statements queue for it, and past
  `max_lock_waiters` (20) waiting the next one fails with error 000625. INSERTs write new micro-partitions
  and do not wait for each other. https://docs.snowflake.com/en/sql-reference/transactions#resource-locking
  and https://docs.snowflake.com/en/sql-reference/transactions#lock-wait-timeout
- Round trips Snowpark adds against an account, charged `metadata_s` (cloud services, no warehouse):
  `save_as_table(mode="append")` checks the table first (SHOW TABLES LIKE); a `create_dataframe` source of
  at least 512 values (Snowpark's ARRAY_BIND_THRESHOLD) becomes a temporary table (CREATE, a bound INSERT
  that needs the warehouse, DROP).

`EmulatedAccount(session)` wraps the session's connection in place and records every statement.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

ARRAY_BIND_THRESHOLD = 512  # snowflake.snowpark._internal.analyzer.analyzer.ARRAY_BIND_THRESHOLD
LOCKING = ("TableUpdate", "TableDelete", "TableMerge")
VERBS = {"TableUpdate": "UPDATE", "TableDelete": "DELETE", "TableMerge": "MERGE", "SnowflakeCreateTable": "INSERT"}
_SKIP_ATTRS = {"session", "_session", "analyzer", "_analyzer", "_conn"}


@dataclass(frozen=True)
class AccountCosts:
    """Seconds charged per statement, by kind; the lock queue limit of one table."""

    select_s: float = 0.15
    dml_s: float = 0.40
    metadata_s: float = 0.05
    max_lock_waiters: int = 20


@dataclass(frozen=True)
class Statement:
    """One statement as a real account would have run it."""

    verb: str  # SELECT | INSERT | UPDATE | DELETE | MERGE | SHOW | CREATE TEMP | DROP TEMP
    table: str | None
    warehouse: bool  # needs a running warehouse (SHOW / temp-table DDL do not)
    at: float  # time.monotonic() when it was issued


class LockQueueFull(Exception):
    """Error 000625: too many statements wait for one table's lock (raised as Snowpark's SQL error)."""


@dataclass
class _TableLock:
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiting: int = 0


def _plan_nodes(plan: Any) -> list[Any]:
    """Every Snowpark plan node reachable from `plan` (logical plans, leaves, nested select statements)."""
    seen: set[int] = set()
    found: list[Any] = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, list | tuple):
            stack.extend(node)
            continue
        if isinstance(node, dict):
            stack.extend(node.values())
            continue
        if not type(node).__module__.startswith("snowflake.snowpark") or not hasattr(node, "__dict__"):
            continue
        if type(node).__name__ in ("Session", "MockServerConnection"):
            continue
        found.append(node)
        stack.extend(v for k, v in vars(node).items() if k not in _SKIP_ATTRS)
    return found


def _name(value: Any) -> str:
    name = value if isinstance(value, str) else ".".join(value)
    return name.strip('"').upper()


class EmulatedAccount:
    """Charges and records every statement of `session` (a Snowpark local-testing session)."""

    def __init__(self, session: Any, costs: AccountCosts | None = None) -> None:
        self.costs = costs or AccountCosts()
        self.statements: list[Statement] = []
        self._conn = session._conn
        self._execute = self._conn.execute
        self._conn.execute = self._run
        self._emulator = threading.Lock()  # the emulator's tables are plain Python objects
        self._tables: dict[str, _TableLock] = {}
        self._guard = threading.Lock()
        self._local = threading.local()

    def close(self) -> None:
        self._conn.execute = self._execute

    @contextmanager
    def uncharged(self) -> Iterator[None]:
        """Statements of this thread in the block are neither charged nor recorded (the test's own reads)."""
        self._local.off = True
        try:
            yield
        finally:
            self._local.off = False

    # -- what was run ---------------------------------------------------------------------------------------

    def since(self, start: float = 0.0) -> list[Statement]:
        with self._guard:
            return [s for s in self.statements if s.at >= start]

    def warehouse_statements(self, start: float = 0.0) -> list[Statement]:
        return [s for s in self.since(start) if s.warehouse]

    def table_statements(self, start: float = 0.0) -> list[Statement]:
        """Statements that read or write a table (metadata-only round trips excluded)."""
        return [s for s in self.since(start) if s.table is not None and s.verb not in ("SHOW",)]

    def summary(self, start: float = 0.0) -> dict[str, int]:
        return dict(Counter(f"{s.verb} {s.table or ''}".strip() for s in self.since(start)))

    # -- charging -------------------------------------------------------------------------------------------

    def _record(self, verb: str, table: str | None, warehouse: bool) -> None:
        with self._guard:
            self.statements.append(Statement(verb, table, warehouse, time.monotonic()))

    def _round_trip(self, verb: str, table: str | None, seconds: float, warehouse: bool) -> None:
        self._record(verb, table, warehouse)
        time.sleep(seconds)

    def _run(self, plan: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._local, "off", False):
            return self._emulated(plan, args, kwargs)
        nodes = _plan_nodes(plan)
        kinds = {type(n).__name__: n for n in nodes}
        write = next((kinds[k] for k in (*LOCKING, "SnowflakeCreateTable") if k in kinds), None)
        target = _name(write.table_name) if write is not None else None
        if write is not None and type(write).__name__ == "SnowflakeCreateTable":
            self._round_trip("SHOW", target, self.costs.metadata_s, warehouse=False)
        for values in (n for n in nodes if type(n).__name__ == "SnowflakeValues"):
            if len(values.data) * len(values.output) >= ARRAY_BIND_THRESHOLD:
                self._round_trip("CREATE TEMP", None, self.costs.metadata_s, warehouse=False)
                self._round_trip("INSERT TEMP", None, self.costs.dml_s, warehouse=True)
        if write is None:
            tables = sorted({_name(n.name) for n in nodes if type(n).__name__ == "SnowflakeTable"})
            self._round_trip("SELECT", ",".join(tables) or None, self.costs.select_s, warehouse=True)
            return self._emulated(plan, args, kwargs)
        verb = VERBS[type(write).__name__]
        if type(write).__name__ not in LOCKING:
            self._round_trip(verb, target, self.costs.dml_s, warehouse=True)
            return self._emulated(plan, args, kwargs)
        with self._table_lock(target):  # type: ignore[arg-type]
            self._round_trip(verb, target, self.costs.dml_s, warehouse=True)
            return self._emulated(plan, args, kwargs)

    def _emulated(self, plan: Any, args: tuple, kwargs: dict) -> Any:
        with self._emulator:
            return self._execute(plan, *args, **kwargs)

    def _table_lock(self, table: str) -> _Held:
        with self._guard:
            state = self._tables.setdefault(table, _TableLock())
        return _Held(state, table, self.costs.max_lock_waiters)


class _Held:
    """The table lock for one statement; past `limit` waiters the statement fails as Snowflake's 000625."""

    def __init__(self, state: _TableLock, table: str, limit: int) -> None:
        self.state, self.table, self.limit = state, table, limit

    def __enter__(self) -> None:
        if not self.state.lock.acquire(blocking=False):
            if self.state.waiting >= self.limit:
                from snowflake.snowpark.exceptions import SnowparkSQLException

                raise SnowparkSQLException(
                    f"000625 (57014): Statement aborted: the number of waiters for the lock on {self.table} "
                    f"exceeds the {self.limit} statements limit (emulated)",
                    error_code="000625",
                    sql_error_code=625,
                )
            self.state.waiting += 1
            try:
                self.state.lock.acquire()
            finally:
                self.state.waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self.state.lock.release()
