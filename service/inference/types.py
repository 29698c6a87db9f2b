"""Plain data passed between the Ray deployments and the engines (no engine imports here).

Segments and words are the service's own (`service.transcript`): an engine returns them with times relative to
its window; `windows.stitch` puts them on the file's timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.options import JobOptions, Task
from service.transcript import Segment

__all__ = ["DecodeOptions", "Engine", "Task", "WindowResult"]


@dataclass(frozen=True)
class DecodeOptions:
    """Options that must be equal for windows to share one batched `generate` call."""

    language: str  # ISO-639-1 code, already detected when the user said "auto"
    task: Task = "transcribe"
    word_timestamps: bool = False
    beam_size: int = 5
    initial_prompt: str | None = None  # previous text: the engines keep its last tokens (`prompting.py`)
    temperature: float = 0.0
    hotwords: str | None = None  # words or phrases to bias decoding, before the previous text (faster-whisper's)

    @classmethod
    def of(cls, options: JobOptions, language: str | None = None, beam_size: int = 5) -> DecodeOptions:
        """A job's decode options: `language` (detected, or the job's) else the job's language else English."""
        return cls(
            language=language or options.language or "en",
            task=options.task,
            word_timestamps=options.word_timestamps,
            beam_size=beam_size,
            initial_prompt=options.prompt or None,
            temperature=options.temperature,
            hotwords=(options.hotwords or "").strip() or None,
        )


@dataclass
class WindowResult:
    """What an engine returns for one (≤ 30 s) window of audio."""

    segments: list[Segment] = field(default_factory=list)  # times relative to the window's start
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None  # of the window's whole decoded text (Whisper's own measure)
    temperature: float | None = None  # the sampling temperature it was decoded at
    node: str | None = None  # the Ray node whose replica decoded it (set by the Whisper deployment)


class Engine(Protocol):
    """One Whisper model on one device; every engine of the registry (`engines.ENGINES`) implements this."""

    name: str  # its registry name: "ctranslate2" | "transformers" | "standin"
    model_name: str
    multilingual: bool

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Most likely language code and its probability for up to 30 s of 16 kHz mono audio."""
        ...

    def transcribe_batch(self, windows: list[np.ndarray], options: DecodeOptions) -> list[WindowResult]:
        """Decode several ≤ 30 s windows (16 kHz mono float32) in one batch; one result per window."""
        ...


class AppInfo(BaseModel):
    """What the Ray app's `GET /ready` says: the model it serves, its batching counters, its replicas and how
    many jobs the gateway may usefully send at once. The Decoder answers with it; the gateway reads it."""

    model_config = ConfigDict(extra="allow")  # a newer app's facts pass through

    status: str = "ready"
    engine: str | None = None
    model: str | None = None
    multilingual: bool = True
    max_batch_size: int | None = None
    batches: int = 0  # Whisper batches run, windows in them, and their mean size (this replica's counters)
    windows: int = 0
    mean_batch_size: float | None = None
    queued_windows: int = 0
    replicas: dict[str, int] = Field(default_factory=dict)  # RUNNING replicas per deployment
    replica_states: dict[str, dict[str, int]] = Field(default_factory=dict)
    job_capacity: int | None = None
    windows_retried: int = 0
