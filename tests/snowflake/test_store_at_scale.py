"""The Snowflake store at a real account's prices: the gateway (uvicorn, real HTTP) on the Snowflake store,
Snowflake EMULATED by Snowpark local testing charged 150 ms per SELECT and 400 ms per DML with table locks
(tests/snowflake/latency.py), and a STAND-IN inference app (tests/store_load.py) so the engine costs nothing.

Asserted here are the counts, which do not depend on how busy this machine is: statements per job, the
account time they cost per job (which bounds the store's throughput), statements per TRANSCRIBE() call,
statements while idle. The wall-clock throughput is printed by `make bench` (bench/store.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from snowflake.snowpark import Session
from snowflake.snowpark.exceptions import SnowparkSQLException
from snowflake.snowpark.functions import col, lit
from snowflake.snowpark.types import LongType, StringType, StructField, StructType

from tests.snowflake.latency import AccountCosts, EmulatedAccount
from tests.store_load import idle_statements, rig_client, run_stage_batch, run_transcribe_function

FILES = 120
ACCOUNT = AccountCosts(select_s=0.15, dml_s=0.40)


def test_a_stage_batch_costs_the_warehouse_little_per_job(tmp_path: Path) -> None:
    with rig_client(FILES, ACCOUNT, tmp_path) as (rig, client):
        result = run_stage_batch(rig, client, FILES)
        print("stage batch:", result)
        assert result["warehouse_statements_per_job"] <= 0.5, result
        # The account time the statements cost, run one after another: at most 0.1 s per job means the
        # store keeps up with at least 10 jobs/s however the work is timed.
        assert result["charged_s_per_job"] <= 0.1, result
        assert not any(kind.startswith(("SELECT", "UPDATE")) for kind in result["by_kind"]), result["by_kind"]

        idle = idle_statements(rig, 10.0)  # the dispatcher's idle polls (1, 2, 4, 8 s) and the exporter included
        print("idle:", idle)
        assert idle["table_statements"] == 0, idle


@pytest.mark.parametrize("inference_s", [0.0, 4.0])
def test_transcribe_costs_the_same_statements_however_long_it_waits(tmp_path: Path, inference_s: float) -> None:
    """Eight rows, answered at once or after 4 s of progress events each: the statements are the export's
    few MERGEs, never a poll per row per second."""
    with rig_client(8, ACCOUNT, tmp_path, inference_s=inference_s) as (rig, client):
        result = run_transcribe_function(rig, client)
    print(f"TRANSCRIBE() over 8 rows, {inference_s} s each:", result)
    assert result["answered_s"] >= inference_s
    assert result["warehouse_statements"] <= 6, result  # queued/running, then the results: two flushes at most
    assert not any(kind.startswith("SELECT") for kind in result["by_kind"]), result["by_kind"]


def test_the_harness_serialises_dml_per_table_and_refuses_past_twenty_waiters() -> None:
    """The EMULATED lock model itself: UPDATEs on one table run one at a time and the 21st waiter fails
    with 000625; another table is not blocked; SELECTs do not wait for locks."""
    session = Session.SessionBuilder().config("local_testing", True).create()
    dml_s = 0.2
    account = EmulatedAccount(session, AccountCosts(select_s=0.01, dml_s=dml_s, metadata_s=0.0))
    schema = StructType([StructField("K", StringType()), StructField("V", LongType())])
    for name in ("A", "B"):
        session.create_dataframe([["x", 0]], schema=schema).write.save_as_table(name, mode="append")
    errors: list[Exception] = []
    start_line = threading.Barrier(27)  # every statement is issued at once, as by 27 concurrent clients
    finished: dict[str, float] = {}

    def update(table: str, name: str) -> None:
        start_line.wait()
        try:
            session.table(table).update({"V": lit(1)}, col("K") == "x")
        except SnowparkSQLException as exc:
            errors.append(exc)
        finished[name] = time.monotonic()

    threads = [threading.Thread(target=update, args=("A", f"a{i}")) for i in range(26)]
    threads.append(threading.Thread(target=update, args=("B", "b")))
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(finished.values()) - start
    assert errors and all(e.sql_error_code == 625 for e in errors), errors
    ran = 26 - len(errors)
    assert ran >= 21 and elapsed >= ran * dml_s * 0.9  # one at a time
    assert finished["b"] - start < elapsed / 3  # table B did not queue behind table A
    updates = [s for s in account.since() if s.verb == "UPDATE" and s.table == "A"]
    assert len(updates) == ran
    account.close()
    session.close()
