"""Stage input, batches and the Snowflake service-function protocol, in process (the gateway app, SQLite store,
both doors as TestClients, the FAKE inference of tests/fakes.py).

A local folder is mounted as `@AUDIO_FILES_STAGE` (`stage_mounts`), as an SPCS stage volume would be; the real
audio files in it are probed (PyAV) at submit, as in production. The service functions are driven the way
Snowflake drives them: batches of rows, Snowflake's headers, a retried batch, a 429 and a retry, rows with a
missing file.

What needs the real Ray app (real transcription of stage files: the text, the language, the duration Whisper
finds; Hindi batches translated by Whisper) stays in tests/integration/test_stages.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Gateway, gateway
from tests.fakes import FakeInference
from tests.integration.helpers import DATA, FUNCTION_HEADERS, MANIFEST_JFK, call_function, stage_of_clips, wait

QUEUE_BOUND = 6
HEADERS = FUNCTION_HEADERS


@pytest.fixture(scope="module")
def stage_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = stage_of_clips(tmp_path_factory.mktemp("audio-stage"))
    (folder / "calls").mkdir()
    shutil.copy(DATA / "en_jfk.flac", folder / "calls" / "monday.flac")
    (folder / "notes.txt").write_text("not audio")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    (folder / "empty.mp3").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def gw(stage_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(
        tmp_path_factory.mktemp("stage-gateway") / "data",
        FakeInference(segments=11, text=MANIFEST_JFK),  # every clip here is JFK's 11 s: the fake's duration
        stage_mounts={"AUDIO_FILES_STAGE": stage_folder},
        max_queued_jobs=QUEUE_BOUND,
        retry_backoff_s=0.2,
        admin_users=["OPS"],
        admin_role="WHISPER_ADMIN",
    ) as running:
        yield running


def test_a_stage_file_becomes_a_job(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk_video.mp4", "language": "en"})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["source"] == "@AUDIO_FILES_STAGE/en_jfk_video.mp4"
    assert created["audio_seconds"] == pytest.approx(11.0, abs=0.5)  # probed through the mount at submit
    job = wait(client, created["id"])
    assert job["status"] == "succeeded", job
    # Lower-case stage names are the same stage (unquoted identifiers are case-insensitive).
    again = client.post("/v1/jobs", json={"source": "@audio_files_stage/calls/monday.flac", "idempotency_key": "m1"})
    assert again.status_code == 202 and again.json()["source"] == "@AUDIO_FILES_STAGE/calls/monday.flac"
    replay = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/calls/monday.flac", "idempotency_key": "m1"})
    assert replay.status_code == 200 and replay.json()["id"] == again.json()["id"]
    assert wait(client, again.json()["id"])["status"] == "succeeded"


def test_translation_into_the_language_already_spoken_keeps_the_text(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk.m4a", "translate_to": "en"})
    assert response.status_code == 202, response.text
    assert response.json()["links"]["translation"].endswith("/translation")
    job = wait(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    translation = client.get(f"/v1/jobs/{job['id']}/translation").json()
    assert translation["method"] == "none" and translation["target_language"] == "en"
    assert translation["text"] == client.get(f"/v1/jobs/{job['id']}/transcript").json()["text"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"source": "@AUDIO_FILES_STAGE/missing.mp3"}, 404, "source_not_found"),
        ({"source": "@OTHER_STAGE/a.mp3"}, 403, "stage_not_allowed"),  # not mounted, so not on the allow-list
        ({"source": "@AUDIO_FILES_STAGE/../etc/passwd"}, 422, "invalid_source"),
        ({"source": "@AUDIO_FILES_STAGE/calls/../../x.mp3"}, 422, "invalid_source"),
        ({"source": "@AUDIO_FILES_STAGE"}, 422, "invalid_source"),
        ({"source": "@x'; DROP TABLE TRANSCRIPTIONS; --/a.mp3"}, 422, "invalid_stage"),
        ({"source": '@"QUOTED STAGE"/a.mp3'}, 422, "invalid_stage"),
        ({"source": "@1STAGE/a.mp3"}, 422, "invalid_stage"),
        ({"source": "/etc/passwd"}, 422, "invalid_source"),
        ({"source": "ftp://example.com/a.mp3"}, 422, "invalid_source"),
        ({"source": "http://example.com/a.mp3"}, 422, "invalid_source"),  # https only by default
        ({"source": "https://127.0.0.1:8080/v1/jobs"}, 422, "forbidden_address"),
        ({"source": "https://169.254.169.254/latest/meta-data/"}, 422, "forbidden_address"),
        ({"source": "https://[::ffff:10.0.0.1]/a.mp3"}, 422, "forbidden_address"),
        ({"source": "https://user:pw@example.com/a.mp3"}, 422, "invalid_source"),
        ({"source": "@AUDIO_FILES_STAGE/notes.txt"}, 415, "unsupported_media"),
        ({"source": "@AUDIO_FILES_STAGE/broken.wav"}, 415, "unsupported_media"),
        ({"source": "@AUDIO_FILES_STAGE/empty.mp3"}, 400, "empty_file"),
        ({"source": "@AUDIO_FILES_STAGE/en_jfk.flac", "colour": "blue"}, 422, "validation_error"),
        ({"source": "@AUDIO_FILES_STAGE/en_jfk.flac", "translate_to": "fr"}, 422, "unsupported_translation"),
        ({"source": "@AUDIO_FILES_STAGE/en_jfk.flac", "translate_to": "xx"}, 422, "validation_error"),
        ({"source": 42}, 422, "validation_error"),
    ],
)
def test_bad_stage_sources_are_refused(client: httpx.Client, body: dict, status: int, code: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_bad_json_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = client.post("/v1/jobs", json=["@AUDIO_FILES_STAGE/en_jfk.flac"])
    assert response.status_code == 422


def test_a_batch_transcribes_every_matching_file(client: httpx.Client) -> None:
    response = client.post("/v1/batches", json={"stage": "@AUDIO_FILES_STAGE", "pattern": "en_jfk[.].*|calls/.*"})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["files"] == 3 and len(batch["jobs"]) == 3
    deadline = time.monotonic() + 300
    while batch["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        batch = client.get(f"/v1/batches/{batch['id']}").json()
    assert batch["status"] == "succeeded", batch
    assert batch["counts"] == {"succeeded": 3}
    assert batch["audio_seconds_done"] == pytest.approx(33.0, abs=1.5)
    sources = sorted(client.get(f"/v1/jobs/{j}").json()["source"] for j in batch["jobs"])
    assert sources == [
        "@AUDIO_FILES_STAGE/calls/monday.flac",
        "@AUDIO_FILES_STAGE/en_jfk.flac",
        "@AUDIO_FILES_STAGE/en_jfk.m4a",
    ]
    # A folder prefix narrows the batch; the pattern is matched against the path relative to the stage.
    narrowed = client.post("/v1/batches", json={"stage": "@AUDIO_FILES_STAGE/calls", "pattern": ".*[.]flac"})
    assert narrowed.status_code == 202 and narrowed.json()["files"] == 1
    for job_id in narrowed.json()["jobs"]:
        wait(client, job_id)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"stage": "@AUDIO_FILES_STAGE", "pattern": ".*[.]ogg"}, 404, "no_matching_files"),
        ({"stage": "@AUDIO_FILES_STAGE", "pattern": "(unclosed"}, 422, "invalid_pattern"),
        ({"stage": "@AUDIO_FILES_STAGE/nowhere", "pattern": ".*"}, 404, "source_not_found"),
        ({"stage": "@AUDIO_FILES_STAGE", "pattern": ".*"}, 429, "queue_full"),  # 7 files > the bound of 6
        ({"stage": "AUDIO_FILES_STAGE"}, 422, "invalid_source"),
        ({"stage": "@bad-name"}, 422, "invalid_stage"),
        ({"pattern": ".*"}, 422, "validation_error"),
    ],
)
def test_bad_batches_are_refused(client: httpx.Client, body: dict, status: int, code: str) -> None:
    response = client.post("/v1/batches", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if status == 429:
        assert int(response.headers["retry-after"]) > 0


def test_unknown_batch_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/batches/batch_nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "batch_not_found"


def _function(gw: Gateway, path: str, rows: list, batch_id: str) -> httpx.Response:
    """A batch as Snowflake sends it, to the gateway's functions port."""
    with gw.client("functions") as snowflake:
        return call_function(snowflake, path, rows, {**HEADERS, "sf-external-function-query-batch-id": batch_id})


