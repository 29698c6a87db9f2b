"""The Snowflake store at a real account's prices (part of `make bench`; alone: `python -m bench.store`).

The gateway on the Snowflake store; Snowflake EMULATED by Snowpark local testing charged per statement
(150 ms per SELECT, 400 ms per DML, table locks: tests/snowflake/latency.py); a STAND-IN inference app that
answers at once (tests/store_load.py), so what is measured is the store. Figures: jobs/s of a stage batch of
short files until every job is in Snowflake's tables, warehouse statements per job, the account time those
statements cost per job, statements of one TRANSCRIBE() over 8 rows (answered at once, or after 4 s of
progress), and statements touching a table over `--idle` seconds with no work.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from tests.snowflake.latency import AccountCosts
from tests.store_load import idle_statements, rig_client, run_stage_batch, run_transcribe_function

ACCOUNT = AccountCosts(select_s=0.15, dml_s=0.40)


def measure(files: int = 300, runs: int = 3, idle_s: float = 240.0) -> dict[str, Any]:
    batches, idle = [], None
    for run in range(runs):
        with rig_client(files, ACCOUNT) as (rig, client):
            batches.append(run_stage_batch(rig, client, files))
            print(f"store: stage batch {run + 1}/{runs}: {batches[-1]}", flush=True)
            if run == runs - 1 and idle_s > 0:
                idle = idle_statements(rig, idle_s)
                print(f"store: idle {idle_s:.0f} s: {idle}", flush=True)
    calls = {}
    for seconds in (0.0, 4.0):
        with rig_client(8, ACCOUNT, inference_s=seconds) as (rig, client):
            calls[seconds] = run_transcribe_function(rig, client)
            print(f"store: TRANSCRIBE() 8 rows, {seconds} s each: {calls[seconds]}", flush=True)

    def median(key: str) -> float:
        return round(statistics.median(b[key] for b in batches), 3)

    def span(key: str) -> dict[str, float]:
        values = [b[key] for b in batches]
        return {"median": median(key), "min": min(values), "max": max(values)}

    result: dict[str, Any] = {
        "store_files_per_batch": files,
        "store_jobs_per_s": median("jobs_per_s"),
        "store_jobs_per_s_range": span("jobs_per_s"),
        "store_warehouse_statements_per_job": median("warehouse_statements_per_job"),
        "store_charged_s_per_job": median("charged_s_per_job"),
        "store_transcribe_8_rows_statements": {f"{s:.0f} s": c["warehouse_statements"] for s, c in calls.items()},
    }
    if idle is not None:
        result["store_idle_table_statements"] = f"{idle['table_statements']} in {idle['idle_s']:.0f} s"
        result["store_idle_statements_per_hour"] = idle["per_hour"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=240.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.files, args.runs, args.idle), indent=2))


if __name__ == "__main__":
    main()
