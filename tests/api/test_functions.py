"""`TRANSCRIBE()` over files that take longer than any HTTP request may stay open: the asynchronous
service-function protocol, in process (the gateway app, SQLite store, both doors as TestClients).

The Ray app is the FAKE inference (tests/fakes.py: a fixed transcript, "stand-in", after a set time), because
what is under test is the protocol between Snowflake and the gateway, not Whisper. The client plays Snowflake:
POST the batch, then GET with the same batch id while the answer is 202, on the gateway's service-function port
(the public port answers the HTTP API only). A "restart" is the app's lifespan ending and another app starting
on the same data directory, as `spcs-whisper gateway` does on SIGTERM and a new start.
https://docs.snowflake.com/en/sql-reference/external-functions-implementation
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Gateway, gateway
from tests.fakes import FakeInference
from tests.integration.helpers import call_function
from tests.store_load import write_stage

SECONDS = 1.5  # what the fake takes per file
READ_TIMEOUT = 1.5  # no request may stay open longer than this (SPCS ingress, Snowflake's own timeouts)
BATCH = "sf-external-function-query-batch-id"
QUERY = "sf-external-function-current-query-id"
USER = {"sf-context-current-user": "ANALYST"}
SETTINGS: dict[str, Any] = {"function_wait_s": 0.1, "function_timeout_s": 30, "admin_role": "WHISPER_DEPLOYER"}


def _fake() -> FakeInference:
    return FakeInference(seconds=SECONDS, segments=1, text="stand-in")


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stage(tmp_path_factory.mktemp("stage"), 4)


def _gateway(data: Path, stage: Path) -> Any:
    return gateway(data, _fake(), stage_mounts={"AUDIO_FILES_STAGE": stage}, **SETTINGS)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, stage: Path) -> Iterator[Gateway]:
    with _gateway(tmp_path_factory.mktemp("gateway") / "data", stage) as running:
        yield running


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    """Snowflake's side: the service-function port."""
    yield gw.client("functions")


@pytest.fixture
def public(gw: Gateway) -> Iterator[httpx.Client]:
    """The HTTP API (no token configured, no user named: every job)."""
    yield gw.client("public")


def _rows() -> list[list]:
    return [
        [0, "@AUDIO_FILES_STAGE/call_00000.wav", "en"],
        [1, "@AUDIO_FILES_STAGE/missing.wav", "en"],
        [2, "@AUDIO_FILES_STAGE/call_00001.wav"],
    ]


def _jobs(client: httpx.Client) -> int:
    return len(client.get("/v1/jobs", params={"limit": 200}).json()["jobs"])


def test_a_batch_longer_than_any_request_is_answered_by_polling(client: httpx.Client) -> None:
    headers = {**USER, BATCH: "async-1", QUERY: "q-1"}
    start = time.monotonic()
    first = client.post("/functions/transcribe", json={"data": _rows()}, headers=headers)
    assert first.status_code == 202, first.text  # at once: the files take SECONDS each
    assert time.monotonic() - start < READ_TIMEOUT
    polls = 0
    response = first
    while response.status_code == 202:
        time.sleep(0.2)
        response = client.get("/functions/transcribe", headers=headers)
        polls += 1
    assert response.status_code == 200, response.text
    assert time.monotonic() - start >= SECONDS and polls >= 3
    data = response.json()["data"]
    assert [row for row, _ in data] == [0, 1, 2]
    assert data[0][1]["text"] == "stand-in" and data[2][1]["text"] == "stand-in"
    assert data[1][1]["error"]["code"] == "source_not_found"
    # Answered: the batch is forgotten, a late poll is 404 (Snowflake would send the batch again).
    assert client.get("/functions/transcribe", headers=headers).status_code == 404


