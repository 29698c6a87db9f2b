"""Bounded intake load on 127.0.0.1: 2,000 submissions of a ~100 KB file at 64 concurrent clients against a
gateway whose Ray Serve app is absent (jobs stay queued, so this measures intake, not transcription).
Every answer is 202 or 429 (with Retry-After), never 5xx; no accepted job is lost; memory stays bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

from tests.harness import free_port, rss_mb, start_gateway, stop_gateway
from tests.integration.helpers import DATA

pytestmark = pytest.mark.integration

REQUESTS = 2000
CLIENTS = 64
MAX_QUEUED_JOBS = 500
MAX_RSS_MB = 300
AUDIO = DATA / "en_jfk.m4a"  # 97 KB, 11 s


class Answer(NamedTuple):
    status: int
    job_id: str | None
    retry_after: str | None
    seconds: float


async def _submit_all(url: str, audio: bytes) -> list[Answer]:
    gate = asyncio.Semaphore(CLIENTS)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> Answer:
            async with gate:
                begun = time.perf_counter()
                response = await client.post("/v1/jobs", files={"file": (f"load-{i}.m4a", audio)})
                elapsed = time.perf_counter() - begun
            job_id = response.json().get("id") if response.status_code == 202 else None
            return Answer(response.status_code, job_id, response.headers.get("retry-after"), elapsed)

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def _queued_ids(client: httpx.Client) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"status": "queued", "limit": 200} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        ids += [job["id"] for job in page["jobs"]]
        if not (cursor := page["next_cursor"]):
            return ids


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def test_intake_under_load_loses_nothing(tmp_path: Path) -> None:
    url, process = start_gateway(
        tmp_path / "data",
        f"http://127.0.0.1:{free_port()}/absent",
        tmp_path / "gateway.log",
        SPCS_WHISPER_MAX_QUEUED_JOBS=str(MAX_QUEUED_JOBS),
    )
    try:
        begun = time.perf_counter()
        answers = asyncio.run(_submit_all(url, AUDIO.read_bytes()))
        elapsed = time.perf_counter() - begun
        rss = rss_mb(process.pid)
        with httpx.Client(base_url=url, timeout=60) as client:
            queued = _queued_ids(client)
            held = client.get(f"/v1/jobs/{queued[0]}", params={"wait": 1})  # a long poll that runs out of time
    finally:
        stop_gateway(process)

    statuses = [a.status for a in answers]
    accepted = [a.job_id for a in answers if a.status == 202]
    latencies = [a.seconds for a in answers]
    print(
        f"\n{REQUESTS} submissions at {CLIENTS} clients in {elapsed:.1f} s: {REQUESTS / elapsed:.0f} req/s, "
        f"p50 {_percentile(latencies, 0.5) * 1000:.0f} ms, p99 {_percentile(latencies, 0.99) * 1000:.0f} ms; "
        f"{len(accepted)} accepted, {statuses.count(429)} refused (429); gateway RSS {rss:.0f} MB"
    )
    assert not [s for s in statuses if s >= 500]
    assert set(statuses) <= {202, 429}, sorted(set(statuses))
    assert all(a.retry_after and int(a.retry_after) > 0 for a in answers if a.status == 429)
    assert accepted and len(set(accepted)) == len(accepted)
    assert len(accepted) == MAX_QUEUED_JOBS  # the bound holds exactly, however many requests race for it
    assert sorted(queued) == sorted(accepted)  # every 202 is in the store, and nothing else is queued
    assert rss < MAX_RSS_MB
    assert held.status_code == 200 and held.json()["status"] == "queued"
