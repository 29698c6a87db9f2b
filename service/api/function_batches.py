"""The service-function batches still being answered, on the gateway's disk (`DATA_DIR/function-batches/`).

Snowflake's asynchronous protocol for service and external functions: the service answers a batch's POST
with 202 at once, and Snowflake polls with GET requests that carry only headers, the same
`sf-external-function-query-batch-id` among them, until one answers 200 with the rows. So a GET must find
which rows the batch had and which job (or row error) each row became, also after a gateway restart: one
small JSON file per batch, written before the 202, removed once the 200 went out (or a day later).
https://docs.snowflake.com/en/sql-reference/external-functions-implementation (asynchronous remote services)
https://docs.snowflake.com/en/sql-reference/external-functions-data-format (the GET carries the POST's batch id)
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TTL_S = 24 * 3600


@dataclass(frozen=True)
class BatchRow:
    """One row of a batch: its job, or the error value it answers with (a row that never became a job)."""

    row: int
    job_id: str | None = None
    error: dict[str, Any] | None = None


class FunctionBatches:
    """Batch id -> its rows, one JSON file each (written atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, route: str, batch_id: str) -> Path:
        digest = hashlib.sha256(f"{route}\n{batch_id}".encode()).hexdigest()
        return self.folder / f"{digest}.json"

    def save(self, route: str, batch_id: str, rows: list[BatchRow]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(route, batch_id)
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps([[r.row, r.job_id, r.error] for r in rows]), encoding="utf-8")
        os.replace(temp, path)

    def load(self, route: str, batch_id: str) -> list[BatchRow] | None:
        path = self._path(route, batch_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return [BatchRow(row, job_id, error) for row, job_id, error in data]

    def drop(self, route: str, batch_id: str) -> None:
        self._path(route, batch_id).unlink(missing_ok=True)

    def sweep(self, ttl_s: float = TTL_S) -> int:
        """Remove batches nobody polled for `ttl_s` (Snowflake gave up on them); returns how many."""
        if not self.folder.is_dir():
            return 0
        cutoff, removed = time.time() - ttl_s, 0
        for path in self.folder.glob("*.json"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