def test_a_retried_batch_reuses_its_jobs(client: httpx.Client, public: httpx.Client) -> None:
    headers = {**USER, BATCH: "async-2", QUERY: "q-2"}
    before = _jobs(public)
    first = client.post("/functions/transcribe", json={"data": _rows()}, headers=headers)
    assert first.status_code == 202
    assert _jobs(public) == before + 2
    again = client.post("/functions/transcribe", json={"data": _rows()}, headers=headers)  # Snowflake's retry
    assert again.status_code == 202 and _jobs(public) == before + 2
    done = call_function(client, "/functions/transcribe", _rows(), headers)
    assert done.status_code == 200 and _jobs(public) == before + 2
    ids = [value.get("job_id") for _, value in done.json()["data"]]
    assert ids[0] and ids[2] and ids[1] is None


def test_without_a_batch_id_a_retry_starts_no_second_job(
    gw: Gateway, public: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Not what Snowflake sends, but logged and safe: the query id and the row's arguments name the job."""
    headers = {**USER, QUERY: "q-no-batch"}
    rows = [[0, "@AUDIO_FILES_STAGE/call_00002.wav", "en"]]
    before = _jobs(public)
    caplog.set_level(logging.WARNING)
    with gw.client("functions") as patient:  # no polling without a batch id: the call waits
        first = patient.post("/functions/transcribe", json={"data": rows}, headers=headers)
        retry = patient.post("/functions/transcribe", json={"data": rows}, headers=headers)
    assert first.status_code == retry.status_code == 200, first.text
    assert first.json()["data"][0][1]["job_id"] == retry.json()["data"][0][1]["job_id"]
    assert _jobs(public) == before + 1
    assert f"without the {BATCH} header" in caplog.text


def test_polls_need_a_known_batch_id(client: httpx.Client) -> None:
    missing = client.get("/functions/transcribe", headers=USER)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_batch_id"
    unknown = client.get("/functions/transcribe", headers={**USER, BATCH: "never-sent"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "batch_not_found"


def test_a_batch_outlives_a_gateway_restart(tmp_path: Path, stage: Path) -> None:
    """The 202 went out, then the gateway restarted: Snowflake's next poll still gets every row."""
    data = tmp_path / "data"
    headers = {**USER, BATCH: "async-restart", QUERY: "q-3"}
    with _gateway(data, stage) as first, first.client("functions") as client:
        assert client.post("/functions/transcribe", json={"data": _rows()}, headers=headers).status_code == 202
    with _gateway(data, stage) as second, second.client("functions") as client:
        response = client.get("/functions/transcribe", headers=headers)
        while response.status_code == 202:
            time.sleep(0.2)
            response = client.get("/functions/transcribe", headers=headers)
        assert response.status_code == 200, response.text
        assert [value.get("text") for _, value in response.json()["data"]] == ["stand-in", None, "stand-in"]


def test_whisper_drain_finishes_running_jobs_and_claims_no_more(tmp_path: Path, stage: Path) -> None:
    """`SELECT WHISPER_DRAIN(60)`, the first step of `make teardown`: for the admin role only; the running job
    finishes, nothing new is claimed, and the answer says whether the gateway may be dropped."""
    deployer = {"sf-context-current-user": "OPS", "sf-context-current-role": "WHISPER_DEPLOYER", BATCH: "drain-1"}
    with _gateway(tmp_path / "data", stage) as gw, gw.client("public") as client, gw.client("functions") as sql:
        job = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/call_00000.wav"}).json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{job}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        analyst = sql.post("/functions/drain", json={"data": [[0, 60]]}, headers={**USER, BATCH: "d-0"})
        assert analyst.json()["data"][0][1]["error"]["code"] == "forbidden"
        # The role header counts on the service-function port only: through the public port, 404.
        assert client.post("/functions/drain", json={"data": [[0, 60]]}, headers=deployer).status_code == 404
        value = sql.post("/functions/drain", json={"data": [[0, 60]]}, headers=deployer).json()
        value = value["data"][0][1]
        assert value == {"drained": True, "running": 0, "queued": 0, "pending_exports": 0}, value
        assert client.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"  # it finished, not cut short
        later = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/call_00001.wav"}).json()["id"]
        time.sleep(SECONDS + 1)
        assert client.get(f"/v1/jobs/{later}").json()["status"] == "queued"  # kept for the next deployment
