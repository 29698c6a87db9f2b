"""Issue 18 (who spoke when) through the service functions: `TRANSCRIBE(source, OBJECT_CONSTRUCT('speakers', TRUE))`
and `TRANSCRIBE_SUBMIT(source, options)`, as Snowflake calls them (sql/03_service_functions.sql).

Snowflake sends an OBJECT argument as a JSON object in the row (https://docs.snowflake.com/en/sql-reference/
external-functions-data-format), so a row is `[n, source, {"speakers": true, ...}]`. The gateway runs in process
(tests/api/conftest.py: SQLite store, both doors as TestClients); the inference is a FAKE whose transcript
carries speakers when the job asks for them, as the Ray app's diarization does: what is under test is the way
from the row's object to the job's JobOptions and from the transcript back to the row's VARIANT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.options import SpeakerCount
from tests.api.conftest import Gateway, gateway
from tests.fakes import SpeakingFake
from tests.integration.helpers import call_function
from tests.store_load import write_stage

BATCH = "sf-external-function-query-batch-id"
QUERY = "sf-external-function-current-query-id"
USER = {"sf-context-current-user": "ANALYST"}
SOURCE = "@AUDIO_FILES_STAGE/call_00000.wav"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stage = write_stage(tmp_path_factory.mktemp("stage"), 4)
    fake = SpeakingFake(words=True, segments=3, text="one two three four five six")
    settings = {"function_wait_s": 0.1, "function_timeout_s": 30}
    with gateway(
        tmp_path_factory.mktemp("gateway") / "data", fake, stage_mounts={"AUDIO_FILES_STAGE": stage}, **settings
    ) as g:
        yield g


@pytest.fixture
def sql(gw: Gateway) -> Iterator[httpx.Client]:
    """Snowflake's side: the service-function port."""
    with gw.client("functions") as client:
        yield client


def _call(sql: httpx.Client, path: str, rows: list, batch: str) -> list[Any]:
    response = call_function(sql, path, rows, {**USER, BATCH: batch, QUERY: f"q-{batch}"}, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row for row, _ in data] == [row[0] for row in rows]  # every row, in order
    return [value for _, value in data]


def _job_options(gw: Gateway, job_id: str) -> Any:
    job = gw.public.portal.call(gw.services.store.get, job_id)  # type: ignore[union-attr]
    assert job is not None
    return job.options


