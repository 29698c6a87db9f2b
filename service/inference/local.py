"""In-process transcription without Ray or HTTP: the service's own path (VAD windows, batched decode,
tail re-decode, stitching) driven synchronously. Used by the CLI and the benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from faster_whisper.vad import VadOptions

from service.audio import SAMPLE_RATE
from service.inference.types import DecodeOptions, Engine, WindowResult
from service.inference.windows import MAX_FOLLOW_UPS, cut, stitch, tail_start, transcript_text


def transcribe_audio(
    engine: Engine,
    audio: np.ndarray,
    language: str | None = None,
    options: DecodeOptions | None = None,
    batch_size: int = 8,
    vad: bool = True,
    progress: Callable[[float], None] | None = None,
    vad_options: VadOptions | None = None,
) -> dict:
    """A transcript dict (the service's JSON shape) for 16 kHz mono audio; `progress` gets seconds done.
    `options` (hotwords, prompt...) and `vad_options` as the Ray app's request options."""
    windows = cut(audio, vad=vad, options=vad_options)
    probability = None
    if language is None and windows.audio:
        language, probability = engine.detect_language(windows.audio[0])
    options = options or DecodeOptions(language=language or "en")
    pending = [(w, offset, 0) for w, offset in zip(windows.audio, windows.offsets)]
    pieces: list[tuple[float, WindowResult]] = []
    done = 0.0
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        for (window, offset, depth), result in zip(batch, engine.transcribe_batch([b[0] for b in batch], options)):
            if result.temperature is None:
                result.temperature = options.temperature
            pieces.append((offset, result))
            start = tail_start(window, result)
            if start is not None and depth < MAX_FOLLOW_UPS:
                pending.append((window[int(start * SAMPLE_RATE) :], offset + start, depth + 1))
            elif depth == 0:
                done += window.shape[0] / SAMPLE_RATE
        if progress:
            progress(done)
    segments = stitch(pieces, windows.speech)
    return {
        "text": transcript_text(segments),
        "language": options.language if windows.audio else language,
        "language_probability": probability if windows.audio and options.language == language else None,
        "duration": round(audio.shape[0] / SAMPLE_RATE, 3),
        "segments": segments,
    }
