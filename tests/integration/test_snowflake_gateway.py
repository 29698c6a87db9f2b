"""The gateway in its Snowflake configuration, end to end over real HTTP.

Real: the gateway app (uvicorn, in this process so it can share the emulator session), the Ray Serve app,
the stage mount, PyAV, Whisper. EMULATED: Snowflake is Snowpark's local testing mode (Snowflake's own
emulator; the jobs live in the gateway's local queue and are exported to its tables in group commits), and
SNOWFLAKE.CORTEX.TRANSLATE is a STAND-IN registered with `snowflake.snowpark.mock.patch`
(the emulator has no Cortex): it tags the text it gets, so the test can see that the transcript went
through it. An outage (every Snowflake call raising) is switched on to show that jobs are accepted and run
all the same, and that their rows arrive once when Snowflake answers again.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from snowflake.snowpark.functions import col
from snowflake.snowpark.mock import ColumnEmulator, patch
from snowflake.snowpark.mock._functions import MockedFunctionRegistry

from service.config import Settings
from tests.harness import FUNCTION_URLS, Service, functions_url, wait_ready
from tests.integration.helpers import DATA, MANIFEST_JFK, SHARED_AUDIO, call_function, wait, wer
from tests.snowflake.outage import FlakySessions
from tests.store_load import serving_gateway

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)]
STANDIN_TAG = "[stand-in cortex {source}->{target}] "


@pytest.fixture(scope="module")
def cortex_standin() -> Iterator[list[tuple[str, str, str]]]:
    """STAND-IN for SNOWFLAKE.CORTEX.TRANSLATE (not Snowflake's): returns the text with a tag; records calls."""
    calls: list[tuple[str, str, str]] = []

    def standin_translate(text: ColumnEmulator, source: ColumnEmulator, target: ColumnEmulator) -> ColumnEmulator:
        rows = list(zip(text, source, target))
        calls.extend(rows)
        return ColumnEmulator([STANDIN_TAG.format(source=s or "auto", target=t) + x for x, s, t in rows])

    patch("snowflake.cortex.translate")(standin_translate)
    yield calls
    MockedFunctionRegistry.get_or_create().unregister("snowflake.cortex.translate")


@pytest.fixture(scope="module")
def snowflake() -> Iterator[FlakySessions]:
    sessions = FlakySessions()
    yield sessions
    sessions.close()


@pytest.fixture(scope="module")
def gateway(
    service: Service, snowflake: FlakySessions, cortex_standin: list, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    stage = tmp_path_factory.mktemp("sf-stage")
    for name in ("en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4"):
        shutil.copy(DATA / name, stage / name)
    mounts = {"AUDIO_FILES_STAGE": stage}
    if SHARED_AUDIO.is_dir():
        mounts["HINDI_STAGE"] = SHARED_AUDIO
    settings = Settings(
        store="snowflake",
        snowflake_local_testing=True,
        translate_method="cortex-translate",
        data_dir=tmp_path_factory.mktemp("sf-gateway"),
        serve_url=service.serve_url,
        stage_mounts=mounts,
        export_interval_s=0.2,
        export_retry_s=0.2,
        retry_backoff_s=0.2,
    )
    with serving_gateway(settings, snowflake) as (url, functions):  # both ports: the API and the functions'
        FUNCTION_URLS[url] = functions
        wait_ready(url, 60)
        yield url


@pytest.fixture
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=300) as c:
        yield c


def table(snowflake: FlakySessions, name: str, job_id: str) -> list[dict[str, Any]]:
    """Rows Snowflake (the emulator) holds for a job, read behind the service's back."""
    return [r.as_dict() for r in snowflake.session.table(name).filter(col("JOB_ID") == job_id).collect()]


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] != "running":
            return batch
        time.sleep(0.5)
    raise TimeoutError(batch_id)