def test_transcribe_with_an_options_object_returns_who_spoke_when(gw: Gateway, sql: httpx.Client) -> None:
    (value,) = _call(sql, "/functions/transcribe", [[0, SOURCE, {"speakers": True, "language": "hi"}]], "spk-1")
    assert "error" not in value, value
    assert value["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert [s["speaker"] for s in value["segments"]] == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]
    assert all(w["speaker"] == s["speaker"] for s in value["segments"] for w in s["words"])
    assert value["language"] == "hi" and value["text"] == "one two three four five six"
    options = _job_options(gw, value["job_id"])
    assert options.speakers == SpeakerCount() and options.language == "hi"
    assert options.stored()["speakers"] == "auto"  # the OPTIONS VARIANT keeps it as text


def test_every_job_option_can_travel_in_the_object(gw: Gateway, sql: httpx.Client) -> None:
    """Keys are case-insensitive, NULL values (OBJECT_CONSTRUCT_KEEP_NULL) mean unset; a count, a range as
    text and as {"min", "max"} all reach the job; the object's JSON text (a VARIANT coerced to VARCHAR) too."""
    rows = [
        [0, SOURCE, {"SPEAKERS": 3, "Word_Timestamps": True, "prompt": None, "hotwords": "Snowflake"}],
        [1, SOURCE, {"speakers": "2-4", "task": "transcribe", "temperature": 0.2}],
        [2, SOURCE, {"speakers": {"min": 2, "max": 3}}],
        [3, SOURCE, '{"speakers": "auto", "language": "en"}'],
        [4, SOURCE, {"speakers": False, "language": "en"}],
    ]
    values = _call(sql, "/functions/transcribe", rows, "spk-2")
    assert all("error" not in v for v in values), values
    asked = [_job_options(gw, v["job_id"]) for v in values]
    assert [o.speakers for o in asked] == [
        SpeakerCount(3, 3),
        SpeakerCount(2, 4),
        SpeakerCount(2, 3),
        SpeakerCount(),
        None,
    ]
    assert asked[0].word_timestamps and asked[0].hotwords == "Snowflake" and asked[0].prompt is None
    assert asked[1].temperature == 0.2 and asked[3].language == "en"
    assert "speakers" not in values[4] and all("speaker" not in s for s in values[4]["segments"])  # off: as before


def test_a_bad_options_object_fails_its_row_only(sql: httpx.Client) -> None:
    rows = [
        [0, SOURCE, {"speakers": "lots"}],
        [1, SOURCE, {"speakers": 99}],
        [2, SOURCE, {"colour": "red"}],
        [3, SOURCE, {"idempotency_key": "mine"}],
        [4, SOURCE, "{not json"],
        [5, SOURCE, ["speakers"]],
        [6, SOURCE, {"speakers": True}],  # the good row of the batch
    ]
    values = _call(sql, "/functions/transcribe", rows, "spk-3")
    errors = [v.get("error", {}) for v in values[:-1]]
    assert {e.get("code") for e in errors} == {"validation_error"}, values
    assert errors[0]["message"].startswith("speakers:") and errors[1]["message"].startswith("speakers:")
    assert "colour" in errors[2]["message"] and "idempotency_key" in errors[3]["message"]
    assert values[-1]["speakers"] == ["SPEAKER_00", "SPEAKER_01"]


def test_the_language_forms_are_unchanged(sql: httpx.Client) -> None:
    """`TRANSCRIBE(source, 'hi')`, `TRANSCRIBE(source)` and a NULL language (the other overload's rows share the
    path): a string is a language, null is detection; none of them asks for speakers."""
    rows = [[0, SOURCE, "hi"], [1, SOURCE], [2, SOURCE, None], [3, SOURCE, "klingon"]]
    values = _call(sql, "/functions/transcribe", rows, "spk-4")
    assert [v.get("language") for v in values[:3]] == ["hi", "en", "en"]
    assert not any("speakers" in v for v in values)
    assert values[3]["error"]["code"] == "validation_error" and values[3]["error"]["message"].startswith("language:")


def test_a_retried_batch_with_objects_reuses_its_jobs(gw: Gateway, sql: httpx.Client) -> None:
    rows = [[0, SOURCE, {"speakers": True, "language": "en"}]]
    first = _call(sql, "/functions/transcribe", rows, "spk-5")
    again = _call(sql, "/functions/transcribe", rows, "spk-5")  # Snowflake's retry: same batch id
    assert first[0]["job_id"] == again[0]["job_id"]
    # Without a batch id the query id and the row's arguments name the job, whatever the object's key order.
    headers = {**USER, QUERY: "q-spk-6"}
    a = sql.post(
        "/functions/transcribe", json={"data": [[0, SOURCE, {"speakers": 2, "language": "en"}]]}, headers=headers
    )
    b = sql.post(
        "/functions/transcribe", json={"data": [[0, SOURCE, {"language": "en", "speakers": 2}]]}, headers=headers
    )
    assert a.status_code == b.status_code == 200, a.text
    assert a.json()["data"][0][1]["job_id"] == b.json()["data"][0][1]["job_id"]


def test_transcribe_submit_with_options_then_status_names_the_speakers(gw: Gateway, sql: httpx.Client) -> None:
    rows = [
        [0, SOURCE, {"speakers": "2-4", "language": "en"}],
        [1, SOURCE, {"speakers": "nine"}],
        [2, SOURCE, {"speakers": True}, "en"],  # an object is the only argument after the source
    ]
    submitted = _call(sql, "/functions/submit", rows, "spk-7")
    assert submitted[0]["status"] == "queued"
    assert [v["error"]["code"] for v in submitted[1:]] == ["validation_error", "validation_error"]
    job_id = submitted[0]["job_id"]
    assert _job_options(gw, job_id).speakers == SpeakerCount(2, 4)
    status: dict[str, Any] = {}
    for _ in range(300):
        (status,) = _call(sql, "/functions/job_status", [[0, job_id]], f"spk-8-{_}")
        if status["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert status["status"] == "succeeded" and status["speakers"] == ["SPEAKER_00", "SPEAKER_01"], status


def test_the_result_carries_the_translation_the_options_asked_for(tmp_path: Path) -> None:
    """`translate_to` in the object: TRANSCRIBE waits for the translation too and returns its text."""
    stage = write_stage(tmp_path / "stage", 1)
    fake = SpeakingFake(words=True, segments=2, text="hello there")
    mounts = {"AUDIO_FILES_STAGE": stage}
    with (
        gateway(tmp_path / "data", fake, stage_mounts=mounts, function_wait_s=0.1, translate_method="whisper") as g,
        g.client("functions") as client,
    ):
        rows = [[0, SOURCE, {"speakers": True, "language": "en", "translate_to": "en"}]]
        (value,) = _call(client, "/functions/transcribe", rows, "spk-9")
    assert "error" not in value, value
    assert value["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert value["translation"] == "hello there", value  # already English: the transcript itself (method none)
