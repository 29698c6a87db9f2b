"""The OpenAI-compatible routes' rules, in process, as OpenAI's API reference and the official `openai` client use
them: the client is pointed at the gateway app (`http_client=` a Starlette TestClient, which is an httpx.Client).

Two gateways (SQLite store):
- on a fake inference (tests/fakes.py), no token: fields as curl sends them, `GET /v1/models`, OpenAI's error
  envelope (moved from tests/integration/test_openai_clients.py and test_openai.py);
- with an API token, on the real InferenceClient over a STAND-IN Ray Serve app (tests/api/openai_standin.py,
  steered by the prompt): what the gateway sends the Ray app, a failing job's stream, idempotency keys, the
  token, back pressure (moved from the stand-in rig of tests/integration/test_openai_clients.py).

What needs real HTTP (deltas streamed as decoded, the SDK's timeouts and retries, clients that leave) or the
real model stays in tests/integration/test_openai_clients.py."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from service.inference.client import InferenceClient
from tests.api.conftest import Gateway, gateway
from tests.api.openai_standin import TEXT, fresh, standin_inference
from tests.fakes import TEXT as FAKE_TEXT
from tests.harness import free_port
from tests.integration.helpers import DATA

JFK = DATA / "en_jfk.flac"
TOKEN = "clients-test-token"
AUDIO = DATA / "en_jfk.m4a"  # a real file: the gateway probes uploads before it stores them


def sdk(gw: Gateway, api_key: str = "unused", max_retries: int = 0) -> openai.OpenAI:
    """The official client on the gateway's public door, in process."""
    return openai.OpenAI(
        base_url=f"{gw.public.base_url}/v1", api_key=api_key, max_retries=max_retries, http_client=gw.public
    )


def upload(name: str | None = None) -> tuple[str, bytes]:
    return (name or f"{uuid.uuid4().hex}.m4a", AUDIO.read_bytes())


# ------------------------------------------------------------------------------------------ on a fake inference


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with gateway(tmp_path_factory.mktemp("openai-plain")) as running:
        yield running


@pytest.fixture
def client(plain: Gateway) -> openai.OpenAI:
    return sdk(plain)


def test_fields_as_curl_sends_them(plain: Gateway) -> None:
    """Objects as JSON text, "auto", arrays as `name[]`, `stream=false`: 200; a bad value is a 400 naming it."""
    http = plain.public
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
        assert response.json()["text"] == FAKE_TEXT  # (the real service's check: WER <= 0.05 against JFK)
    bad = {"model": "whisper-1", "chunking_strategy": json.dumps({"type": "server_vad", "threshold": 7})}
    response = http.post("/v1/audio/transcriptions", data=bad, files={"file": (JFK.name, JFK.read_bytes())})
    assert response.status_code == 400 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "chunking_strategy.threshold"


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


def test_errors_are_openai_errors(client: openai.OpenAI, plain: Gateway) -> None:
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
        client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="docx")  # type: ignore[call-overload]
    assert err.value.param == "response_format"
    http = plain.public  # the service's own routes keep their shape
    response = http.post("/v1/jobs", files={"file": ("notes.wav", b"not audio" * 100)})
    assert response.status_code == 415 and set(response.json()["error"]) == {"code", "message", "request_id"}
    assert http.get("/v1/models/nope").json()["error"]["type"] == "invalid_request_error"


def test_errors_reach_the_client(client: openai.OpenAI) -> None:
    """Bad files and bad parameters are 400 `BadRequestError`s, as OpenAI answers them (the service's code kept)."""
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", io.BytesIO(b"not audio" * 100)))
    assert err.value.status_code == 400 and err.value.code == "unsupported_media"
    with (DATA / "en_jfk.m4a").open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="gpt-9-transcribe", file=fh)
    assert err.value.code == "unsupported_model"


# ------------------------------------------------------------------------------------------- on a stand-in app


class Rig:
    def __init__(self, gw: Gateway, seen: dict[str, dict[str, str]]) -> None:
        self.gw, self.seen = gw, seen

    def client(self, api_key: str = TOKEN) -> openai.OpenAI:
        return sdk(self.gw, api_key)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """The gateway (API token, keep-alive off) on the real InferenceClient over the stand-in app."""
    seen: dict[str, dict[str, str]] = {}
    inference = InferenceClient("http://ray/whisper", 30, transport=httpx.ASGITransport(standin_inference(seen)))
    with gateway(
        tmp_path_factory.mktemp("openai-standin"),
        inference,
        translate_method="whisper",
        max_attempts=1,
        drain_timeout_s=0,
        api_token=TOKEN,
        openai_keepalive_s=0,
        openai_max_wait_s=60,
    ) as running:
        yield Rig(running, seen)


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


def test_stream_ends_with_an_error_event_when_the_job_fails(rig: Rig) -> None:
    prompt, _ = fresh("seconds=1 fail=2")
    stream = rig.client().audio.transcriptions.create(model="whisper-1", file=upload(), prompt=prompt, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for event in stream:
            received.append(event.delta)
    assert received == ["Piece one.", " Piece two."]
    assert err.value.code == "corrupt_audio" and err.value.body["status"] == 400  # type: ignore[index]


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


def test_models_need_the_token(rig: Rig) -> None:
    assert [m.id for m in rig.client().models.list().data] == ["base", "whisper-1"]
    wrong = rig.client(api_key="wrong")
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.type == "authentication_error" and err.value.code == "unauthorized"


def test_back_pressure_is_a_rate_limit_error(make_gateway: Callable[..., Gateway]) -> None:
    """A full queue: 429 `RateLimitError` with Retry-After (the client would retry after it)."""
    absent = InferenceClient(f"http://127.0.0.1:{free_port()}/absent", 30)  # nothing answers: jobs stay queued
    gw = make_gateway(
        absent,
        translate_method="whisper",
        max_queued_jobs=1,
        openai_max_wait_s=0.5,
        openai_keepalive_s=0,
        drain_timeout_s=0,
    )
    client = sdk(gw)
    prompt, _ = fresh()
    client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=upload(), prompt=prompt)
    with pytest.raises(openai.RateLimitError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=upload(), prompt=fresh()[0])
    assert err.value.type == "rate_limit_error" and err.value.response.headers["retry-after"] == "30"
    assert "x-should-retry" not in err.value.response.headers
