"""Speakers through the API, in process (tests/api/conftest.py: SQLite store, a FAKE inference that labels its
segments when a job asks for speakers, as the Ray app's diarization does): the `speakers` option on `/v1/jobs`
(form and JSON) and `/v1/batches`, the job's view, the transcript formats, the OpenAI routes' `diarized_json`
(parsed by the official client), the `speakers` field, streaming, and the errors for bad values. The
diarization itself is tested with the Ray app's code (tests/inference)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.audio import TranscriptionDiarized, TranscriptionTextSegmentEvent

from service.options import SpeakerCount
from service.transcript import Transcript
from tests.api.conftest import Gateway, gateway
from tests.fakes import SpeakingFake
from tests.integration.helpers import DATA, wait

AUDIO = DATA / "en_jfk.m4a"
STAGE = "@AUDIO_FILES_STAGE"
LABELS = ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00"]  # the fake's three segments: "the", "fake", "transcript"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("speaker-stage")
    shutil.copy(DATA / "en_jfk.flac", folder / "a.flac")
    shutil.copy(DATA / "en_jfk.flac", folder / "b.flac")
    data = tmp_path_factory.mktemp("speaker-gateway") / "data"
    with gateway(data, SpeakingFake(segments=3), stage_mounts={"AUDIO_FILES_STAGE": folder}) as running:
        yield running


def upload() -> dict[str, tuple[str, bytes]]:
    return {"file": (f"{uuid.uuid4().hex}.m4a", AUDIO.read_bytes())}


def submitted(client: httpx.Client, **fields: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", files=upload(), data=fields)
    assert response.status_code == 202, response.text
    return wait(client, response.json()["id"], timeout=30)


def field_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["fields"][0]["field"] == "speakers", error
    return error


# --------------------------------------------------------------------------------------------------- job API


@pytest.mark.parametrize(("sent", "shown"), [("true", "auto"), ("auto", "auto"), ("3", "3"), ("2-4", "2-4")])
def test_the_form_field_reaches_the_job(gw: Gateway, client: httpx.Client, sent: str, shown: str) -> None:
    job = submitted(client, speakers=sent)
    assert job["status"] == "succeeded" and job["speakers"] == shown and job["options"]["speakers"] == shown
    assert str(gw.inference.calls[-1].speakers) == shown  # what the Ray app is asked for
    body = client.get(f"/v1/jobs/{job['id']}/transcript").json()
    assert body["speakers"] and all(s["speaker"] in body["speakers"] for s in body["segments"])


def test_off_means_no_labels(client: httpx.Client) -> None:
    for fields in ({}, {"speakers": "false"}):
        job = submitted(client, **fields)
        assert job["speakers"] is None and job["options"]["speakers"] is None
        body = client.get(f"/v1/jobs/{job['id']}/transcript").json()
        assert "speakers" not in body and all("speaker" not in s for s in body["segments"])
        assert "SPEAKER" not in client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "srt"}).text


def test_every_transcript_format_carries_the_labels(client: httpx.Client) -> None:
    job = submitted(client, speakers="2", word_timestamps="true")
    url = f"/v1/jobs/{job['id']}/transcript"
    srt = client.get(url, params={"format": "srt"}).text
    assert "\nSPEAKER_00: the\n" in srt and "\nSPEAKER_01: fake\n" in srt
    assert "\n<v SPEAKER_00>the\n" in client.get(url, params={"format": "vtt"}).text
    assert client.get(url, params={"format": "text"}).text.splitlines()[:2] == ["SPEAKER_00: the", "SPEAKER_01: fake"]
    verbose = client.get(url, params={"format": "verbose_json"}).json()
    assert [s["speaker"] for s in verbose["segments"]] == LABELS
    assert {w["speaker"] for w in verbose["words"]} == {"SPEAKER_00", "SPEAKER_01"}


@pytest.mark.parametrize("bad", ["x", "9", "4-2", "0-3", "1-2-3", "two"])
def test_bad_form_values_are_422(client: httpx.Client, bad: str) -> None:
    error = field_error(client.post("/v1/jobs", files=upload(), data={"speakers": bad}))
    assert "speakers" in error["message"]


def test_json_sources_take_every_spelling(gw: Gateway, client: httpx.Client) -> None:
    for sent, shown in ((True, "auto"), (3, "3"), ("2-4", "2-4"), ({"min": 2, "max": 3}, "2-3"), (False, None)):
        response = client.post("/v1/jobs", json={"source": f"{STAGE}/a.flac", "speakers": sent})
        assert response.status_code == 202, response.text
        assert response.json()["speakers"] == shown
    for bad in (9, "x", {"min": 3, "max": 2}, [2, 3], 2.5):
        field_error(client.post("/v1/jobs", json={"source": f"{STAGE}/a.flac", "speakers": bad}))


def test_batches_pass_speakers_to_every_job(client: httpx.Client) -> None:
    response = client.post("/v1/batches", json={"stage": STAGE, "pattern": r".*[.]flac", "speakers": "2-3"})
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["options"] == {"speakers": "2-3"} and len(batch["jobs"]) == 2
    for job_id in batch["jobs"]:
        job = wait(client, job_id, timeout=30)
        assert job["speakers"] == "2-3"
        assert client.get(f"/v1/jobs/{job_id}/transcript").json()["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    field_error(client.post("/v1/batches", json={"stage": STAGE, "speakers": "lots"}))


def test_the_schema_documents_the_option(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["speakers"]["type"] == "string"  # a form field is text: true, 3, 2-4
    openai_form = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    properties = openai_form["multipart/form-data"]["schema"]["properties"]
    assert "speakers" in properties and "diarized_json" in properties["response_format"]["enum"]


def test_the_web_page_offers_speakers(client: httpx.Client) -> None:
    page = client.get("/").text
    assert '<select id="speakers" name="speakers"' in page and '<label for="speakers">' in page
    script = client.get("/web/app.js").text
    assert 'data.append("speakers"' in script and "seg.speaker" in script
    assert ".spk-7" in client.get("/web/style.css").text


# ------------------------------------------------------------------------------------------------ OpenAI routes


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.public.base_url}/v1", api_key="unused", max_retries=0, http_client=gw.public)


def test_diarized_json_parses_with_the_official_client(gw: Gateway) -> None:
    with AUDIO.open("rb") as fh:
        result = sdk(gw).audio.transcriptions.create(model="whisper-1", file=fh, response_format="diarized_json")
    assert isinstance(result, TranscriptionDiarized)
    assert result.task == "transcribe" and result.text == "the fake transcript" and result.duration == 3.0
    assert [(s.type, s.id, s.speaker) for s in result.segments] == [
        ("transcript.text.segment", f"seg_{i}", label) for i, label in enumerate(LABELS)
    ]
    assert result.segments[1].text == " fake" and (result.segments[1].start, result.segments[1].end) == (1.0, 2.0)
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds == 3
    assert gw.inference.calls[-1].speakers == SpeakerCount()  # diarized_json turns speakers on, automatic count


def test_diarized_json_shape_as_curl_gets_it(gw: Gateway, client: httpx.Client) -> None:
    fields = {"model": "whisper-1", "response_format": "diarized_json", "speakers": "2"}
    response = client.post("/v1/audio/transcriptions", files=upload(), data=fields)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["task", "duration", "text", "segments", "usage"]
    assert body["segments"][0] == {
        "type": "transcript.text.segment",
        "id": "seg_0",
        "start": 0.0,
        "end": 1.0,
        "text": " the",
        "speaker": "SPEAKER_00",
    }
    assert gw.inference.calls[-1].speakers == SpeakerCount(2, 2)  # an explicit count wins
    job = client.get(f"/v1/jobs/{response.headers['x-job-id']}").json()
    assert job["speakers"] == "2"


def test_the_speakers_field_labels_the_other_formats(gw: Gateway, client: httpx.Client) -> None:
    with AUDIO.open("rb") as fh:
        verbose = sdk(gw).audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            extra_body={"speakers": "true"},
        )
    body = verbose.model_dump()
    assert [s["speaker"] for s in body["segments"]] == LABELS and body["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert body["words"][0] == {"word": "the", "start": 0.0, "end": 1.0, "speaker": "SPEAKER_00"}
    for fmt, expected in (("srt", "SPEAKER_01: fake"), ("vtt", "<v SPEAKER_01>fake"), ("text", "SPEAKER_01: fake")):
        fields = {"model": "whisper-1", "response_format": fmt, "speakers": "auto"}
        response = client.post("/v1/audio/transcriptions", files=upload(), data=fields)
        assert response.status_code == 200 and expected in response.text, fmt
    plain = client.post("/v1/audio/transcriptions", files=upload(), data={"model": "whisper-1"}).json()
    assert plain == {"text": "the fake transcript", "usage": {"type": "duration", "seconds": 3}}


def test_bad_values_are_openai_400s(client: httpx.Client) -> None:
    for fields, param in (
        ({"speakers": "x"}, "speakers"),
        ({"speakers": "12"}, "speakers"),
        ({"response_format": "diarized_json", "speakers": "5-1"}, "speakers"),
    ):
        response = client.post("/v1/audio/transcriptions", files=upload(), data={"model": "whisper-1", **fields})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "validation_error")
    data = {"model": "whisper-1", "response_format": "diarized_json"}
    response = client.post("/v1/audio/translations", files=upload(), data=data)
    assert response.status_code == 400 and response.json()["error"]["param"] == "response_format"


def test_a_diarized_stream_sends_segment_events(gw: Gateway) -> None:
    with AUDIO.open("rb") as fh:
        stream = sdk(gw).audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="diarized_json", stream=True
        )
        events = list(stream)
    assert [e.type for e in events] == ["transcript.text.segment"] * 3 + ["transcript.text.done"]
    segments = [e for e in events if isinstance(e, TranscriptionTextSegmentEvent)]
    assert [(e.id, e.speaker, e.text) for e in segments] == [
        ("seg_0", "SPEAKER_00", " the"),
        ("seg_1", "SPEAKER_01", " fake"),
        ("seg_2", "SPEAKER_00", " transcript"),
    ]
    assert events[-1].model_dump()["text"] == "the fake transcript"


def test_a_kept_alive_diarized_answer_is_still_json(make_gateway: Callable[..., Gateway]) -> None:
    """A request that outlives `openai_keepalive_s` gets JSON whitespace first, as json does, then the body."""
    slow = make_gateway(SpeakingFake(seconds=0.8, segments=3), openai_keepalive_s=0.2, openai_max_wait_s=30)
    fields = {"model": "whisper-1", "response_format": "diarized_json"}
    response = slow.public.post("/v1/audio/transcriptions", files=upload(), data=fields)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.text.startswith("\n") and TranscriptionDiarized.model_validate_json(response.text).segments


class SplittingFake(SpeakingFake):
    """Reports its segments as the fake does, then splits the first at a speaker change in the final transcript,
    as diarization does."""

    async def transcribe(self, audio: Any, options: Any, on_progress: Any = None, **kwargs: Any) -> Transcript:
        transcript = await super().transcribe(audio, options, on_progress, **kwargs)
        first = transcript.segments[0]
        head, tail = first.text.split(maxsplit=1)
        middle = (first.start + first.end) / 2
        split = [
            first.model_copy(update={"end": middle, "text": f" {head}", "speaker": "SPEAKER_00"}),
            first.model_copy(update={"start": middle, "text": f" {tail}", "speaker": "SPEAKER_01"}),
        ]
        transcript.segments[:1] = split
        for segment in transcript.segments[2:]:
            segment.speaker = "SPEAKER_01"
        return transcript


def test_a_stream_with_speakers_sends_the_final_segments(make_gateway: Callable[..., Gateway]) -> None:
    """Deltas of a job with speakers come from its final segments (split where the speaker changes), never from
    the segments reported while it ran: they still join to the text, once."""
    slow = make_gateway(SplittingFake(seconds=0.6, segments=2, text="one two three four"))
    with AUDIO.open("rb") as fh:
        events = list(
            sdk(slow).audio.transcriptions.create(
                model="whisper-1", file=fh, stream=True, extra_body={"speakers": "true"}
            )
        )
    deltas = [e.model_dump()["delta"] for e in events if e.type == "transcript.text.delta"]
    assert deltas == ["one", " two", " three four"] and events[-1].model_dump()["text"] == "one two three four"
    with AUDIO.open("rb") as fh:
        stream = sdk(slow).audio.transcriptions.create(
            model="whisper-1", file=fh, stream=True, response_format="diarized_json"
        )
        segments = [
            (e.model_dump()["text"], e.model_dump()["speaker"]) for e in stream if e.type != "transcript.text.done"
        ]
    assert segments == [(" one", "SPEAKER_00"), (" two", "SPEAKER_01"), (" three four", "SPEAKER_01")]


def test_a_plain_stream_keeps_its_deltas(gw: Gateway) -> None:
    with AUDIO.open("rb") as fh:
        events = list(sdk(gw).audio.transcriptions.create(model="whisper-1", file=fh, stream=True))
    assert {e.type for e in events} == {"transcript.text.delta", "transcript.text.done"}
