"""The transcript, typed: `Word`, `Segment`, `Transcript`: the one shape every layer passes.

Engines produce segments with times relative to their window; `service.inference.pipeline.assemble` puts them
on the file's timeline and builds the `Transcript`; the stores keep it, `formats.py` renders it, the API returns
it.
A leaf module (pydantic only): the gateway imports it without any engine.

`dump()` is the JSON shape the API has always answered with: a segment's optional Whisper fields (and a
transcript's optional facts) are left out when unknown rather than sent as null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    # Unknown keys (a transcript stored by a newer version) are kept, never an error on read.
    model_config = ConfigDict(extra="allow")


class Word(_Part):
    """One word with its time span in seconds and Whisper's probability for it."""

    word: str
    start: float
    end: float
    probability: float = 0.0
    speaker: str | None = None  # SPEAKER_00, ... when the job asked for speakers

    def shift(self, offset: float) -> None:
        self.start += offset
        self.end += offset


class Segment(_Part):
    """A piece of text with its time span (window-relative until assembled, then on the file's timeline).

    `text` keeps Whisper's leading space (OpenAI's verbose_json has it); `tokens` are its text token ids;
    `seek` is where its piece of audio starts on the original timeline (10 ms frames); `temperature`,
    `avg_logprob`, `compression_ratio`, `no_speech_prob` are its window's."""

    start: float
    end: float
    text: str
    tokens: list[int] = Field(default_factory=list)
    seek: int | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] | None = None
    speaker: str | None = None  # SPEAKER_00, ... when the job asked for speakers (diarization.py)

    def shift(self, offset: float) -> None:
        """Move the segment and its words `offset` seconds later."""
        self.start += offset
        self.end += offset
        for word in self.words or []:
            word.shift(offset)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Timings(_Part):
    """Where a transcription's time went (seconds), as the Ray app and the dispatcher measured it."""

    slot_wait_s: float | None = None  # waiting for one of the Decoder replica's decode slots
    decode_s: float | None = None  # decoding and VAD overlap inference: CPU time of each
    vad_s: float | None = None
    speakers_s: float | None = None  # speaker embeddings (CPU time, overlapping inference) and their clustering
    inference_s: float | None = None
    total_s: float | None = None
    peak_buffered_s: float | None = None
    whisper_nodes: list[str] | None = None  # Ray nodes whose Whisper replicas decoded it
    wall_s: float | None = None  # from the job's start to its transcript (set by the dispatcher)


class Transcript(_Part):
    """A whole file's transcript: its text (the segments' texts joined), the language (None when
    auto-detection found no speech to detect from), its length and its segments in audio order."""

    text: str = ""
    language: str | None = None
    language_probability: float | None = None
    duration: float | None = None
    speech_seconds: float | None = None
    segments: list[Segment] = Field(default_factory=list)
    engine: str | None = None
    model: str | None = None
    speakers: list[str] | None = None  # the labels diarization found, in order of first appearance
    timings: Timings = Field(default_factory=Timings)

    def dump(self) -> dict[str, Any]:
        """The API's JSON shape: `language` and `language_probability` always present, other unknowns left out."""
        out = self.model_dump(exclude_none=True)
        out.setdefault("language", None)
        out.setdefault("language_probability", None)
        return out

    @classmethod
    def load(cls, data: dict[str, Any] | Transcript) -> Transcript:
        """From its stored JSON (or a Transcript already)."""
        return data if isinstance(data, Transcript) else cls.model_validate(data)


def joined_text(segments: list[Segment]) -> str:
    """A transcript's text: its segments' texts concatenated (each brings its own leading space), stripped."""
    return "".join(s.text for s in segments).strip()
