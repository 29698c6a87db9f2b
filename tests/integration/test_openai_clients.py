"""The OpenAI-compatible routes as OpenAI's API reference and the official `openai` client use them, where a
real process is needed.

Two rigs:
- the real service (Ray, Whisper `base`): every documented field, verbose_json with Whisper's real per-segment
  values, a long prompt, and `stream=true` end to end;
- a real gateway (uvicorn, HTTP, API token) on a STAND-IN for the Ray Serve app (tests/api/openai_standin.py:
  same HTTP protocol, not Whisper) whose `prompt` steers it (`seconds=N`: the job's length): the order and
  timing of streamed deltas on the wire, the SDK's real timeouts and retries, and clients that hang up, whose
  timing must not depend on the machine's speed. The stand-in's prompts carry a nonce (`fresh`), since the same
  upload with the same options within the hour is one job (the implicit idempotency key under test).

The rules (fields as curl sends them, `GET /v1/models`, OpenAI's error envelope, options sent to the Ray app, a
failing stream's error event, idempotency keys, the token, back pressure) are tested in process in
tests/api/test_openai_rules.py.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest
import srt

from service.api.app import create_app
from service.config import Settings
from tests.api.openai_standin import SEGMENTS, TEXT, fresh, standin_inference
from tests.harness import Service, wait_ready
from tests.integration.helpers import DATA, MANIFEST_JFK, wer
from tests.store_load import serving

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
AUDIO = DATA / "en_jfk.m4a"  # a real file: the gateway probes uploads before it stores them


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


def upload(name: str | None = None) -> tuple[str, bytes]:
    return (name or f"{uuid.uuid4().hex}.m4a", AUDIO.read_bytes())


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