def test_a_batch_lands_in_snowflake_tables_with_cortex_translations(
    client: httpx.Client, snowflake: FlakySessions, cortex_standin: list
) -> None:
    body = {"stage": "@AUDIO_FILES_STAGE", "pattern": r"en_jfk.*", "language": "en", "translate_to": "de"}
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = wait_batch(client, response.json()["id"])
    assert batch["status"] == "succeeded" and batch["counts"] == {"succeeded": 3}, batch
    for job_id in batch["jobs"]:
        wait_exported(snowflake, job_id)
    [batch_row] = [
        r.as_dict()
        for r in snowflake.session.table("TRANSCRIPTION_BATCHES").filter(col("BATCH_ID") == batch["id"]).collect()
    ]
    assert batch_row["FILES"] == 3 and batch_row["STAGE"] == "@AUDIO_FILES_STAGE"
    for job_id in batch["jobs"]:
        [job] = table(snowflake, "TRANSCRIPTION_JOBS", job_id)
        assert job["STATUS"] == "succeeded" and job["SOURCE"].startswith("@AUDIO_FILES_STAGE/en_jfk")
        assert job["BATCH_ID"] == batch["id"] and job["TRANSLATE_TO"] == "de"
        [transcription] = table(snowflake, "TRANSCRIPTIONS", job_id)
        assert wer(MANIFEST_JFK, transcription["TEXT"]) == 0.0
        [translation] = table(snowflake, "TRANSLATIONS", job_id)
        assert translation["METHOD"] == "cortex.translate" and translation["TARGET_LANGUAGE"] == "de"
        assert translation["TEXT"] == STANDIN_TAG.format(source="en", target="de") + transcription["TEXT"].strip()
        served = client.get(f"/v1/jobs/{job_id}/translation").json()
        assert served == {
            "text": translation["TEXT"],
            "source_language": "en",
            "target_language": "de",
            "method": "cortex.translate",
        }
    assert len(cortex_standin) >= 3


def test_jobs_run_while_snowflake_is_down_and_tables_catch_up(client: httpx.Client, snowflake: FlakySessions) -> None:
    snowflake.down = True  # Snowflake stops answering before the job is even submitted
    try:
        response = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk.flac", "language": "en"})
        assert response.status_code == 202, response.text  # the queue is local: accepted all the same
        job_id = response.json()["id"]
        job = wait(client, job_id)
        assert job["status"] == "succeeded", job
        assert wer(MANIFEST_JFK, client.get(f"/v1/jobs/{job_id}/transcript").json()["text"]) == 0.0
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # still routed to: the export retries in the background
        export = ready.json()["snowflake_export"]
        assert export["pending"] >= 1 and export["failures"] >= 1 and export["last_error"], export
        assert not table(snowflake, "TRANSCRIPTIONS", job_id)  # nothing reached Snowflake yet...
    finally:
        snowflake.down = False
    wait_exported(snowflake, job_id)
    time.sleep(1.0)  # a few more flush rounds: still exactly one row
    assert len(table(snowflake, "TRANSCRIPTIONS", job_id)) == 1
    assert table(snowflake, "TRANSCRIPTION_JOBS", job_id)[0]["STATUS"] == "succeeded"


def wait_exported(snowflake: FlakySessions, job_id: str, timeout: float = 30) -> None:
    """Until the export (a group commit every export_interval_s) has written the finished job; its results
    are written before its job row, so they are there too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = table(snowflake, "TRANSCRIPTION_JOBS", job_id)
        if rows and rows[0]["STATUS"] in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} not exported in {timeout} s")


def test_the_transcribe_function_with_the_snowflake_store(client: httpx.Client, snowflake: FlakySessions) -> None:
    rows = [[0, "@AUDIO_FILES_STAGE/en_jfk_video.mp4", "en"], [1, "@AUDIO_FILES_STAGE/gone.mp4", "en"]]
    headers = {"sf-external-function-query-batch-id": "sf-batch-1", "sf-context-current-user": "ANALYST"}
    with httpx.Client(base_url=functions_url(str(client.base_url).rstrip("/")), timeout=300) as sql:
        data = call_function(sql, "/functions/transcribe", rows, headers).json()["data"]
    assert wer(MANIFEST_JFK, data[0][1]["text"]) == 0.0 and data[1][1]["error"]["code"] == "source_not_found"
    wait_exported(snowflake, data[0][1]["job_id"])
    assert len(table(snowflake, "TRANSCRIPTIONS", data[0][1]["job_id"])) == 1


@pytest.mark.skipif(not SHARED_AUDIO.is_dir(), reason="the Hindi clips live in ../shared/audio (not committed)")
def test_hindi_batch_translated_by_cortex(client: httpx.Client, snowflake: FlakySessions) -> None:
    body = {"stage": "@HINDI_STAGE", "pattern": r"hi_.*[.]mp3", "language": "hi", "translate_to": "en"}
    response = client.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    batch = wait_batch(client, response.json()["id"])
    assert batch["status"] == "succeeded" and batch["files"] == 3, batch
    for job_id in batch["jobs"]:
        wait_exported(snowflake, job_id)
        [translation] = table(snowflake, "TRANSLATIONS", job_id)
        assert translation["SOURCE_LANGUAGE"] == "hi" and translation["METHOD"] == "cortex.translate"
        assert translation["TEXT"].startswith(STANDIN_TAG.format(source="hi", target="en"))
