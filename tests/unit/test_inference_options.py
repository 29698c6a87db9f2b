"""Per-request options of the Ray app without a model: VAD parameters, the prompt's token budget, the segment
fields `stitch` writes, and progress segments sent in audio order whatever order windows finish in."""

from __future__ import annotations

import asyncio
import json
import shutil
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.audio import SAMPLE_RATE, decode
from service.inference import deployment
from service.inference.pipeline import WindowPipeline
from service.inference.priority import PrioritySemaphore
from service.inference.prompting import PROMPT_TOKENS, prompt_tokens
from service.inference.stream import Steps, WindowSource
from service.inference.types import AppInfo, DecodeOptions, WindowResult
from service.inference.windows import WindowStream, cut, spaced, stitch, vad_options
from service.transcript import Segment, Word, joined_text

DATA = Path(__file__).parent.parent / "data"


# ---------------------------------------------------------------------------------------------- VAD


def test_vad_options_map_onto_silero_options() -> None:
    default = vad_options()
    assert (default.threshold, default.min_silence_duration_ms, default.speech_pad_ms) == (0.5, 160, 400)
    assert default.max_speech_duration_s == 30
    custom = vad_options(0.9, 2000, 0)
    assert (custom.threshold, custom.min_silence_duration_ms, custom.speech_pad_ms) == (0.9, 2000, 0)
    assert custom.max_speech_duration_s == 30 and custom.neg_threshold is None
    assert vad_options(threshold=0.0).threshold == 0.0  # 0 is a value, not "unset"


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode(DATA / "en_jfk.flac")


def test_vad_parameters_change_the_cut_and_the_stream_follows_them(jfk: np.ndarray) -> None:
    default = cut(jfk, True)
    strict = cut(jfk, True, vad_options(threshold=0.95))
    unpadded = cut(jfk, True, vad_options(speech_pad_ms=0))
    merged = cut(jfk, True, vad_options(min_silence_ms=2000))
    assert strict.seconds < default.seconds - 2  # a high threshold keeps less of it as speech
    assert unpadded.seconds < default.seconds
    assert len(merged.speech) < len(default.speech)  # short pauses no longer split spans
    for options in (vad_options(threshold=0.95), vad_options(min_silence_ms=2000, speech_pad_ms=0)):
        stream = WindowStream(True, options)
        windows = [w for i in range(0, jfk.shape[0], 7_000) for w in stream.feed(jfk[i : i + 7_000])]
        windows += stream.finish()
        expected = cut(jfk, True, options)
        assert stream.speech == expected.speech
        assert [w.offset for w in windows] == expected.offsets


# ---------------------------------------------------------------------------------------------- prompt


def fake_encode(text: str) -> list[int]:
    """One token per word (its length), and 999 (a special token) for "<|x|>"."""
    return [999 if word == "<|x|>" else len(word) for word in text.split(" ") if word]


def test_prompt_keeps_the_last_tokens_of_the_previous_text() -> None:
    previous = " ".join("a" * (1 + i % 9) for i in range(1000))
    tokens = prompt_tokens(fake_encode, 500, previous=previous)
    assert len(tokens) == PROMPT_TOKENS == 223
    assert tokens == fake_encode(previous)[-223:]
    assert prompt_tokens(fake_encode, 500, previous="  ") == prompt_tokens(fake_encode, 500) == []


def test_hotwords_come_first_and_share_the_budget() -> None:
    assert prompt_tokens(fake_encode, 500, hotwords="ab abc", previous="x yy zzz") == [2, 3, 1, 2, 3]
    long_previous = " ".join(["b"] * 400)
    tokens = prompt_tokens(fake_encode, 500, hotwords="aaaa " * 10, previous=long_previous)
    assert tokens[:10] == [4] * 10 and tokens[10:] == [1] * 213 and len(tokens) == 223
    assert prompt_tokens(fake_encode, 500, hotwords="cc " * 300, previous="zz") == [2] * 223


def test_special_tokens_typed_into_a_prompt_are_dropped() -> None:
    assert prompt_tokens(fake_encode, 500, hotwords="a <|x|>", previous="<|x|> bb") == [1, 2]


# ---------------------------------------------------------------------------------------------- stitch


def result(*segments: tuple[float, float, str, list[int]], temperature: float | None = 0.0) -> WindowResult:
    return WindowResult(
        [Segment(start=s, end=e, text=text, tokens=tokens) for s, e, text, tokens in segments],
        avg_logprob=-0.25,
        no_speech_prob=0.01,
        compression_ratio=1.5,
        temperature=temperature,
    )


def test_stitched_segments_carry_whisper_fields() -> None:
    pieces = [
        (0.0, result((0.0, 2.0, " Hello there.", [1, 2]), (2.0, 4.0, "General Kenobi.", [3]))),
        (30.0, result((0.0, 1.0, "  spaced out  ", [4]), temperature=0.4)),
    ]
    segments = stitch(pieces, None)
    assert [s.text for s in segments] == [" Hello there.", " General Kenobi.", " spaced out"]
    assert [s.tokens for s in segments] == [[1, 2], [3], [4]]
    assert [s.seek for s in segments] == [0, 0, 3000]
    assert [s.temperature for s in segments] == [0.0, 0.0, 0.4]
    assert all(s.avg_logprob == -0.25 and s.compression_ratio == 1.5 for s in segments)
    assert all(s.no_speech_prob == 0.01 for s in segments)
    assert joined_text(segments) == "Hello there. General Kenobi. spaced out"


