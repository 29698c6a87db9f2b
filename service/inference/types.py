"""Plain data passed between the Ray deployments and the engines (no engine imports here).

Segments and words are the service's own (`service.transcript`): an engine returns them with times relative to
its window; `windows.stitch` puts them on the file's timeline."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.options import JobOptions, Task
from service.transcript import Segment

__all__ = ["DecodeOptions", "Engine", "Task", "WindowResult"]


@dataclass(frozen=True)
class DecodeOptions:
    """How one window is decoded. Windows share an engine call when their `batch_key`s are equal."""

    language: str | None  # ISO-639-1 code; None: detect it on this window, in the same engine call
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
            word_timestamps=options.word_timestamps or options.speakers is not None,  # speaker changes fall on words
            beam_size=beam_size,
            initial_prompt=options.prompt or None,
            temperature=options.temperature,
            hotwords=(options.hotwords or "").strip() or None,
        )

    def batch_key(self, mixes_languages: bool) -> Hashable:
        """What windows must have in common to share one engine call. An engine that gives each row its own
        prompt (`EngineSpec.mixes_languages`) batches windows of any language and task together, and windows
        still to be detected with them, as long as the prompt text (same length for every row) and the search
        are the same; with word timestamps the language stays in the key (alignment is per language).
        Otherwise all the options."""
        if not mixes_languages:
            return self
        language = self.language if self.word_timestamps else None
        return (self.beam_size, self.temperature, self.word_timestamps, self.initial_prompt, self.hotwords, language)


def per_window(options: DecodeOptions | Sequence[DecodeOptions], count: int) -> list[DecodeOptions]:
    """One `DecodeOptions` per window: the same for all, or the list given (one per window)."""
    if isinstance(options, DecodeOptions):
        return [options] * count
    if len(options) != count:
        raise ValueError(f"{len(options)} decode options for {count} windows")
    return list(options)


@dataclass
class WindowResult:
    """What an engine returns for one (≤ 30 s) window of audio."""

    segments: list[Segment] = field(default_factory=list)  # times relative to the window's start
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None  # of the window's whole decoded text (Whisper's own measure)
    temperature: float | None = None  # the sampling temperature it was decoded at
    language: str | None = None  # the language it was decoded in, when the engine detected it (options' None)
    language_probability: float | None = None
    node: str | None = None  # the Ray node whose replica decoded it (set by the Whisper deployment)


def by_options(
    windows: list[np.ndarray],
    options: DecodeOptions | Sequence[DecodeOptions],
    transcribe: Callable[[list[np.ndarray], DecodeOptions], list[WindowResult]],
    detect: Callable[[np.ndarray], tuple[str, float]],
) -> list[WindowResult]:
    """`Engine.transcribe_batch` for an engine whose call takes one `DecodeOptions`: the rows to detect are
    detected one by one (`detect`), then one `transcribe` call per distinct options; results in window order."""
    rows = per_window(options, len(windows))
    found = [detect(w) if row.language is None else None for w, row in zip(windows, rows)]
    rows = [replace(row, language=f[0]) if f else row for row, f in zip(rows, found)]
    groups: dict[DecodeOptions, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row, []).append(i)
    results: list[WindowResult | None] = [None] * len(windows)
    for row, indices in groups.items():
        for i, result in zip(indices, transcribe([windows[i] for i in indices], row), strict=True):
            results[i] = result
    done = [r for r in results if r is not None]
    for result, f in zip(done, found):
        if f:
            result.language, result.language_probability = f
    return done


class Engine(Protocol):
    """One Whisper model on one device; every engine of the registry (`engines.ENGINES`) implements this."""

    name: str  # its registry name: "ctranslate2" | "transformers" | "standin"
    model_name: str
    multilingual: bool

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Most likely language code and its probability for up to 30 s of 16 kHz mono audio."""
        ...

    def transcribe_batch(
        self, windows: list[np.ndarray], options: DecodeOptions | Sequence[DecodeOptions]
    ) -> list[WindowResult]:
        """Decode several ≤ 30 s windows (16 kHz mono float32) in one batch; one result per window. `options`:
        the same for every window, or one per window (equal `batch_key`s). A window whose language is None is
        decoded in the language detected on it, which its result reports."""
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
