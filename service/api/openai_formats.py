"""The OpenAI-compatible routes' JSON bodies: `json`'s usage, `verbose_json` as OpenAI's whisper-1 answers it,
and `diarized_json` as OpenAI's `gpt-4o-transcribe-diarize` does.

`diarized_json` is `{"task": "transcribe", "duration", "text", "segments", "usage"}`, each segment
`{"type": "transcript.text.segment", "id": "seg_0", "start", "end", "text", "speaker"}` (OpenAI's
`TranscriptionDiarized`); with `stream=true` the same segment objects are the `transcript.text.segment` events.
Speakers are this service's labels (SPEAKER_00, ...; OpenAI's model says A, B, ...); a segment that has none
(not expected: a diarized job labels every segment) says UNKNOWN_SPEAKER. verbose_json adds `speaker` to its
segments and words, and the transcript's `speakers` list, when the job asked for speakers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel

from service.formats import to_verbose_json
from service.jobs.model import Job
from service.languages import language_name
from service.transcript import Segment, Transcript

UNKNOWN_SPEAKER = "UNKNOWN"


class Usage(BaseModel):
    """As OpenAI reports it for whisper-1: the audio's duration in whole seconds, rounded up."""

    type: Literal["duration"] = "duration"
    seconds: int

    @classmethod
    def of(cls, transcript: Transcript) -> Usage:
        return cls(seconds=math.ceil(float(transcript.duration or 0.0)))


def usage(transcript: Transcript) -> dict[str, Any]:
    return Usage.of(transcript).model_dump()


class DiarizedSegment(BaseModel):
    """One speaker's piece of text: a `diarized_json` segment and a `transcript.text.segment` stream event."""

    type: Literal["transcript.text.segment"] = "transcript.text.segment"
    id: str
    start: float
    end: float
    text: str  # Whisper's leading space kept, as in OpenAI's answers
    speaker: str

    @classmethod
    def of(cls, index: int, segment: Segment) -> DiarizedSegment:
        return cls(
            id=f"seg_{index}",
            start=segment.start,
            end=segment.end,
            text=segment.text,
            speaker=segment.speaker or UNKNOWN_SPEAKER,
        )


class DiarizedTranscription(BaseModel):
    """OpenAI's `diarized_json` answer (`TranscriptionDiarized` in the official client)."""

    task: Literal["transcribe"] = "transcribe"
    duration: float
    text: str
    segments: list[DiarizedSegment]
    usage: Usage

    @classmethod
    def of(cls, transcript: Transcript) -> DiarizedTranscription:
        return cls(
            duration=transcript.duration or 0.0,
            text=transcript.text,
            segments=[DiarizedSegment.of(i, s) for i, s in enumerate(transcript.segments)],
            usage=Usage.of(transcript),
        )


def language(transcript: Transcript, job: Job) -> str:
    """The language's name, never null: English for a translation, and when nothing was detected (Whisper then
    decodes as English)."""
    if job.options.task == "translate":
        return "english"
    return language_name(transcript.language or job.language) or "english"


def _verbose_segment(segment: dict[str, Any], job: Job) -> dict[str, Any]:
    """A verbose_json segment with every field OpenAI sends: the transcript's values, defaults where absent."""
    out = {
        "id": segment["id"],
        "seek": segment.get("seek", round(segment["start"] * 100)),
        "start": segment["start"],
        "end": segment["end"],
        "text": segment["text"],
        "tokens": segment.get("tokens", []),
        "temperature": segment.get("temperature", job.options.temperature),
        "avg_logprob": segment.get("avg_logprob", 0.0),
        "compression_ratio": segment.get("compression_ratio", 0.0),
        "no_speech_prob": segment.get("no_speech_prob", 0.0),
    }
    if "speaker" in segment:
        out["speaker"] = segment["speaker"]
    return out


def _verbose_word(word: dict[str, Any]) -> dict[str, Any]:
    out = {"word": word["word"].strip(), "start": word["start"], "end": word["end"]}
    if word.get("speaker") is not None:
        out["speaker"] = word["speaker"]
    return out


def verbose(transcript: Transcript, job: Job, words: bool) -> dict[str, Any]:
    """OpenAI's verbose_json with the transcript's real per-segment values; defaults only where absent."""
    body = to_verbose_json(transcript, job.options.task)
    body["language"] = language(transcript, job)
    body["language_probability"] = transcript.language_probability
    body["duration"] = transcript.duration or 0.0
    body["segments"] = [_verbose_segment(segment, job) for segment in body["segments"]]
    if words:
        body["words"] = [_verbose_word(w) for w in body.get("words", [])]
    else:
        body.pop("words", None)
    body["usage"] = usage(transcript)
    return body
