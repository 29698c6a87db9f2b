"""The OpenAI-compatible routes as OpenAI's API reference and the official `openai` client use them.

Two rigs:
- the real service (Ray, Whisper `base`): every documented field, `GET /v1/models`, OpenAI's error envelope,
  verbose_json with Whisper's real per-segment values, a long prompt, and `stream=true` end to end;
- a real gateway (uvicorn, HTTP, API token) on a STAND-IN for the Ray Serve app (same HTTP protocol, not
  Whisper) whose `prompt` steers it (`seconds=N`: the job's length, `fail=N`: fails after N segments): what the
  gateway sends the Ray app, the order and timing of streamed deltas, and the SDK's timeouts and retries, whose
  timing must not depend on the machine's speed. The stand-in's prompts carry a nonce (`fresh`), since the same
  upload with the same options within the hour is one job (the implicit idempotency key under test).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import srt
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from service.api.app import create_app
from service.config import Settings
from tests.harness import Service, wait_ready
from tests.integration.helpers import DATA, MANIFEST_JFK, wer
from tests.store_load import serving, standin_app

JFK = DATA / "en_jfk.flac"
# A known speaker's sample as OpenAI takes it (a data URL): accepted and not used (no diarization here).
SPEAKER_REFERENCE = "data:audio/wav;base64," + base64.b64encode(b"RIFF" + bytes(40)).decode()


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", timeout=300, max_retries=0)


# ---------------------------------------------------------------------------------------------- real service


def test_every_documented_field_is_accepted(client: openai.OpenAI) -> None:
    """All of OpenAI's fields for transcriptions (and the peers' extras, and unknown ones) at once: 200."""
    with JFK.open("rb") as fh:
        result = client.audio.transcriptions.create(
            file=fh,
            model="whisper-1",
            chunking_strategy={
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
            include=["logprobs"],
            known_speaker_names=["president"],
            known_speaker_references=[SPEAKER_REFERENCE],
            keywords=["Americans"],
            language="en",
            languages=["en"],
            prompt="President Kennedy's inaugural address.",
            response_format="verbose_json",
            temperature=0.0,
            timestamp_granularities=["word", "segment"],
            stream=False,
            extra_body={
                "hotwords": "fellow Americans",
                "vad_filter": True,
                "vad_parameters": {"threshold": 0.5, "min_silence_duration_ms": 500, "speech_pad_ms": 200},
                "an_unknown_field": "ignored",
            },
        )
    assert wer(MANIFEST_JFK, result.text) <= 0.05 and result.words and result.segments
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        translated = client.audio.translations.create(
            file=fh, model="whisper-1", prompt="A speech.", response_format="verbose_json", temperature=0.0
        )
    assert translated.language == "english" and "country" in translated.text.lower()


def test_fields_as_curl_sends_them(service: Service) -> None:
    """Objects as JSON text, "auto", arrays as `name[]`, `stream=false`: 200; a bad value is a 400 naming it."""
    with httpx.Client(base_url=service.url, timeout=300) as http:
        for strategy in ("auto", json.dumps({"type": "server_vad", "threshold": 0.4})):
            fields = {
                "model": "whisper-1",
                "chunking_strategy": strategy,
                "vad_parameters": json.dumps({"speech_pad_ms": 100}),
                "timestamp_granularities[]": ["segment", "word"],
                "include[]": ["logprobs"],
                "stream": "false",
            }
            files = {"file": (JFK.name, JFK.read_bytes())}
            response = http.post("/v1/audio/transcriptions", data=fields, files=files)
            assert response.status_code == 200, response.text
            assert wer(MANIFEST_JFK, response.json()["text"]) <= 0.05
        bad = {"model": "whisper-1", "chunking_strategy": json.dumps({"type": "server_vad", "threshold": 7})}
        response = http.post("/v1/audio/transcriptions", data=bad, files={"file": (JFK.name, JFK.read_bytes())})
        assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "chunking_strategy.threshold"


def test_a_long_prompt_is_accepted(client: openai.OpenAI) -> None:
    """Beyond OpenAI's 224 tokens: the Ray app keeps the prompt's last 223, as Whisper does."""
    prompt = " ".join(["Fellow citizens of the republic."] * 320)[:10_000]
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh, prompt=prompt, language="en")
    assert wer(MANIFEST_JFK, result.text) <= 0.1


def test_verbose_json_carries_whispers_values(client: openai.OpenAI) -> None:
    with JFK.open("rb") as fh:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=fh, response_format="verbose_json"
        )
    body = json.loads(raw.text)
    assert body["language"] == "english" and 0.5 < body["language_probability"] <= 1.0
    assert body["usage"] == {"type": "duration", "seconds": 11} and abs(body["duration"] - 11.0) < 0.2
    assert body["task"] == "transcribe" and "words" not in body
    for i, segment in enumerate(body["segments"]):
        assert segment["id"] == i and isinstance(segment["seek"], int) and segment["text"].startswith(" ")
        assert segment["tokens"] and all(isinstance(t, int) for t in segment["tokens"])
        assert segment["temperature"] == 0.0 and segment["avg_logprob"] < 0 and segment["compression_ratio"] > 0
        assert 0.0 <= segment["no_speech_prob"] <= 1.0
    assert words("".join(s["text"] for s in body["segments"])) == words(body["text"])
    parsed = raw.parse()  # and the client's own model of it
    assert parsed.segments and parsed.segments[0].tokens == body["segments"][0]["tokens"]
    with JFK.open("rb") as fh:  # the same job (an implicit replay); other formats strip Whisper's leading space
        cues = list(srt.parse(client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")))
    assert [c.content for c in cues] == [s["text"].strip() for s in body["segments"]]
    with JFK.open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert result.model_dump()["usage"] == {"type": "duration", "seconds": 11}


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "whisper-1" in ids and len(ids) == 2 and all(m.object == "model" and m.owned_by for m in models.data)
    for model_id in ids:
        model = client.models.retrieve(model_id)
        assert model.id == model_id and isinstance(model.created, int)
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-9-transcribe")
    assert err.value.code == "model_not_found" and err.value.type == "invalid_request_error"


def test_errors_are_openai_errors(client: openai.OpenAI, service: Service) -> None:
    """Bad files and parameters: `BadRequestError` (400) with OpenAI's fields, the service's code and details."""
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", io.BytesIO(b"not audio" * 100)))
    error = err.value
    assert error.code == "unsupported_media" and error.param == "file" and error.type == "invalid_request_error"
    assert error.body["request_id"] and error.response.headers["x-should-retry"] == "false"  # type: ignore[index]
    with JFK.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="gpt-9-transcribe", file=fh)
    assert err.value.code == "unsupported_model" and err.value.param == "model"
    with JFK.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=fh, temperature=3)
    assert err.value.param == "temperature"
    with JFK.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="diarized_json")
    assert err.value.param == "response_format"
    with httpx.Client(base_url=service.url, timeout=60) as http:  # the service's own routes keep their shape
        response = http.post("/v1/jobs", files={"file": ("notes.wav", b"not audio" * 100)})
        assert response.status_code == 415 and set(response.json()["error"]) == {"code", "message", "request_id"}
        assert http.get("/v1/models/nope").json()["error"]["type"] == "invalid_request_error"


def test_stream_delivers_the_transcript_in_deltas(client: openai.OpenAI) -> None:
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True, language="en"))
    deltas, done = events[:-1], events[-1]
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas) and done.type == "transcript.text.done"
    assert words("".join(e.delta for e in deltas)) == words(done.text) and wer(MANIFEST_JFK, done.text) <= 0.05
    assert done.to_dict()["usage"] in ({"type": "duration", "seconds": 11}, {"type": "duration", "seconds": 12})


# ------------------------------------------------------------------------------- gateway on a stand-in app

TOKEN = "clients-test-token"
GRACE_S = 2.0
SEGMENTS = [
    (i * 0.5, i * 0.5 + 0.5, f" Piece {n}.") for i, n in enumerate(["one", "two", "three", "four", "five", "six"])
]
TEXT = "".join(text for _, _, text in SEGMENTS).strip()
AUDIO = DATA / "en_jfk.m4a"  # a real file: the gateway probes uploads before it stores them


def standin_inference(seen: dict[str, dict[str, str]]) -> FastAPI:
    """STAND-IN for the Ray Serve app (not Whisper): six segments, sent one per progress event in audio order
    over `seconds=N`, then the result; `fail=K` sends K segments and then an error event. The query of each call
    is kept in `seen` under the prompt's `run=` nonce."""
    app = standin_app()

    @app.post("/whisper/transcribe")
    async def transcribe(request: Request) -> StreamingResponse:
        async for _ in request.stream():
            pass
        query = dict(request.query_params)
        steer = dict(part.split("=", 1) for part in query.get("prompt", "").split() if "=" in part)
        seen[steer.get("run", "")] = query
        seconds = float(steer.get("seconds", 0))
        segments = [
            {
                "start": start,
                "end": end,
                "text": text,
                "tokens": [50364 + i, 400 + i],
                "seek": 0,
                "temperature": 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.2,
                "no_speech_prob": 0.01,
            }
            for i, (start, end, text) in enumerate(SEGMENTS)
        ]
        transcript = {
            "text": TEXT,
            "language": "en",
            "language_probability": 0.97,
            "duration": 3.0,
            "segments": segments,
        }

        async def events() -> AsyncIterator[str]:
            for i, segment in enumerate(segments):
                await asyncio.sleep(seconds / len(segments))
                if "fail" in steer and i == int(steer["fail"]):
                    yield (
                        json.dumps({"event": "error", "code": "corrupt_audio", "message": "stand-in", "status": 422})
                        + "\n"
                    )
                    return
                yield json.dumps({"event": "progress", "fraction": (i + 1) / 7, "segments": [segment]}) + "\n"
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


