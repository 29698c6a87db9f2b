"""Speaker labels in every output format, on hand-built transcripts: SRT and VTT checked with real parsers (srt,
webvtt-py: the WebVTT voice span), text as speaker turns, json / verbose_json carrying `speaker` only when set."""

from __future__ import annotations

import io
import json

import srt
import webvtt

from service.formats import render, speaker_turns
from service.transcript import Segment, Transcript, Word

LINES = [
    (0.0, 1.5, " Hello there.", "SPEAKER_00"),
    (1.5, 3.0, " General Kenobi!", "SPEAKER_01"),
    (3.0, 4.0, " You are a bold one.", "SPEAKER_01"),
    (4.0, 4.5, "   ", "SPEAKER_00"),  # no text: no cue, no turn
    (5.0, 6.25, " Back --> to me.", "SPEAKER_00"),
]


def diarized(words: bool = False) -> Transcript:
    """Built as the pipeline builds one: segments first, speakers assigned afterwards."""
    segments = [Segment(start=a, end=b, text=text, seek=round(a * 100), avg_logprob=-0.1) for a, b, text, _ in LINES]
    for segment, (*_, speaker) in zip(segments, LINES):
        segment.speaker = speaker
        if words and segment.text.strip():
            segment.words = [Word(word=" " + w, start=segment.start, end=segment.end) for w in segment.text.split()]
            for word in segment.words:
                word.speaker = speaker
    text = "".join(s.text for s in segments).strip()
    return Transcript(text=text, language="en", duration=6.25, segments=segments, speakers=["SPEAKER_00", "SPEAKER_01"])


def plain() -> Transcript:
    segments = [Segment(start=a, end=b, text=text) for a, b, text, _ in LINES]
    return Transcript(text="".join(s.text for s in segments).strip(), language="en", duration=6.25, segments=segments)


def test_srt_prefixes_each_cue_with_its_speaker() -> None:
    cues = list(srt.parse(render(diarized(), "srt")[0]))
    assert [c.content for c in cues] == [
        "SPEAKER_00: Hello there.",
        "SPEAKER_01: General Kenobi!",
        "SPEAKER_01: You are a bold one.",
        "SPEAKER_00: Back --> to me.",
    ]
    assert [c.index for c in cues] == [1, 2, 3, 4]


def test_vtt_cues_open_with_a_voice_span() -> None:
    body = render(diarized(), "vtt")[0]
    assert "\n<v SPEAKER_00>Hello there.\n" in body
    captions = webvtt.from_buffer(io.StringIO(body)).captions
    assert [(c.voice, c.text) for c in captions] == [
        ("SPEAKER_00", "Hello there."),
        ("SPEAKER_01", "General Kenobi!"),
        ("SPEAKER_01", "You are a bold one."),
        ("SPEAKER_00", "Back -> to me."),
    ]


def test_text_is_one_line_per_speaker_turn() -> None:
    assert render(diarized(), "text")[0] == (
        "SPEAKER_00: Hello there.\nSPEAKER_01: General Kenobi! You are a bold one.\nSPEAKER_00: Back --> to me.\n"
    )
    assert speaker_turns(plain().segments) == [
        (None, "Hello there. General Kenobi! You are a bold one. Back --> to me.")
    ]


def test_without_speakers_every_format_is_as_before() -> None:
    transcript = plain()
    assert render(transcript, "text")[0] == transcript.text + "\n"
    assert [c.content for c in srt.parse(render(transcript, "srt")[0])][0] == "Hello there."
    assert "<v " not in render(transcript, "vtt")[0]
    for fmt in ("json", "verbose_json"):
        body = json.loads(render(transcript, fmt)[0])
        assert "speakers" not in body and all("speaker" not in s for s in body["segments"]), fmt
    assert "speaker" not in json.dumps(transcript.dump())


def test_json_carries_speakers() -> None:
    body = json.loads(render(diarized(), "json")[0])
    assert body["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert body["segments"][1] == {"start": 1.5, "end": 3.0, "text": "General Kenobi!", "speaker": "SPEAKER_01"}


def test_verbose_json_carries_speakers_on_segments_and_words() -> None:
    body = json.loads(render(diarized(words=True), "verbose_json")[0])
    assert body["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert [s["speaker"] for s in body["segments"]] == [speaker for *_, speaker in LINES]
    assert list(body["segments"][0]) == ["id", "seek", "start", "end", "text", "avg_logprob", "speaker", "words"]
    assert {(w["word"], w["speaker"]) for w in body["words"]} >= {(" Hello", "SPEAKER_00"), (" Kenobi!", "SPEAKER_01")}


def test_stored_transcripts_keep_their_speakers() -> None:
    """The store keeps `dump()`; a transcript loaded back renders the same (exclude_none keeps unset ones out)."""
    transcript = diarized(words=True)
    stored = transcript.dump()
    assert stored["speakers"] == ["SPEAKER_00", "SPEAKER_01"] and stored["segments"][0]["speaker"] == "SPEAKER_00"
    assert stored["segments"][0]["words"][0]["speaker"] == "SPEAKER_00"
    loaded = Transcript.load(json.loads(json.dumps(stored)))
    for fmt in ("json", "text", "srt", "vtt"):
        assert render(loaded, fmt)[0] == render(transcript, fmt)[0], fmt
    verbose = json.loads(render(loaded, "verbose_json")[0])
    assert [w["speaker"] for w in verbose["words"]] == [w.speaker for s in transcript.segments for w in s.words or []]


def test_labels_cannot_break_a_cue() -> None:
    transcript = Transcript(segments=[Segment(start=0, end=1, text=" Hi", speaker="Ann>\nLee")])
    assert render(transcript, "vtt")[0].endswith("<v Ann Lee>Hi\n")
    assert "Ann Lee: Hi" in render(transcript, "srt")[0]
    blank = Transcript(segments=[Segment(start=0, end=1, text=" Hi", speaker=" > ")])
    assert render(blank, "srt")[0].endswith("\nHi\n") and render(blank, "text")[0] == "Hi\n"
