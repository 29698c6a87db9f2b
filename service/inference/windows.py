"""Cut decoded audio into ≤ 30 s windows (Silero VAD, as faster-whisper's batched pipeline does) and
stitch per-window results back into one transcript on the original timeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_whisper.transcribe import restore_speech_timestamps
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from service.audio import SAMPLE_RATE
from service.inference.types import Segment, WindowResult

WINDOW_SECONDS = 30
# Whisper's own rule: a window is silence when it says so and is not confident about its text.
NO_SPEECH_PROB = 0.6
LOGPROB_FLOOR = -1.0
COMPRESSION_RATIO_CEILING = 2.4
# A window whose last segment ends this long before the window does is decoded again from there.
TAIL_SECONDS = 1.5
MAX_FOLLOW_UPS = 3


@dataclass
class Windows:
    """Audio windows plus what is needed to put their times back on the original timeline."""

    audio: list[np.ndarray]
    offsets: list[float]  # seconds, on the VAD-collapsed timeline when `speech` is set
    speech: list[dict] | None  # VAD speech spans in samples, or None when VAD was off

    @property
    def seconds(self) -> float:
        return sum(w.shape[0] for w in self.audio) / SAMPLE_RATE


def cut(audio: np.ndarray, vad: bool) -> Windows:
    """Split into windows of at most 30 s: speech-only windows with VAD, fixed windows without."""
    if not vad:
        step = WINDOW_SECONDS * SAMPLE_RATE
        starts = range(0, audio.shape[0], step)
        chunks = [audio[s : s + step] for s in starts]
        return Windows([c for c in chunks if c.size], [s / SAMPLE_RATE for s in starts], None)
    options = VadOptions(max_speech_duration_s=WINDOW_SECONDS, min_silence_duration_ms=160)
    speech = get_speech_timestamps(audio, options)
    if not speech:
        return Windows([], [], [])
    chunks, metadata = collect_chunks(audio, speech, max_duration=WINDOW_SECONDS)
    kept = [(c, m["offset"]) for c, m in zip(chunks, metadata) if c.size]
    return Windows([c for c, _ in kept], [o for _, o in kept], speech)


def is_hallucination(result: WindowResult) -> bool:
    """True for a window Whisper itself marks as no speech, or one stuck in a repetition loop."""
    silent = result.no_speech_prob is not None and result.no_speech_prob > NO_SPEECH_PROB
    if silent and result.avg_logprob is not None and result.avg_logprob < LOGPROB_FLOOR:
        return True
    return result.compression_ratio is not None and result.compression_ratio > COMPRESSION_RATIO_CEILING * 1.5


def tail_start(audio: np.ndarray, result: WindowResult) -> float | None:
    """Where Whisper closed its last segment well before the window's end and stopped, leaving speech
    undecoded (the sequential long-form loop would seek there): the time to decode again from, else None."""
    if not result.segments or is_hallucination(result):
        return None
    covered = result.segments[-1].end
    return covered if audio.shape[0] / SAMPLE_RATE - covered >= TAIL_SECONDS else None


def stitch(pieces: list[tuple[float, WindowResult]], speech: list[dict] | None) -> list[dict]:
    """Shift window-relative times by each piece's offset, undo the VAD cut, drop silent windows."""
    segments: list[Segment] = []
    scores: list[tuple[float | None, float | None]] = []
    for offset, result in sorted(pieces, key=lambda piece: piece[0]):
        if is_hallucination(result):
            continue
        for seg in result.segments:
            if not seg.text.strip():
                continue
            seg.start += offset
            seg.end += offset
            for word in seg.words or []:
                word.start += offset
                word.end += offset
            segments.append(seg)
            scores.append((result.avg_logprob, result.no_speech_prob))
    if speech:
        segments = list(restore_speech_timestamps(segments, speech, SAMPLE_RATE))
    out = []
    for seg, (avg_logprob, no_speech_prob) in zip(segments, scores):
        item: dict = {
            "start": round(seg.start, 3),
            "end": round(max(seg.end, seg.start), 3),
            "text": seg.text.strip(),
        }
        if avg_logprob is not None:
            item["avg_logprob"] = round(avg_logprob, 4)
        if no_speech_prob is not None:
            item["no_speech_prob"] = round(no_speech_prob, 4)
        if seg.words is not None:
            item["words"] = [
                {
                    "word": w.word,
                    "start": round(w.start, 3),
                    "end": round(w.end, 3),
                    "probability": round(w.probability, 4),
                }
                for w in seg.words
            ]
        out.append(item)
    return out