class Rig:
    def __init__(self, url: str, seen: dict[str, dict[str, str]]) -> None:
        self.url, self.seen = url, seen

    def http(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, headers={"authorization": f"Bearer {TOKEN}"})

    def client(self, timeout: float = 30, max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=TOKEN, timeout=timeout, max_retries=max_retries)

    def jobs(self, source: str) -> list[dict[str, Any]]:
        with self.http() as http:
            return [j for j in http.get("/v1/jobs", params={"limit": 200}).json()["jobs"] if j["source"] == source]

    def job(self, source: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not (found := self.jobs(source)):
            assert time.monotonic() < deadline, f"no job for {source}"
            time.sleep(0.1)
        assert len(found) == 1, found
        return found[0]

    def status_becomes(self, source: str, status: str, within: float) -> float:
        """Seconds until the job of `source` has `status`."""
        begun = time.monotonic()
        while (job := self.job(source))["status"] != status:
            assert time.monotonic() - begun < within, job
            time.sleep(0.1)
        return time.monotonic() - begun


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A real gateway (API token, keep-alive off, a short grace) on the SQLite store and the stand-in app."""
    seen: dict[str, dict[str, str]] = {}
    with ExitStack() as stack:
        inference = stack.enter_context(serving(standin_inference(seen)))
        settings = Settings(
            store="sqlite",
            translate_method="whisper",
            data_dir=tmp_path_factory.mktemp("clients-gateway"),
            serve_url=f"{inference}/whisper",
            max_attempts=1,
            drain_timeout_s=0,
            api_token=TOKEN,
            openai_keepalive_s=0,
            openai_max_wait_s=60,
            openai_disconnect_grace_s=GRACE_S,
        )
        url = stack.enter_context(serving(create_app(settings)))
        wait_ready(url, 30)
        yield Rig(url, seen)


def fresh(prompt: str = "") -> tuple[str, str]:
    """(the stand-in's steering words with a nonce, the nonce)."""
    run = uuid.uuid4().hex
    return f"{prompt} run={run}".strip(), run


def upload(name: str | None = None) -> tuple[str, bytes]:
    return (name or f"{uuid.uuid4().hex}.m4a", AUDIO.read_bytes())


def test_options_reach_the_ray_app(rig: Rig) -> None:
    """chunking_strategy's server_vad, the peers' vad_parameters and hotwords, keywords, a 10,000-character
    prompt: as the job's decode options, the Ray app's query parameters."""
    client = rig.client()
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        (
            {
                "chunking_strategy": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 250,
                    "silence_duration_ms": 700,
                }
            },
            {"vad_filter": "true", "vad_threshold": "0.6", "vad_speech_pad_ms": "250", "vad_min_silence_ms": "700"},
        ),
        ({"chunking_strategy": "auto"}, {}),
        (
            {"extra_body": {"vad_filter": False, "vad_parameters": {"threshold": 0.3, "min_silence_duration_ms": 900}}},
            {"vad_filter": "false", "vad_threshold": "0.3", "vad_min_silence_ms": "900"},
        ),
        ({"keywords": ["Kenobi", "Skywalker"]}, {"hotwords": "Kenobi, Skywalker"}),
        ({"keywords": ["Kenobi"], "extra_body": {"hotwords": "Obi-Wan"}}, {"hotwords": "Obi-Wan"}),
    ]
    vad_keys = {"vad_filter", "vad_threshold", "vad_speech_pad_ms", "vad_min_silence_ms", "hotwords"}
    for fields, expected in cases:
        prompt, run = fresh()
        assert (
            client.audio.transcriptions.create(model="whisper-1", file=upload(), prompt=prompt, **fields).text == TEXT
        )
        assert {k: v for k, v in rig.seen[run].items() if k in vad_keys} == expected, fields
    prompt, run = fresh("x" * 10_000)
    client.audio.transcriptions.create(model="whisper-1", file=upload(), prompt=prompt)
    assert rig.seen[run]["prompt"] == prompt


