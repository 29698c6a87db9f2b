"""Transcript renderers: SRT and VTT are checked with real parsers (srt, webvtt-py)."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import srt
import webvtt

from service.formats import FORMATS, render
from service.transcript import Transcript

TRANSCRIPT = Transcript.load(
    {
        "text": "Hello there. --> General Kenobi!",
        "language": "en",
        "duration": 3725.5,
        "segments": [
            {
                "start": 0.0,
                "end": 1.5,
                "text": "Hello there.",
                "avg_logprob": -0.2,
                "words": [
                    {"word": " Hello", "start": 0.0, "end": 0.6, "probability": 0.9},
                    {"word": " there.", "start": 0.6, "end": 1.5, "probability": 0.8},
                ],
            },
            {"start": 3723.25, "end": 3725.5, "text": " --> General Kenobi! "},
            {"start": 5.0, "end": 5.0, "text": "   "},
        ],
    }
)


def test_srt_parses_and_keeps_times() -> None:
    body, media_type = render(TRANSCRIPT, "srt")
    assert media_type.startswith("application/x-subrip")
    cues = list(srt.parse(body))
    assert [c.index for c in cues] == [1, 2]
    assert cues[1].start == timedelta(hours=1, minutes=2, seconds=3, milliseconds=250)
    assert cues[1].content == "--> General Kenobi!"
    assert "01:02:03,250 --> 01:02:05,500" in body


def test_vtt_parses_and_escapes_arrows() -> None:
    body, media_type = render(TRANSCRIPT, "vtt")
    assert body.startswith("WEBVTT\n\n") and media_type.startswith("text/vtt")
    captions = webvtt.from_buffer(io.StringIO(body)).captions
    assert [c.text for c in captions] == ["Hello there.", "-> General Kenobi!"]
    assert captions[1].start == "01:02:03.250"


def test_json_and_verbose_json() -> None:
    compact = json.loads(render(TRANSCRIPT, "json")[0])
    assert set(compact) == {"text", "language", "duration", "segments"}
    assert set(compact["segments"][0]) == {"start", "end", "text"}
    verbose = json.loads(render(TRANSCRIPT, "verbose_json", task="translate")[0])
    assert verbose["task"] == "translate" and verbose["segments"][0]["id"] == 0
    assert [w["word"] for w in verbose["words"]] == [" Hello", " there."]


def test_text_and_all_formats_render() -> None:
    assert render(TRANSCRIPT, "text")[0] == "Hello there. --> General Kenobi!\n"
    for fmt in FORMATS:
        body, _ = render(Transcript(), fmt)
        assert isinstance(body, str)
