"""Nothing accepted is lost, nothing stranded, the disk never fills (issue 14), against the real gateway process
(`spcs-whisper gateway`, SQLite store, real HTTP).

The Ray app is a SCRIPTED STAND-IN (not Whisper): the same HTTP protocol as the Ray Serve app, answering each
call as the test scripts it (an outage, a transcript the store refuses, a slow job), because the behaviour
under test is the gateway's. Uploads are real audio (tests/data), probed by PyAV at submit as always.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.harness import free_port, start_gateway, stop_gateway
from tests.integration.helpers import DATA, wait
from tests.store_load import serving, standin_app, write_stage

pytestmark = pytest.mark.integration
AUDIO = DATA / "en_jfk.m4a"
SEGMENT = {"start": 0.0, "end": 1.0, "text": " fine"}


class Script:
    """What the stand-in answers to the next calls: a list of "outage" | "unstorable" | "ok"."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.calls = 0

    def next(self) -> str:
        self.calls += 1
        return self.plan.pop(0) if self.plan else "ok"


def scripted_inference(script: Script) -> FastAPI:
    app = standin_app()

    @app.post("/whisper/transcribe")
    async def transcribe(request: Request) -> Any:
        async for _ in request.stream():
            pass
        step = script.next()
        if step == "outage":  # what Ray Serve answers with no healthy replica
            error = {"code": "inference_unavailable", "message": "no replica (stand-in outage)"}
            return JSONResponse({"error": error}, status_code=503)
        text = "fine" if step == "ok" else "broken \ud800 text"  # a lone surrogate: SQLite cannot store it
        transcript = {"text": text, "language": "en", "duration": 1.0, "segments": [{**SEGMENT, "text": text}]}

        async def events() -> AsyncIterator[str]:
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def inference(script: Script) -> Iterator[str]:
    with serving(scripted_inference(script), free_port()) as url:
        yield f"{url}/whisper"


def _gateway(tmp: Path, inference: str, **env: str) -> tuple[str, Any]:
    stage = write_stage(tmp / "stage", 2)
    url, process = start_gateway(
        tmp / "data",
        inference,
        tmp / "gateway.log",
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"AUDIO_FILES_STAGE": str(stage)}),
        SPCS_WHISPER_RETRY_BACKOFF_S="0.1",
        **env,
    )
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, (tmp / "gateway.log").read_text()[-2000:]
        time.sleep(0.2)
    return url, process


def _upload(client: httpx.Client) -> str:
    with AUDIO.open("rb") as fh:
        response = client.post("/v1/jobs", files={"file": (AUDIO.name, fh)})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_ray_outage_never_uses_up_a_jobs_attempts(tmp_path: Path, inference: str, script: Script) -> None:
    """Five calls meet no replica (503), with MAX_ATTEMPTS=2: the job waits the outage out and succeeds on its
    first counted attempt."""
    url, process = _gateway(tmp_path, inference, SPCS_WHISPER_MAX_ATTEMPTS="2")
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            script.plan = ["outage"] * 5
            job = wait(client, _upload(client), timeout=120)
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 1 and not script.plan
    finally:
        stop_gateway(process)


def test_a_result_the_store_refuses_sends_the_job_back_to_the_queue(
    tmp_path: Path, inference: str, script: Script
) -> None:
    """The first transcript cannot be stored: the job is not left `running` but queued again, and the next
    attempt stores its result."""
    url, process = _gateway(tmp_path, inference)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            script.plan = ["unstorable"]
            job = wait(client, _upload(client), timeout=60)
            assert job["status"] == "succeeded" and job["attempts"] == 2, job
            assert client.get(f"/v1/jobs/{job['id']}/transcript").json()["text"] == "fine"
    finally:
        stop_gateway(process)


def test_a_nearly_full_volume_refuses_new_work_with_507(tmp_path: Path, inference: str) -> None:
    """Below MIN_FREE_DISK_MB of free space (set above what this disk has) new jobs are refused before any byte
    is stored; reads and health go on."""
    (tmp_path / "data").mkdir(parents=True)
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    url, process = _gateway(tmp_path, inference, SPCS_WHISPER_MIN_FREE_DISK_MB=str(free_mb + 10_000))
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            with AUDIO.open("rb") as fh:
                upload = client.post("/v1/jobs", files={"file": (AUDIO.name, fh)})
            stage = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/call_00000.wav"})
            batch = client.post("/v1/batches", json={"stage": "@AUDIO_FILES_STAGE", "pattern": ".*"})
            for response in (upload, stage, batch):
                assert response.status_code == 507, response.text
                assert response.json()["error"]["code"] == "insufficient_storage"
                assert int(response.headers["retry-after"]) > 0
            assert list((tmp_path / "data" / "blobs").iterdir()) == []  # nothing half stored
            assert client.get("/v1/jobs").json()["jobs"] == []
            assert client.get("/healthz").status_code == 200
    finally:
        stop_gateway(process)


def test_retention_removes_old_audio_then_old_jobs(tmp_path: Path, inference: str) -> None:
    """Uploaded audio goes AUDIO_RETENTION_DAYS after its job finished, the finished job itself
    JOB_RETENTION_DAYS after (here ~1 s and ~4 s)."""
    url, process = _gateway(
        tmp_path,
        inference,
        SPCS_WHISPER_AUDIO_RETENTION_DAYS=str(1 / 86400),
        SPCS_WHISPER_JOB_RETENTION_DAYS=str(4 / 86400),
        SPCS_WHISPER_RETENTION_CHECK_S="0.3",
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            job_id = _upload(client)
            assert wait(client, job_id, timeout=60)["status"] == "succeeded"
            blob = tmp_path / "data" / "blobs" / job_id
            deadline = time.monotonic() + 20
            while blob.exists():
                assert time.monotonic() < deadline, "the audio outlived its retention"
                time.sleep(0.2)
            assert client.get(f"/v1/jobs/{job_id}").status_code == 200  # the job itself is kept longer
            while client.get(f"/v1/jobs/{job_id}").status_code != 404:
                assert time.monotonic() < deadline, "the job outlived its retention"
                time.sleep(0.2)
    finally:
        stop_gateway(process)
