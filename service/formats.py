"""Render a `Transcript` as json, verbose_json, text, srt or vtt.

A leaf module (the transcript types only). A segment's `text` keeps Whisper's leading space (as OpenAI's
verbose_json has it); every other format strips it per cue, line or segment. verbose_json carries a segment's
optional Whisper fields (seek, tokens, temperature, ...) and words as the transcript has them: set, as
`model_fields_set` says (a transcript loaded from stored JSON: the keys it had), unless None.

Speakers (a job that asked for them: every segment has a `speaker` label, SPEAKER_00, ...): json and
verbose_json add `speaker` to each segment (and word) and the transcript's `speakers` list; SRT prefixes each
cue with `SPEAKER_00: ` (as WhisperX and most subtitle tools do); WebVTT opens each cue with the standard voice
span `<v SPEAKER_00>` (W3C WebVTT "cue voice span"); text becomes one `SPEAKER_00: ...` line per speaker turn
(consecutive segments of one speaker joined). A transcript without speakers renders exactly as before.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from service.transcript import Segment, Transcript

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


class Cue(NamedTuple):
    start: float
    end: float
    text: str  # stripped, never empty
    speaker: str | None  # as `_label` writes it


def _label(speaker: str | None) -> str | None:
    """A segment's speaker fit for a cue's first line or a voice span's annotation (one line, no `>`)."""
    label = " ".join((speaker or "").replace(">", "").split())
    return label or None


def _cues(transcript: Transcript) -> list[Cue]:
    cues = []
    for seg in transcript.segments:
        text = seg.text.strip()
        if text:
            cues.append(Cue(float(seg.start), max(float(seg.end), float(seg.start)), text, _label(seg.speaker)))
    return cues


def to_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each; `SPEAKER_00: ` before
    the text of a cue that has a speaker."""
    blocks = []
    for i, cue in enumerate(_cues(transcript), start=1):
        text = f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text
        blocks.append(f"{i}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues; a cue with a speaker opens with
    its voice span, `<v SPEAKER_00>text` (closing it is optional at the cue's end)."""
    blocks = []
    for cue in _cues(transcript):
        text = cue.text.replace("-->", "->")
        if cue.speaker:
            text = f"<v {cue.speaker}>{text}"
        blocks.append(f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{text}\n")
    return "WEBVTT\n\n" + "\n".join(blocks)


def speaker_turns(segments: list[Segment]) -> list[tuple[str | None, str]]:
    """(speaker label, text) per run of consecutive segments of one speaker, texts joined as the transcript's."""
    turns: list[tuple[str | None, list[str]]] = []
    for seg in segments:
        if not seg.text.strip():
            continue
        speaker = _label(seg.speaker)
        if turns and turns[-1][0] == speaker:
            turns[-1][1].append(seg.text)
        else:
            turns.append((speaker, [seg.text]))
    return [(speaker, "".join(texts).strip()) for speaker, texts in turns]


def to_text(transcript: Transcript) -> str:
    """The text on one line; with speakers, one `SPEAKER_00: ...` line per speaker turn."""
    if not any(seg.speaker for seg in transcript.segments):
        return transcript.text.strip() + "\n"
    lines = [f"{who}: {text}" if who else text for who, text in speaker_turns(transcript.segments)]
    return "\n".join(lines) + "\n"


def _compact(segment: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {"start": segment.start, "end": segment.end, "text": segment.text.strip()}
    if segment.speaker is not None:
        out["speaker"] = segment.speaker
    return out


def to_json(transcript: Transcript) -> dict[str, Any]:
    """The compact shape: text, language, duration and plain segments (with `speaker`, and the transcript's
    `speakers`, when diarized)."""
    body: dict[str, Any] = {
        "text": transcript.text,
        "language": transcript.language,
        "duration": transcript.duration,
        "segments": [_compact(s) for s in transcript.segments],
    }
    if transcript.speakers is not None:
        body["speakers"] = transcript.speakers
    return body


SEGMENT_FIELDS = ("tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob", "speaker", "words")


def to_verbose_json(transcript: Transcript, task: str = "transcribe") -> dict[str, Any]:
    """OpenAI's verbose_json shape: segments with ids, Whisper's fields as the transcript has them (OpenAI's
    order: id, seek, start, end, text, tokens, temperature, avg_logprob, compression_ratio, no_speech_prob, then
    `speaker` when diarized), plus a flat `words` list when present and `speakers` when diarized."""
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
    body: dict[str, Any] = {
        "task": task,
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments,
    }
    if words:
        body["words"] = words
    if transcript.speakers is not None:
        body["speakers"] = transcript.speakers
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
