"""Stage files really transcribed, through a real gateway process and the real Ray Serve app.

A local folder is mounted as `@AUDIO_FILES_STAGE` (`SPCS_WHISPER_STAGE_MOUNTS`), as an SPCS stage volume
would be. What is checked here is what only the real app gives: the text, language and duration Whisper finds
in stage files of each container, through the HTTP API and the service functions, and Hindi batches translated
by Whisper. The rules (stage names, refusals, batches, the service-function protocol, scoping) are checked in
process, against a fake inference, in tests/api/test_stages.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Service, functions_url, start_gateway, stop_gateway, wait_ready
from tests.integration.helpers import (
    FUNCTION_HEADERS,
    MANIFEST_JFK,
    SHARED_AUDIO,
    call_function,
    stage_of_clips,
    wait,
    wer,
)

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)]
HEADERS = FUNCTION_HEADERS


@pytest.fixture(scope="module")
def stage_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stage_of_clips(tmp_path_factory.mktemp("audio-stage"))


@pytest.fixture(scope="module")
def gateway(service: Service, stage_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    mounts = {"AUDIO_FILES_STAGE": str(stage_folder)}
    if SHARED_AUDIO.is_dir():
        mounts["HINDI_STAGE"] = str(SHARED_AUDIO)
    root = tmp_path_factory.mktemp("stage-gateway")
    url, process = start_gateway(
        root / "data",
        service.serve_url,
        root / "gateway.log",
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps(mounts),
        SPCS_WHISPER_RETRY_BACKOFF_S="0.2",
    )
    wait_ready(url)
    yield url
    stop_gateway(process)


@pytest.fixture(scope="module")
def impatient_gateway(service: Service, stage_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway whose service-function requests wait 0.2 s for their rows, then answer 202: any real
    transcription outlives one request, as a long file does under Snowflake's and the ingress's time limits."""
    root = tmp_path_factory.mktemp("impatient-gateway")
    url, process = start_gateway(
        root / "data",
        service.serve_url,
        root / "gateway.log",
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"AUDIO_FILES_STAGE": str(stage_folder)}),
        SPCS_WHISPER_FUNCTION_WAIT_S="0.2",
    )
    wait_ready(url)
    yield url
    stop_gateway(process)


@pytest.fixture
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=300) as c:
        yield c


def test_a_stage_file_is_transcribed_and_translated_as_is(client: httpx.Client) -> None:
    """No language given: Whisper finds English, so the translation into English is the transcript itself."""
    response = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk.m4a", "translate_to": "en"})
    assert response.status_code == 202, response.text
    assert response.json()["audio_seconds"] == pytest.approx(11.0, abs=0.5)  # probed through the mount at submit
    job = wait(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    transcript = client.get(f"/v1/jobs/{job['id']}/transcript").json()
    assert transcript["language"] == "en" and wer(MANIFEST_JFK, transcript["text"]) == 0.0
    translation = client.get(f"/v1/jobs/{job['id']}/translation").json()
    assert translation["method"] == "none" and translation["target_language"] == "en"
    assert wer(MANIFEST_JFK, translation["text"]) == 0.0


def _function(client: httpx.Client, path: str, rows: list, batch_id: str) -> httpx.Response:
    """A batch as Snowflake sends it, to the functions port of the gateway `client` talks to."""
    url = functions_url(str(client.base_url).rstrip("/"))
    with httpx.Client(base_url=url, timeout=client.timeout) as snowflake:
        return call_function(snowflake, path, rows, {**HEADERS, "sf-external-function-query-batch-id": batch_id})


def test_transcribe_function_rows_are_real_transcripts(client: httpx.Client) -> None:
    rows = [
        [0, "@AUDIO_FILES_STAGE/en_jfk.flac", "en"],
        [2, "@AUDIO_FILES_STAGE/en_jfk_video.mp4", ""],  # a video container, the language found by Whisper
        [4, "@AUDIO_FILES_STAGE/en_jfk.m4a"],  # TRANSCRIBE(source) without a language
    ]
    response = _function(client, "/functions/transcribe", rows, "batch-0001")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row[0] for row in data] == [0, 2, 4]
    for _, value in data:
        assert wer(MANIFEST_JFK, value["text"]) == 0.0, value
        assert value["language"] == "en" and value["duration"] == pytest.approx(11.0, abs=0.5)
        assert value["segments"] and value["segments"][0]["start"] >= 0