def test_transcribe_function_answers_every_row_in_order(gw: Gateway, client: httpx.Client) -> None:
    rows = [
        [0, "@AUDIO_FILES_STAGE/en_jfk.flac", "en"],
        [1, "@AUDIO_FILES_STAGE/missing.mp3", None],
        [2, "@AUDIO_FILES_STAGE/en_jfk_video.mp4", ""],
        [3, "@AUDIO_FILES_STAGE/notes.txt", "auto"],
        [4, "@AUDIO_FILES_STAGE/en_jfk.m4a"],  # TRANSCRIBE(source) without a language
    ]
    response = _function(gw, "/functions/transcribe", rows, "batch-0001")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row[0] for row in data] == [0, 1, 2, 3, 4]
    for index in (0, 2, 4):
        value = data[index][1]
        assert value["text"] == gw.inference.transcript(gw.inference.calls[0]).text, value
        assert value["language"] == "en" and value["duration"] == pytest.approx(11.0, abs=0.5)
        assert value["segments"] and value["segments"][0]["start"] >= 0
    assert data[1][1]["error"]["code"] == "source_not_found"
    assert data[3][1]["error"]["code"] == "unsupported_media"

    # Snowflake retries a batch it did not get an answer for: same batch id, no new transcription.
    total = len(client.get("/v1/jobs", params={"limit": 200}).json()["jobs"])
    retried = _function(gw, "/functions/transcribe", rows, "batch-0001")
    assert retried.status_code == 200
    assert [r[1].get("job_id") for r in retried.json()["data"]] == [r[1].get("job_id") for r in data]
    assert len(client.get("/v1/jobs", params={"limit": 200}).json()["jobs"]) == total


