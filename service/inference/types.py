"""Plain data passed between the Ray deployments and the engines (no engine imports here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

Task = Literal["transcribe", "translate"]


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


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Segment:
    """A piece of text with times in seconds relative to the start of its window."""

    start: float
    end: float
    text: str
    words: list[Word] | None = None
    tokens: list[int] = field(default_factory=list)  # its text token ids (no special or timestamp tokens)


@dataclass
class WindowResult:
    """What an engine returns for one (≤ 30 s) window of audio."""

    segments: list[Segment] = field(default_factory=list)
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None  # of the window's whole decoded text (Whisper's own measure)
    temperature: float | None = None  # the sampling temperature it was decoded at
    node: str | None = None  # the Ray node whose replica decoded it (set by the Whisper deployment)


class Engine(Protocol):
    """One Whisper model on one device; both engines implement this."""

    name: str  # "ctranslate2" | "transformers"
    model_name: str
    multilingual: bool

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Most likely language code and its probability for up to 30 s of 16 kHz mono audio."""
        ...

    def transcribe_batch(self, windows: list[np.ndarray], options: DecodeOptions) -> list[WindowResult]:
        """Decode several ≤ 30 s windows (16 kHz mono float32) in one batch; one result per window."""
        ...