def test_transcribe_longer_than_a_request_is_answered_by_polling_the_real_gateway(impatient_gateway: str) -> None:
    """Snowflake's asynchronous protocol end to end against the gateway process and the real Ray app: the first
    POST is 202 at once, Snowflake's retry of it (same batch id) starts no second job, GET polls with the batch id
    are 202 until every row is done, then 200 with each row in order; the answered batch is forgotten (404).
    https://docs.snowflake.com/en/sql-reference/external-functions-implementation"""
    rows = [
        [0, "@AUDIO_FILES_STAGE/en_jfk.flac", "en"],
        [1, "@AUDIO_FILES_STAGE/no_such_call.wav", "en"],
        [2, "@AUDIO_FILES_STAGE/en_jfk.m4a"],
    ]
    headers = {**HEADERS, "sf-external-function-query-batch-id": "async-real-1"}
    url = functions_url(impatient_gateway)
    with httpx.Client(base_url=url, timeout=30) as snowflake, httpx.Client(base_url=impatient_gateway) as public:
        first = snowflake.post("/functions/transcribe", json={"data": rows}, headers=headers)
        assert first.status_code == 202, first.text
        jobs = public.get("/v1/jobs", params={"limit": 50}).json()["jobs"]
        retry = snowflake.post("/functions/transcribe", json={"data": rows}, headers=headers)
        assert retry.status_code in (200, 202), retry.text
        polls, response = 0, retry
        while response.status_code == 202:
            time.sleep(0.2)
            response = snowflake.get("/functions/transcribe", headers=headers)
            polls += 1
        assert response.status_code == 200, response.text
        assert polls >= 1 and len(jobs) == 2  # the missing file became no job; the retry added none
        assert len(public.get("/v1/jobs", params={"limit": 50}).json()["jobs"]) == 2
        data = response.json()["data"]
        assert [row for row, _ in data] == [0, 1, 2]
        assert wer(MANIFEST_JFK, data[0][1]["text"]) == 0.0 and wer(MANIFEST_JFK, data[2][1]["text"]) == 0.0
        assert data[1][1]["error"]["code"] == "source_not_found"
        assert {data[0][1]["job_id"], data[2][1]["job_id"]} == {job["id"] for job in jobs}
        assert snowflake.get("/functions/transcribe", headers=headers).status_code == 404


def test_submit_then_status_functions_carry_the_transcript(client: httpx.Client) -> None:
    rows = [[0, "@AUDIO_FILES_STAGE/en_jfk.flac", "en", "en"]]
    job_id = _function(client, "/functions/submit", rows, "batch-0003").json()["data"][0][1]["job_id"]
    wait(client, job_id)
    status = _function(client, "/functions/job_status", [[0, job_id]], "batch-0004").json()
    value = status["data"][0][1]
    assert value["status"] == "succeeded" and value["progress"] == 1.0
    assert wer(MANIFEST_JFK, value["text"]) == 0.0 and wer(MANIFEST_JFK, value["translation"]) == 0.0


@pytest.mark.skipif(not SHARED_AUDIO.is_dir(), reason="the Hindi clips live in ../shared/audio (not committed)")
def test_a_hindi_batch_completes_with_translations(client: httpx.Client) -> None:
    body = {"stage": "@HINDI_STAGE", "pattern": r"hi_.*[.]mp3", "language": "hi", "translate_to": "en"}
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["files"] == 3
    deadline = time.monotonic() + 600
    while batch["status"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
        batch = client.get(f"/v1/batches/{batch['id']}").json()
    assert batch["status"] == "succeeded", batch
    for job_id in batch["jobs"]:
        transcript = client.get(f"/v1/jobs/{job_id}/transcript").json()
        translation = client.get(f"/v1/jobs/{job_id}/translation").json()
        assert transcript["language"] == "hi" and transcript["text"].strip()
        assert translation["method"] == "whisper" and translation["source_language"] == "hi"
        # Whisper's translate task writes Latin-script English, whatever `base` makes of the Hindi.
        letters = [c for c in translation["text"] if c.isalpha()]
        assert letters and sum(c.isascii() for c in letters) >= 0.9 * len(letters), translation
