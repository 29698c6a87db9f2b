"""The Ray app's request options, straight at `POST {serve_url}/transcribe` (what the gateway sends): hotwords,
per-request VAD parameters, a long prompt, Whisper's segment fields, and progress segments in audio order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Service
from tests.integration.helpers import DATA, MANIFEST_JFK, manifest, wer

pytestmark = pytest.mark.integration

JFK = DATA / "en_jfk.flac"
LONGFORM = DATA / "en_ljspeech_longform.wav"
# A previous transcript of 10,000 characters as prompt: the engines keep its last 223 tokens.
LONG_PROMPT = (" ".join([manifest()["en_ljspeech_longform.wav"]["reference_text"]] * 4))[-10_000:]


def post(service: Service, path: Path, **params: Any) -> tuple[int, list[dict[str, Any]]]:
    """Status and NDJSON events (or the one JSON error body) of a transcription at the Ray app."""
    query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
    with httpx.Client(timeout=300) as client:
        response = client.post(
            f"{service.serve_url}/transcribe",
            params=query,
            content=path.read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )
    if response.status_code != 200:
        return response.status_code, [response.json()]
    return 200, [json.loads(line) for line in response.text.splitlines() if line.strip()]


def transcript_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["event"] == "result", events[-1]
    return events[-1]["transcript"]


def check_segments(transcript: dict[str, Any], temperature: float = 0.0) -> None:
    """OpenAI verbose_json's segment fields with Whisper's own values; text with Whisper's leading space."""
    segments = transcript["segments"]
    assert segments
    for segment in segments:
        assert segment["tokens"] and all(isinstance(t, int) for t in segment["tokens"]), segment
        assert segment["compression_ratio"] > 0 and segment["avg_logprob"] < 0, segment
        assert 0 <= segment["no_speech_prob"] <= 1 and segment["temperature"] == temperature
        assert isinstance(segment["seek"], int) and 0 <= segment["seek"] <= segment["start"] * 100 + 1
        assert segment["text"].startswith(" ") and not segment["text"].startswith("  ")
    assert transcript["text"] == "".join(s["text"] for s in segments).strip()
    assert "  " not in transcript["text"]


def test_long_prompt_and_hotwords(service: Service) -> None:
    status, events = post(service, JFK, prompt=LONG_PROMPT, hotwords="Kennedy, fellow Americans")
    assert status == 200
    transcript = transcript_of(events)
    assert wer(MANIFEST_JFK, transcript["text"]) <= 0.1, transcript["text"]
    assert transcript["language"] == "en" and transcript["language_probability"] > 0.5  # detected
    check_segments(transcript)
    status, events = post(service, JFK, language="en", beam_size=2, hotwords="Kennedy")
    assert status == 200 and wer(MANIFEST_JFK, transcript_of(events)["text"]) <= 0.1
    assert transcript_of(events)["language_probability"] is None  # given, not detected


def test_option_limits_are_refused(service: Service) -> None:
    refused = [
        {"prompt": "a" * 16_001},
        {"hotwords": "b" * 1001},
        {"vad_threshold": 1.5},
        {"vad_min_silence_ms": 10_001},
        {"vad_speech_pad_ms": -1},
        {"vad_filter": "perhaps"},
    ]
    for params in refused:
        assert post(service, JFK, **params)[0] == 422, params


def test_vad_parameters_per_request(service: Service) -> None:
    default = transcript_of(post(service, JFK, language="en", beam_size=1)[1])
    unfiltered = transcript_of(post(service, JFK, language="en", beam_size=1, vad_filter=False)[1])
    strict = transcript_of(post(service, JFK, language="en", beam_size=1, vad_threshold=0.95)[1])
    assert default["speech_seconds"] < default["duration"]
    assert unfiltered["speech_seconds"] == unfiltered["duration"] == default["duration"]  # the whole file
    assert strict["speech_seconds"] < default["speech_seconds"] - 2  # less of it counts as speech
    assert wer(MANIFEST_JFK, unfiltered["text"]) <= 0.1, unfiltered["text"]
    padded = transcript_of(
        post(service, JFK, language="en", beam_size=1, vad_min_silence_ms=2000, vad_speech_pad_ms=0)[1]
    )
    assert padded["speech_seconds"] != default["speech_seconds"]


def test_progress_segments_in_audio_order(service: Service) -> None:
    if service.engine != "ctranslate2":
        pytest.skip("the order of progress events is the Decoder's, whatever the engine: one engine is enough")
    status, events = post(service, LONGFORM, language="en", beam_size=1)
    assert status == 200
    transcript = transcript_of(events)
    progress = [e for e in events if e["event"] == "progress"]
    streamed = [s for e in progress for s in e["segments"]]
    assert streamed == transcript["segments"]
    assert sum(bool(e["segments"]) for e in progress) >= 2  # it came in several parts
    starts = [s["start"] for s in streamed]
    assert starts == sorted(starts)
    seeks = [s["seek"] for s in streamed]
    assert seeks == sorted(seeks) and len(set(seeks)) >= 5  # one per window (or tail) of 171 s
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions)
    check_segments(transcript)
    assert wer(manifest()["en_ljspeech_longform.wav"]["reference_text"], transcript["text"]) <= 0.1