def test_stream_deltas_come_in_audio_order_as_they_are_decoded(rig: Rig) -> None:
    prompt, _ = fresh("seconds=3")
    begun, arrivals = time.monotonic(), []
    for event in rig.client().audio.transcriptions.create(model="whisper-1", file=upload(), prompt=prompt, stream=True):
        arrivals.append((time.monotonic() - begun, event))
    deltas = [e.delta for _, e in arrivals[:-1]]
    assert deltas == [t.strip() if i == 0 else t for i, (_, _, t) in enumerate(SEGMENTS)]  # one per segment, in order
    done = arrivals[-1][1]
    assert done.type == "transcript.text.done" and done.text == TEXT == "".join(deltas)
    assert arrivals[-1][0] - arrivals[0][0] > 1.5  # streamed as decoded, not all at the end


def test_stream_ends_with_an_error_event_when_the_job_fails(rig: Rig) -> None:
    prompt, _ = fresh("seconds=1 fail=2")
    stream = rig.client().audio.transcriptions.create(model="whisper-1", file=upload(), prompt=prompt, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for event in stream:
            received.append(event.delta)
    assert received == ["Piece one.", " Piece two."]
    assert err.value.code == "corrupt_audio" and err.value.body["status"] == 400  # type: ignore[index]


def test_an_sdk_timeout_and_retry_find_the_first_job(rig: Rig) -> None:
    """The official client, a 2 s timeout and 2 retries, on a 3.5 s job with keep-alive off: its first try
    times out, its retry (same upload, no idempotency key) waits on the same job and gets the transcript."""
    name, (prompt, _) = f"retry-{uuid.uuid4().hex}.m4a", fresh("seconds=3.5")
    client = rig.client(timeout=2.0, max_retries=2)
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=upload(name), prompt=prompt)
    assert raw.retries_taken >= 1 and raw.headers["idempotent-replayed"] == "true"
    assert raw.parse().text == TEXT  # the job was not cancelled while no request waited on it
    job = rig.job(name)
    assert (job["status"], job["attempts"], raw.headers["x-job-id"]) == ("succeeded", 1, job["id"])
    assert job["idempotency_key"].startswith("openai-")