def test_seek_is_on_the_original_timeline_with_vad() -> None:
    # Two speech spans, 10 s of silence between them: the second window starts at 5 s collapsed, 15 s original.
    speech = [{"start": 0, "end": 5 * SAMPLE_RATE}, {"start": 15 * SAMPLE_RATE, "end": 20 * SAMPLE_RATE}]
    pieces = [(0.0, result((0.0, 4.0, " one", [1]))), (5.0, result((1.0, 2.0, " two", [2])))]
    segments = stitch(pieces, speech)
    assert [s.seek for s in segments] == [0, 1500]
    assert [(s.start, s.end) for s in segments] == [(0.0, 4.0), (16.0, 17.0)]


def test_spaced_keeps_one_leading_space_except_before_wide_characters() -> None:
    assert spaced(" And so") == " And so"
    assert spaced("And so ") == " And so"
    assert spaced("   ") == ""
    assert spaced("你好") == "你好"
    assert spaced(" 你好") == " 你好"
    segments = [Segment(start=0.0, end=0.0, text=spaced(t)) for t in ("你好", "世界", " Hi", "there")]
    assert joined_text(segments) == "你好世界 Hi there"


def test_windows_stitched_one_by_one_equal_all_at_once() -> None:
    def pieces() -> list[tuple[float, WindowResult]]:
        word = Word(word=" w", start=0.5, end=0.8, probability=0.9)
        with_words = result((0.2, 1.0, " a", [1]))
        with_words.segments[0].words = [word]
        return [(0.0, with_words), (2.0, result((0.0, 0.5, " b", [2]))), (30.0, result((0.0, 3.0, " c", [3])))]

    speech = [{"start": 0, "end": 40 * SAMPLE_RATE}]
    whole = stitch(pieces(), speech)
    one_by_one = [s for piece in pieces() for s in stitch([piece], speech)]
    assert one_by_one == whole and len(whole) == 3


# ---------------------------------------------------------------------------------------------- progress order


def _write_noise(path: Path, seconds: int) -> None:
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(seconds * SAMPLE_RATE) * 1000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())


class _FakeDecoder:
    """The Decoder's event stream (its real method) over the real pipeline, against a Whisper whose later windows
    answer first, and whose first window stops early so its tail is decoded again, last of all."""

    _events = deployment.Decoder.func_or_class._events

    def __init__(self) -> None:
        self._window_budget = PrioritySemaphore(16)
        self.calls = 0
        self.finished: list[float] = []  # window lengths (s) in the order Whisper answered

    class reporter:  # noqa: N801 - stands in for the Reporter instance
        @staticmethod
        def add(*args: Any, **kwargs: Any) -> None:
            pass

    async def transcribe_window(self, audio: np.ndarray, options: DecodeOptions, priority: int) -> WindowResult:
        assert options.language == "en"  # given: nothing to detect
        call, self.calls = self.calls, self.calls + 1
        seconds = audio.shape[0] / SAMPLE_RATE
        await asyncio.sleep(0.4 if call == 0 else 0.3 - 0.05 * min(call, 5))
        self.finished.append(seconds)
        end = seconds / 2 if call == 0 else seconds  # the first window stops half-way: its tail comes again
        segment = Segment(start=0.0, end=end, text=f"window {call}", tokens=[call])
        return WindowResult([segment], -0.1, 0.0, 1.2, 0.0)


def test_progress_segments_come_in_audio_order(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    _write_noise(path, 100)  # 4 fixed windows without VAD: 30, 30, 30 and 10 s
    spooled = tmp_path / "spooled"
    shutil.copy(path, spooled)
    source = WindowSource(spooled, vad=False, max_seconds=None)
    steps = Steps(source)
    decoder = _FakeDecoder()

    async def run() -> list[dict]:
        slots = PrioritySemaphore(1)
        await slots.acquire()
        job = deployment._Job(spooled, steps, slots, set())
        info = await steps.open()
        pipeline = WindowPipeline(
            steps,
            decoder.transcribe_window,
            DecodeOptions("en"),
            detect=False,
            duration=info.duration,
            budget=decoder._window_budget,
            on_cut=job.release,
        )
        events = decoder._events(job, source, pipeline, AppInfo(engine="fake", model="fake"), 0.0, 0.0)
        return [json.loads(line) async for line in events]

    events = asyncio.run(run())
    assert decoder.finished[0] != 30.0  # Whisper answered out of audio order (a later window first)
    progress = [s for e in events if e["event"] == "progress" for s in e["segments"]]
    transcript = events[-1]["transcript"]
    assert events[-1]["event"] == "result"
    assert progress == transcript["segments"]
    starts = [s["start"] for s in progress]
    assert starts == sorted(starts) and len(progress) == 5  # 4 windows and the first one's tail
    assert [s["seek"] for s in progress] == [0, 1500, 3000, 6000, 9000]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert transcript["text"] == "window 0 window 4 window 1 window 2 window 3"
