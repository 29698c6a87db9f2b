"""In-process transcription without Ray or HTTP: the Ray app's own pipeline (`pipeline.WindowPipeline`: VAD
windows, language detection, batched decode, tail re-decode, stitching) run in this process on an engine.
Used by the CLI and the benchmarks."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from faster_whisper.vad import VadOptions

from service.audio import SAMPLE_RATE
from service.inference.diarization import SpeakerTrack
from service.inference.engines import ENGINES
from service.inference.pipeline import EngineCalls, WindowPipeline
from service.inference.priority import PrioritySemaphore
from service.inference.speaker_encoder import SpeakerEncoder, shared_encoder
from service.inference.types import DecodeOptions, Engine
from service.inference.windows import Window, Windows, cut
from service.options import SpeakerCount
from service.transcript import Timings, Transcript

# An idle engine waits this long for more windows to join its batch (they arrive within microseconds here).
QUIET_S = 0.01


class WindowsFeed:
    """The pipeline's `Feed` over windows cut in advance (`windows.cut`)."""

    def __init__(self, windows: Windows, seconds: float) -> None:
        self._windows = deque(Window(audio, offset) for audio, offset in zip(windows.audio, windows.offsets))
        self.seconds = seconds
        self.speech_seconds = windows.seconds
        self.speech = windows.speech

    async def next(self) -> Window | None:
        return self._windows.popleft() if self._windows else None


def transcribe_audio(
    engine: Engine,
    audio: np.ndarray,
    language: str | None = None,
    options: DecodeOptions | None = None,
    batch_size: int = 8,
    vad: bool = True,
    progress: Callable[[float], None] | None = None,
    vad_options: VadOptions | None = None,
    speakers: SpeakerCount | None = None,
    speaker_encoder: SpeakerEncoder | None = None,
    split_turns: bool | None = None,
) -> Transcript:
    """The transcript of 16 kHz mono audio. The language is `options.language`, else `language`, else detected
    on the first window; `options` (hotwords, prompt...) and `vad_options` as the Ray app's request options;
    `batch_size` windows at most per engine call. `progress` gets the seconds of audio done so far. `speakers`:
    label who spoke when, with `speaker_encoder` (else the default model, loaded once per process);
    `split_turns`: cut windows at speaker changes (unset: as the Ray app does, when the language is detected)."""
    started = time.perf_counter()
    seconds = audio.shape[0] / SAMPLE_RATE
    windows = cut(audio, vad=vad, options=vad_options)
    detect = options is None and language is None
    options = options or DecodeOptions(language=language or "en")
    keep_words = options.word_timestamps
    track = None
    if speakers is not None:
        track = SpeakerTrack(speaker_encoder or shared_encoder(), speakers)
        options = replace(options, word_timestamps=True)
    registered = ENGINES.get(engine.name)
    if split_turns is None:
        split_turns = detect

    async def run() -> WindowPipeline:
        calls = EngineCalls(
            engine,
            batch_size,
            quiet_s=QUIET_S,
            max_wait_s=QUIET_S * 10,
            batches_itself=registered is not None and registered.batches_itself,
            mixes_languages=registered is not None and registered.mixes_languages,
        )
        pipeline = WindowPipeline(
            WindowsFeed(windows, seconds),
            calls.transcribe_window,
            options,
            detect=detect,
            duration=seconds,
            budget=PrioritySemaphore(2 * batch_size),
            speakers=track,
            keep_words=keep_words,
            split_turns=split_turns,
        )
        async for step in pipeline.run():
            if progress is not None:
                progress(step.fraction * seconds)
        return pipeline

    pipeline = asyncio.run(run())
    done = time.perf_counter()
    timings = Timings(inference_s=round(pipeline.inference_s(done), 4), total_s=round(done - started, 4))
    return pipeline.transcript(engine.name, engine.model_name, timings)
