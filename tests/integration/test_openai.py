"""The official `openai` client, pointed at the service, for every response format. (Its errors, a gateway rule,
are tested in process in tests/api/test_openai_rules.py.)"""

from __future__ import annotations

import openai
import pytest
import srt

from tests.harness import Service
from tests.integration.helpers import DATA, MANIFEST_JFK, wer


@pytest.fixture
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.url}/v1", api_key="unused", timeout=300, max_retries=0)


def test_json_and_text(client: openai.OpenAI) -> None:
    with (DATA / "en_jfk_video.mp4").open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert wer(MANIFEST_JFK, result.text) <= 0.05
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        text = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text", language="en")
    assert wer(MANIFEST_JFK, text) <= 0.05


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(client: openai.OpenAI, fmt: str) -> None:
    with (DATA / "en_jfk.flac").open("rb") as fh:
        body = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format=fmt)
    if fmt == "srt":
        cues = list(srt.parse(body))
        assert cues and wer(MANIFEST_JFK, " ".join(c.content for c in cues)) <= 0.05
    else:
        assert body.startswith("WEBVTT") and "-->" in body


def test_verbose_json_with_word_and_segment_timestamps(client: openai.OpenAI) -> None:
    with (DATA / "en_jfk.flac").open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            prompt="Kennedy inaugural address.",
        )
    assert result.language == "english" and abs(result.duration - 11.0) < 0.2
    assert wer(MANIFEST_JFK, result.text) <= 0.05
    assert result.segments and result.segments[0].start >= 0 and result.segments[-1].end <= 11.1
    words = result.words
    assert [w.word.lower().strip(",.") for w in words[:4]] == ["and", "so", "my", "fellow"]
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in words)
    assert words[-1].end <= 11.1 and words[-1].end - words[0].start > 6  # spread over the speech, not bunched


def test_translation_endpoint_answers_in_english(client: openai.OpenAI) -> None:
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        result = client.audio.translations.create(model="whisper-1", file=fh)
    assert "country" in result.text.lower()
