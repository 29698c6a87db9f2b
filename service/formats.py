"""Render a `Transcript` as json, verbose_json, text, srt or vtt.

A leaf module (the transcript types only). A segment's `text` keeps Whisper's leading space (as OpenAI's
verbose_json has it); every other format strips it per cue, line or segment. verbose_json carries a segment's
optional Whisper fields (seek, tokens, temperature, ...) and words as the transcript has them: set, as
`model_fields_set` says (a transcript loaded from stored JSON: the keys it had), unless None.
"""

from __future__ import annotations

import json
from typing import Any

from service.transcript import Transcript

FORMATS = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    cues = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if text:
            cues.append((float(seg.start), max(float(seg.end), float(seg.start)), text))
    return cues


def to_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues."""
    blocks = [
        f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text.replace('-->', '->')}\n"
        for start, end, text in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_text(transcript: Transcript) -> str:
    return transcript.text.strip() + "\n"


def to_json(transcript: Transcript) -> dict[str, Any]:
    """The compact shape: text, language, duration and plain segments."""
    return {
        "text": transcript.text,
        "language": transcript.language,
        "duration": transcript.duration,
        "segments": [{"start": s.start, "end": s.end, "text": s.text.strip()} for s in transcript.segments],
    }


SEGMENT_FIELDS = ("tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob", "words")


def to_verbose_json(transcript: Transcript, task: str = "transcribe") -> dict[str, Any]:
    """OpenAI's verbose_json shape: segments with ids, Whisper's fields as the transcript has them (OpenAI's
    order: id, seek, start, end, text, tokens, temperature, avg_logprob, compression_ratio, no_speech_prob),
    plus a flat `words` list when present."""
    segments = []
    words: list[dict[str, Any]] = []
    for i, segment in enumerate(transcript.segments):
        seg = segment.model_dump(exclude_unset=True, exclude_none=True)  # the fields it has, as stored
        out: dict[str, Any] = {"id": i}
        if "seek" in seg:
            out["seek"] = seg["seek"]
        out.update(start=seg["start"], end=seg["end"], text=seg["text"])
        for key in SEGMENT_FIELDS:
            if key in seg:
                out[key] = seg[key]
        words.extend(seg.get("words", []))
        segments.append(out)
    body = {
        "task": task,
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments,
    }
    if words:
        body["words"] = words
    return body


def render(transcript: Transcript, fmt: str, task: str = "transcribe") -> tuple[str, str]:
    """Return `(body, media_type)` for one of `FORMATS`; raises KeyError for an unknown format."""
    media_type = FORMATS[fmt]
    if fmt == "json":
        return json.dumps(to_json(transcript), ensure_ascii=False), media_type
    if fmt == "verbose_json":
        return json.dumps(to_verbose_json(transcript, task), ensure_ascii=False), media_type
    if fmt == "srt":
        return to_srt(transcript), media_type
    if fmt == "vtt":
        return to_vtt(transcript), media_type
    return to_text(transcript), media_type
