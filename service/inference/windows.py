"""Cut decoded audio into ≤ 30 s windows (Silero VAD, as faster-whisper's batched pipeline does) and
stitch per-window results back into one transcript on the original timeline.

`cut` takes a whole array (the CLI); `WindowStream` takes the audio in blocks as it decodes and hands out the
same windows as soon as each is complete, keeping only the audio a window may still need (about a minute),
so a job's memory does not grow with its length."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
from faster_whisper.transcribe import restore_speech_timestamps
from faster_whisper.vad import (
    SpeechTimestampsMap,
    VadOptions,
    collect_chunks,
    get_speech_timestamps,
    get_vad_model,
)

from service.audio import SAMPLE_RATE
from service.inference.types import WindowResult
from service.transcript import Segment, Word

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


# The service's Silero VAD defaults; a request may set the first three (`vad_options`).
VAD_THRESHOLD = 0.5
VAD_MIN_SILENCE_MS = 160
VAD_SPEECH_PAD_MS = 400


def vad_options(
    threshold: float | None = None, min_silence_ms: int | None = None, speech_pad_ms: int | None = None
) -> VadOptions:
    """faster-whisper's VadOptions for cutting ≤ 30 s windows; a None keeps the service's default."""
    return VadOptions(
        threshold=VAD_THRESHOLD if threshold is None else threshold,
        min_silence_duration_ms=VAD_MIN_SILENCE_MS if min_silence_ms is None else min_silence_ms,
        speech_pad_ms=VAD_SPEECH_PAD_MS if speech_pad_ms is None else speech_pad_ms,
        max_speech_duration_s=WINDOW_SECONDS,
    )


def cut(audio: np.ndarray, vad: bool, options: VadOptions | None = None) -> Windows:
    """Split into windows of at most 30 s: speech-only windows with VAD (`options`, else the defaults), fixed
    windows without."""
    if not vad:
        step = WINDOW_SECONDS * SAMPLE_RATE
        starts = range(0, audio.shape[0], step)
        chunks = [audio[s : s + step] for s in starts]
        return Windows([c for c in chunks if c.size], [s / SAMPLE_RATE for s in starts], None)
    options = options or vad_options()
    speech = get_speech_timestamps(audio, options)
    if not speech:
        return Windows([], [], [])
    chunks, metadata = collect_chunks(audio, speech, max_duration=WINDOW_SECONDS)
    kept = [(c, m["offset"]) for c, m in zip(chunks, metadata) if c.size]
    return Windows([c for c, _ in kept], [o for _, o in kept], speech)


@dataclass
class Window:
    """One window of a `WindowStream`: its audio and where it starts (seconds, on the VAD-collapsed timeline)."""

    audio: np.ndarray
    offset: float

    @property
    def seconds(self) -> float:
        return self.audio.shape[0] / SAMPLE_RATE


class SpeechSpans:
    """faster-whisper's `get_speech_timestamps`, fed a block at a time: the same Silero model with its state
    (LSTM h/c, the 64-sample context) carried across blocks, the same decision loop, and the same padding,
    applied to a span as soon as the next span or enough silence after it is known. `feed` and `finish` return
    the spans that became final (dicts of start/end samples, as `get_speech_timestamps` returns them)."""

    FRAME = 512
    CONTEXT = 64
    ENCODER_BATCH = 10_000

    def __init__(self, options: VadOptions, rate: int = SAMPLE_RATE) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(self.CONTEXT, np.float32)
        self._rest = np.zeros(0, np.float32)  # fed samples short of a whole frame
        self.frame = 0  # index of the next frame to score
        self.length = 0  # samples fed
        self.threshold = options.threshold
        neg = options.neg_threshold
        self.neg_threshold = max(options.threshold - 0.15, 0.01) if neg is None else neg
        self.min_speech = rate * options.min_speech_duration_ms / 1000
        self.pad = rate * options.speech_pad_ms / 1000
        self.max_speech = rate * options.max_speech_duration_s - self.FRAME - 2 * self.pad
        self.min_silence = rate * options.min_silence_duration_ms / 1000
        self.min_silence_at_max = rate * 98 / 1000
        # The decision loop's state (names as in get_speech_timestamps; `start` is None when not in speech).
        self.triggered = False
        self.start: int | None = None
        self.temp_end = self.prev_end = self.next_start = 0
        self.pending: dict | None = None  # the last span found, its end not yet padded
        self._final: list[dict] = []

    def keep_from(self) -> int:
        """The earliest sample a span not yet returned may start at (everything before it can be dropped)."""
        earliest = self.FRAME * self.frame - self.pad
        if self.start is not None:
            earliest = min(earliest, self.start - self.pad)
        if self.pending is not None:
            earliest = min(earliest, self.pending["start"])
        return max(0, int(earliest))

    def feed(self, audio: np.ndarray) -> list[dict]:
        self.length += audio.shape[0]
        rest = np.concatenate([self._rest, audio]) if self._rest.size else audio
        whole = rest.shape[0] // self.FRAME * self.FRAME
        self._rest = rest[whole:].copy()
        if whole:
            self._score(rest[:whole].reshape(-1, self.FRAME))
        self._close_after_silence()
        return self._take()

    def finish(self) -> list[dict]:
        """The end of the audio: score the zero-padded last frame (as get_speech_timestamps pads), close spans."""
        last = np.zeros(self.FRAME, np.float32)
        last[: self._rest.shape[0]] = self._rest
        self._rest = np.zeros(0, np.float32)
        self._score(last.reshape(1, -1))
        if self.start is not None and self.length - self.start > self.min_speech:
            self._found(self.start, self.length)
            self.start = None
        if self.pending is not None:
            self.pending["end"] = int(min(self.length, self.pending["end"] + self.pad))
            self._final.append(self.pending)
            self.pending = None
        return self._take()

    def _take(self) -> list[dict]:
        final, self._final = self._final, []
        return final

    def _score(self, frames: np.ndarray) -> None:
        context = np.empty((frames.shape[0], self.CONTEXT), np.float32)
        context[0] = self._context
        context[1:] = frames[:-1, -self.CONTEXT :]
        self._context = frames[-1, -self.CONTEXT :].copy()
        batched = np.concatenate([context, frames], 1)
        for i in range(0, batched.shape[0], self.ENCODER_BATCH):
            probs, self._h, self._c = self._session.run(
                None, {"input": batched[i : i + self.ENCODER_BATCH], "h": self._h, "c": self._c}
            )
            for prob in probs.reshape(-1).tolist():
                self._step(prob)

    def _step(self, prob: float) -> None:
        """One frame of get_speech_timestamps' loop (same branches, same order)."""
        at = self.FRAME * self.frame
        self.frame += 1
        if prob >= self.threshold and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if prob >= self.threshold and not self.triggered:
            self.triggered = True
            self.start = at
            return
        if self.triggered and self.start is not None and at - self.start > self.max_speech:
            if self.prev_end:
                self._found(self.start, self.prev_end)
                self.start = None
                if self.next_start < self.prev_end:
                    self.triggered = False
                else:
                    self.start = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                self._found(self.start, at)
                self.start = None
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return
        if prob < self.neg_threshold and self.triggered:
            if not self.temp_end:
                self.temp_end = at
            if at - self.temp_end > self.min_silence_at_max:
                self.prev_end = self.temp_end
            if at - self.temp_end < self.min_silence:
                return
            if self.start is not None and self.temp_end - self.start > self.min_speech:
                self._found(self.start, self.temp_end)
            self.start = None
            self.prev_end = self.next_start = self.temp_end = 0
            self.triggered = False

    def _found(self, start: int, end: int) -> None:
        """A span is found: pad the previous one against it (get_speech_timestamps' second loop)."""
        previous = self.pending
        if previous is None:  # the first span, or the first after a silence long enough to pad in full
            start = int(max(0, start - self.pad))
        else:
            silence = start - previous["end"]
            if silence < 2 * self.pad:
                previous["end"] += int(silence // 2)
                start = int(max(0, start - silence // 2))
            else:
                previous["end"] = int(previous["end"] + self.pad)
                start = int(max(0, start - self.pad))
            self._final.append(previous)
        self.pending = {"start": start, "end": end}

    def _close_after_silence(self) -> None:
        """Outside speech and 2 pads past the pending span's end, the next span cannot change its padding."""
        pending = self.pending
        if pending is not None and not self.triggered and self.FRAME * self.frame - pending["end"] >= 2 * self.pad:
            pending["end"] = int(pending["end"] + self.pad)
            self._final.append(pending)
            self.pending = None


class WindowStream:
    """`cut` over audio fed in blocks: `feed` and `finish` return the windows completed so far, the same
    windows (audio and offsets) `cut` makes of the whole array. `speech` grows with the VAD spans found (None
    without VAD), for `stitch`; `seconds` is the audio handed out in windows."""

    def __init__(self, vad: bool, options: VadOptions | None = None) -> None:
        self.vad = vad
        self.speech: list[dict] | None = [] if vad else None
        self.seconds = 0.0
        self._spans = SpeechSpans(options or vad_options()) if vad else None
        self._buffer = np.zeros(0, np.float32)  # fed audio from sample `_buffer_start` on
        self._buffer_start = 0
        self._parts: list[np.ndarray] = []  # the window being filled
        self._filled = 0  # its samples
        self._before = 0  # samples of the windows already handed out (the collapsed timeline's offset)

    @property
    def buffered(self) -> int:
        """Samples held (the retained audio plus the window being filled): bounded, not the file's length."""
        return self._buffer.shape[0] + self._filled

    def feed(self, block: np.ndarray) -> list[Window]:
        if self._spans is None:
            return self._fixed(block)
        self._buffer = np.concatenate([self._buffer, block])
        out = self._collect(self._spans.feed(block))
        drop = self._spans.keep_from() - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:].copy()
            self._buffer_start += drop
        return out

    def finish(self) -> list[Window]:
        out = self._collect(self._spans.finish()) if self._spans is not None else []
        out += self._emit()
        self._buffer = np.zeros(0, np.float32)
        return out

    def _fixed(self, block: np.ndarray) -> list[Window]:
        out: list[Window] = []
        step = WINDOW_SECONDS * SAMPLE_RATE
        while block.size:
            take = block[: step - self._filled]
            self._parts.append(take.copy())
            self._filled += take.shape[0]
            block = block[take.shape[0] :]
            if self._filled == step:
                out += self._emit()
        return out

    def _collect(self, spans: list[dict]) -> list[Window]:
        """collect_chunks' grouping of spans into windows of at most 30 s, one span at a time."""
        out: list[Window] = []
        limit = WINDOW_SECONDS * SAMPLE_RATE
        for span in spans:
            assert self.speech is not None and span["start"] >= self._buffer_start
            self.speech.append(span)
            length = span["end"] - span["start"]
            if self._filled + length > limit:
                out += self._emit()
            begin = span["start"] - self._buffer_start
            self._parts.append(self._buffer[begin : begin + length].copy())
            self._filled += length
        return out

    def _emit(self) -> list[Window]:
        """Hand out the window being filled (an empty one is skipped, as `cut` skips it)."""
        parts, filled, offset = self._parts, self._filled, self._before / SAMPLE_RATE
        self._parts, self._filled = [], 0
        self._before += filled
        if not filled:
            return []
        self.seconds += filled / SAMPLE_RATE
        return [Window(parts[0] if len(parts) == 1 else np.concatenate(parts), offset)]


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


def stitch(pieces: list[tuple[float, WindowResult]], speech: list[dict] | None) -> list[Segment]:
    """Shift window-relative times by each piece's offset, undo the VAD cut, drop silent windows.

    Each segment gets Whisper's fields as OpenAI's verbose_json has them: `text` with Whisper's leading space,
    its text `tokens`, `seek` (where its piece of audio starts on the original timeline, in 10 ms frames),
    the `temperature` it was decoded at, and its window's `avg_logprob`, `compression_ratio` (of the window's
    whole text, as Whisper measures it) and `no_speech_prob`. Times are rounded to milliseconds, probabilities
    and the window's figures to 4 places. Pieces of disjoint stretches of audio stitch independently: the
    segments of several calls, in the order of their pieces, are those of one call. The engines' segments are
    moved in place; new ones are returned."""
    spans = SpeechTimestampsMap(speech, SAMPLE_RATE) if speech else None
    kept: list[tuple[Segment, int, WindowResult]] = []
    for offset, result in sorted(pieces, key=lambda piece: piece[0]):
        if is_hallucination(result):
            continue
        seek = round((spans.get_original_time(offset) if spans is not None else offset) * 100)
        for seg in result.segments:
            if not seg.text.strip():
                continue
            seg.shift(offset)
            kept.append((seg, seek, result))
    segments = [seg for seg, _, _ in kept]
    if speech:
        segments = list(restore_speech_timestamps(segments, speech, SAMPLE_RATE))
    return [_stitched(seg, seek, result) for seg, (_, seek, result) in zip(segments, kept)]


def _stitched(seg: Segment, seek: int, result: WindowResult) -> Segment:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    words = None
    if seg.words is not None:
        words = [
            Word(word=w.word, start=round(w.start, 3), end=round(w.end, 3), probability=round(w.probability, 4))
            for w in seg.words
        ]
    return Segment(
        start=round(seg.start, 3),
        end=round(max(seg.end, seg.start), 3),
        text=spaced(seg.text),
        tokens=list(seg.tokens),
        seek=seek,
        temperature=result.temperature,
        avg_logprob=rounded(result.avg_logprob),
        compression_ratio=rounded(result.compression_ratio),
        no_speech_prob=rounded(result.no_speech_prob),
        words=words,
    )


def spaced(text: str) -> str:
    """A segment's text as Whisper writes it: one leading space before its words, none after them. A text
    decoded without one gets it too, unless it starts with a wide (CJK) character: segments then join by plain
    concatenation (`transcript.joined_text`) in every script."""
    body = text.strip()
    if not body:
        return ""
    if text[0].isspace() or unicodedata.east_asian_width(body[0]) not in ("W", "F"):
        return " " + body
    return body