def test_an_explicit_idempotency_key_wins(rig: Rig) -> None:
    prompt, _ = fresh()
    client = rig.client()
    first = client.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=upload(), prompt=prompt, extra_headers={"Idempotency-Key": f"mine-{prompt}"}
    )
    again = client.audio.transcriptions.with_raw_response.create(  # another file, the same key: the same job
        model="whisper-1", file=upload(), prompt="other", extra_headers={"Idempotency-Key": f"mine-{prompt}"}
    )
    assert again.headers["x-job-id"] == first.headers["x-job-id"] and again.headers["idempotent-replayed"] == "true"


def leave_early(rig: Rig, name: str, prompt: str, **headers: str) -> None:
    """POST and go away after 1 s, before the result (keep-alive is off: nothing has been sent yet)."""
    with rig.http(timeout=1.0) as http, pytest.raises(httpx.ReadTimeout):
        http.post(
            "/v1/audio/transcriptions",
            files={"file": upload(name)},
            data={"model": "whisper-1", "prompt": prompt},
            headers=headers,
        )


def test_a_job_whose_client_left_is_cancelled_after_the_grace(rig: Rig) -> None:
    name, (prompt, _) = f"leave-{uuid.uuid4().hex}.m4a", fresh("seconds=8")
    leave_early(rig, name, prompt)
    assert rig.job(name)["status"] in ("queued", "running")
    waited = rig.status_becomes(name, "cancelled", within=GRACE_S + 3)
    assert waited > GRACE_S - 1.0  # not at once: a retry had the grace to attach


