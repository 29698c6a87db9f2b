"""Submit latency: `POST /v1/jobs` of a ~100 KB file from N concurrent clients, bounded request count.

Runs against a gateway-only process whose Ray Serve app is absent, so the jobs stay queued and the
figures are the accept path alone (upload, fsync, probe, SQLite commit), not transcription load.

The clients are plain asyncio HTTP/1.1 keep-alive connections sending one pre-built multipart request, as
wrk or hey would: the load generator shares the machine's two cores with the gateway, and httpx spent
about 2 ms of CPU per request, a third of the gateway's own, which would be measured as gateway latency.
The CPU both sides spend per request is reported too.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.harness import cpu_seconds, free_port, rss_mb, start_gateway, stop_gateway
from tests.integration.helpers import DATA

FILE = DATA / "en_jfk.m4a"  # 97 KB of AAC


def request_bytes(host: str, payload: bytes, name: str) -> bytes:
    """One complete multipart `POST /v1/jobs` with a `file` part."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one response on a keep-alive connection; returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"), 0)
    await reader.readexactly(length)
    return status


async def _load(url: str, total: int, concurrency: int) -> tuple[list[float], dict[int, int]]:
    parts = urlsplit(url)
    request = request_bytes(parts.netloc, FILE.read_bytes(), FILE.name)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def client() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for _ in counter:
                started = time.perf_counter()
                writer.write(request)
                status = await _response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, statuses


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(total: int = 2000, concurrency: int = 32) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="spcsw-submit-"))
    url, process = start_gateway(data_dir, f"http://127.0.0.1:{free_port()}/absent", data_dir / "gateway.log")
    try:
        asyncio.run(_load(url, 100, concurrency))  # warm-up
        gateway_cpu, client_cpu = cpu_seconds(process.pid), _own_cpu_s()
        started = time.perf_counter()
        latencies, statuses = asyncio.run(_load(url, total, concurrency))
        elapsed = time.perf_counter() - started
        gateway_cpu, client_cpu = cpu_seconds(process.pid) - gateway_cpu, _own_cpu_s() - client_cpu
        single, _ = asyncio.run(_load(url, 200, 1))  # one client: the accept path's own latency
        latencies.sort()
        return {
            "submit_requests": total,
            "submit_concurrency": concurrency,
            "submit_p50_ms": round(statistics.median(latencies) * 1000, 2),
            "submit_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
            "submit_rps": round(total / elapsed, 1),
            "submit_5xx": sum(n for s, n in statuses.items() if s >= 500),
            "submit_statuses": {str(k): v for k, v in statuses.items()},
            "submit_gateway_cpu_ms_per_request": round(gateway_cpu / total * 1000, 2),
            "submit_client_cpu_ms_per_request": round(client_cpu / total * 1000, 2),
            "submit_single_client_p50_ms": round(statistics.median(single) * 1000, 2),
            "gateway_rss_mb": round(rss_mb(process.pid), 1),
        }
    finally:
        stop_gateway(process)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    print(measure())
