"""Submit latency: `POST /v1/jobs` of a ~100 KB file from N concurrent clients, bounded request count.

Runs against a gateway-only process whose Ray Serve app is absent, so the jobs stay queued and the
figures are the accept path alone (upload, fsync, probe, SQLite commit), not transcription load.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import free_port, start_gateway, stop_gateway
from tests.integration.helpers import DATA

FILE = DATA / "en_jfk.m4a"  # 97 KB of AAC


async def _load(url: str, total: int, concurrency: int) -> tuple[list[float], dict[int, int]]:
    payload = FILE.read_bytes()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            for _ in counter:
                started = time.perf_counter()
                response = await client.post("/v1/jobs", files={"file": (FILE.name, payload)})
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(total: int = 2000, concurrency: int = 32) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="spcsw-submit-"))
    url, process = start_gateway(data_dir, f"http://127.0.0.1:{free_port()}/absent", data_dir / "gateway.log")
    try:
        asyncio.run(_load(url, 100, concurrency))  # warm-up
        started = time.perf_counter()
        latencies, statuses = asyncio.run(_load(url, total, concurrency))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return {
            "submit_requests": total,
            "submit_concurrency": concurrency,
            "submit_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "submit_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "submit_rps": round(total / elapsed, 1),
            "submit_5xx": sum(n for s, n in statuses.items() if s >= 500),
            "submit_statuses": {str(k): v for k, v in statuses.items()},
            "gateway_rss_mb": round(_rss_mb(process.pid), 1),
        }
    finally:
        stop_gateway(process)


if __name__ == "__main__":
    print(measure())