def test_a_kept_job_survives_its_client(rig: Rig) -> None:
    name, (prompt, _) = f"keep-{uuid.uuid4().hex}.m4a", fresh("seconds=3")
    leave_early(rig, name, prompt, **{"X-Keep-Job": "true"})
    rig.status_becomes(name, "succeeded", within=10)


def test_a_stream_whose_client_left_is_cancelled_after_the_grace(rig: Rig) -> None:
    name, (prompt, _) = f"stream-{uuid.uuid4().hex}.m4a", fresh("seconds=8")
    stream = rig.client().audio.transcriptions.create(model="whisper-1", file=upload(name), prompt=prompt, stream=True)
    assert next(iter(stream)).delta == "Piece one."
    stream.close()
    rig.status_becomes(name, "cancelled", within=GRACE_S + 3)


def test_models_need_the_token(rig: Rig) -> None:
    assert [m.id for m in rig.client().models.list().data] == ["base", "whisper-1"]
    wrong = openai.OpenAI(base_url=f"{rig.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.type == "authentication_error" and err.value.code == "unauthorized"


def test_back_pressure_is_a_rate_limit_error(tmp_path: Path) -> None:
    """A full queue: 429 `RateLimitError` with Retry-After (the client would retry after it)."""
    settings = Settings(
        store="sqlite",
        translate_method="whisper",
        data_dir=tmp_path,
        serve_url="http://127.0.0.1:9/absent",
        max_queued_jobs=1,
        openai_max_wait_s=0.5,
        openai_keepalive_s=0,
    )
    with serving(create_app(settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        prompt, _ = fresh()
        client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=upload(), prompt=prompt)
        with pytest.raises(openai.RateLimitError) as err:
            client.audio.transcriptions.create(model="whisper-1", file=upload(), prompt=fresh()[0])
    assert err.value.type == "rate_limit_error" and err.value.response.headers["retry-after"] == "30"
    assert "x-should-retry" not in err.value.response.headers