def test_transcribe_function_is_429_when_saturated_then_succeeds_on_retry(gw: Gateway) -> None:
    too_many = [[i, "@AUDIO_FILES_STAGE/en_jfk.m4a", "en"] for i in range(QUEUE_BOUND + 1)]
    response = _function(gw, "/functions/transcribe", too_many, "batch-0002")
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
    # Snowflake splits nothing itself; with MAX_BATCH_ROWS under the bound the retry goes through.
    response = _function(gw, "/functions/transcribe", too_many[:2], "batch-0002")
    assert response.status_code == 200
    assert all("text" in value for _, value in response.json()["data"])


def test_submit_then_status_functions(gw: Gateway, client: httpx.Client) -> None:
    rows = [[0, "@AUDIO_FILES_STAGE/en_jfk.flac", "en", "en"], [1, "@NOPE/a.mp3", "en", None]]
    data = _function(gw, "/functions/submit", rows, "batch-0003").json()["data"]
    job_id = data[0][1]["job_id"]
    assert data[0][1]["status"] == "queued" and data[1][1]["error"]["code"] == "stage_not_allowed"
    wait(client, job_id)
    status = _function(gw, "/functions/job_status", [[0, job_id], [1, "job_missing"]], "batch-0004").json()
    value = status["data"][0][1]
    assert value["status"] == "succeeded" and value["progress"] == 1.0
    transcript = client.get(f"/v1/jobs/{job_id}/transcript").json()["text"]
    assert value["text"] == transcript and value["translation"] == transcript  # English into English: as is
    assert status["data"][1][1]["error"]["code"] == "job_not_found"


@pytest.mark.parametrize(
    "body",
    [{"rows": []}, {"data": "x"}, {"data": [["zero", "@A/b.mp3"]]}, {"data": [[0]]}, {"data": [[0, "a", "b", "c"]]}],
)
def test_malformed_function_batches_are_400(functions: httpx.Client, body: dict) -> None:
    response = functions.post("/functions/transcribe", json=body, headers=HEADERS)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_batch", "validation_error")


def test_callers_see_only_their_own_jobs(client: httpx.Client, functions: httpx.Client) -> None:
    """In SPCS the ingress names the Snowflake user in Sf-Context-Current-User; jobs are scoped to it."""
    alice, bob = {"sf-context-current-user": "ALICE"}, {"sf-context-current-user": "BOB"}
    created = client.post(
        "/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk.m4a", "idempotency_key": "a1"}, headers=alice
    )
    assert created.status_code == 202 and created.json()["owner"] == "ALICE"
    job_id = created.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=alice).status_code == 200
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/transcript"):
        assert client.get(path, headers=bob).json()["error"]["code"] == "job_not_found"  # not even its existence
    assert client.delete(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
    assert job_id not in [j["id"] for j in client.get("/v1/jobs", headers=bob).json()["jobs"]]
    assert job_id in [j["id"] for j in client.get("/v1/jobs", headers=alice).json()["jobs"]]
    # Idempotency keys are per owner: Bob's "a1" is his own job, and says nothing of Alice's.
    again = client.post(
        "/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/en_jfk.m4a", "idempotency_key": "a1"}, headers=bob
    )
    assert again.status_code == 202 and again.json()["owner"] == "BOB" and again.json()["id"] != job_id
    status = functions.post("/functions/job_status", json={"data": [[0, job_id]]}, headers=bob).json()
    assert status["data"][0][1]["error"]["code"] == "job_not_found"
    # An admin user sees every job; so does the admin role, where Snowflake sends it (service functions), but a
    # role header on the public port is the client's own claim and grants nothing.
    admin = {"sf-context-current-user": "OPS"}
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).status_code == 200
    assert job_id in [j["id"] for j in client.get("/v1/jobs", headers=admin).json()["jobs"]]
    claimed = {**bob, "sf-context-current-role": "whisper_admin"}
    assert client.get(f"/v1/jobs/{job_id}", headers=claimed).status_code == 404
    status = functions.post("/functions/job_status", json={"data": [[0, job_id]]}, headers=claimed).json()
    assert status["data"][0][1]["job_id"] == job_id
    assert wait(client, job_id)["status"] == "succeeded"
