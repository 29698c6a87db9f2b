"""TransformersEngine on the offline Whisper checkpoints (tiny.en and multilingual base) on CPU.

Slow-ish: loads two real models and decodes real speech; well under a minute on two CPU cores.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from service.audio import decode
from service.inference.alignment import dtw, split_spaces
from service.inference.engine_transformers import TransformersEngine, _WindowEnd
from service.inference.models import resolve
from service.inference.types import DecodeOptions, WindowResult
from service.transcript import Segment

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent.parent / "data"
JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
SR = 16_000


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().translate(str.maketrans("", "", string.punctuation))).strip()


def text_of(result: WindowResult) -> str:
    return "".join(s.text for s in result.segments)


def check_times(segments: list[Segment], duration: float) -> None:
    """Segments (and their words) lie in [0, duration] and never go back in time."""
    previous = 0.0
    for segment in segments:
        assert 0.0 <= segment.start <= segment.end <= duration
        assert segment.start >= previous - 1e-6
        previous = segment.end
        for word in segment.words or []:
            assert segment.start - 1e-6 <= word.start <= word.end <= segment.end + 1e-6


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode(DATA / "en_jfk.flac")


@pytest.fixture(scope="module")
def tiny(model_cache: Path) -> TransformersEngine:
    return TransformersEngine(resolve("tiny.en", model_cache), model_cache, cpu_threads=2)


@pytest.fixture(scope="module")
def base(model_cache: Path) -> TransformersEngine:
    return TransformersEngine(resolve("base", model_cache), model_cache, cpu_threads=2)


def test_engine_attributes(tiny: TransformersEngine, base: TransformersEngine) -> None:
    assert (tiny.name, tiny.model_name, tiny.multilingual) == ("transformers", "tiny.en", False)
    assert (base.model_name, base.multilingual) == ("base", True)
    assert base.model.dtype == torch.float32 and base.model.config._attn_implementation == "sdpa"


def test_empty_batch(tiny: TransformersEngine) -> None:
    assert tiny.transcribe_batch([], DecodeOptions(language="en")) == []


def test_tiny_batch_of_two_with_word_timestamps(tiny: TransformersEngine, jfk: np.ndarray) -> None:
    windows = [jfk, jfk[: 5 * SR]]
    results = tiny.transcribe_batch(windows, DecodeOptions(language="en", beam_size=2, word_timestamps=True))
    assert len(results) == 2
    assert "ask not what your country can do for you" in normalise(text_of(results[0]))
    assert normalise(text_of(results[1])).startswith("and so")
    for result, window in zip(results, windows, strict=True):
        check_times(result.segments, len(window) / SR)
        words = [w for s in result.segments for w in s.words or []]
        assert len(words) >= 5
        assert all(a.start <= b.start and a.end <= b.end for a, b in zip(words, words[1:], strict=False))
        assert all(0.0 <= w.probability <= 1.0 for w in words)
        assert normalise("".join(w.word for w in words)) == normalise(text_of(result))
        assert result.avg_logprob is not None and -2.0 < result.avg_logprob < 0.0
        assert result.no_speech_prob is not None and result.no_speech_prob < 0.5
    assert results[0].segments[-1].end > 9.0  # the words reach the end of the speech


def test_silence_and_tiny_windows_do_not_crash(tiny: TransformersEngine) -> None:
    windows = [np.zeros(2 * SR, dtype=np.float32), np.zeros(100, dtype=np.float32)]
    results = tiny.transcribe_batch(windows, DecodeOptions(language="en", beam_size=1, word_timestamps=True))
    assert len(results) == 2
    check_times(results[0].segments, 2.0)
    check_times(results[1].segments, 100 / SR)
    assert results[0].no_speech_prob is not None and results[0].no_speech_prob > 0.5


def test_initial_prompt(tiny: TransformersEngine, jfk: np.ndarray) -> None:
    options = DecodeOptions(language="en", beam_size=1, initial_prompt="Kennedy's inaugural address.")
    (result,) = tiny.transcribe_batch([jfk[: 5 * SR]], options)
    assert "fellow americans" in normalise(text_of(result))


def test_base_detects_english(base: TransformersEngine, jfk: np.ndarray) -> None:
    language, probability = base.detect_language(jfk)
    assert language == "en" and probability > 0.5


def test_english_only_model_reports_english(tiny: TransformersEngine, jfk: np.ndarray) -> None:
    assert tiny.detect_language(jfk) == ("en", 1.0)


def test_base_transcribes_jfk(base: TransformersEngine, jfk: np.ndarray) -> None:
    (result,) = base.transcribe_batch([jfk], DecodeOptions(language="en", beam_size=1))
    assert jiwer.wer(JFK, normalise(text_of(result))) <= 0.05
    check_times(result.segments, 11.1)
    assert result.compression_ratio is not None and result.compression_ratio > 1.0


def test_base_translate_task(base: TransformersEngine, jfk: np.ndarray) -> None:
    options = DecodeOptions(language="hi", task="translate", beam_size=1)
    (result,) = base.transcribe_batch([jfk[: 5 * SR]], options)
    assert "fellow americans" in normalise(text_of(result))
    check_times(result.segments, 5.0)


def test_unknown_language_is_refused(base: TransformersEngine, jfk: np.ndarray) -> None:
    with pytest.raises(ValueError, match="language"):
        base.transcribe_batch([jfk[:SR]], DecodeOptions(language="xx"))


def test_dtw_matches_openai_reference() -> None:
    def reference(x: np.ndarray) -> tuple[list[int], list[int]]:  # openai/whisper timing.dtw_cpu, unrolled
        n, m = x.shape
        cost = np.full((n + 1, m + 1), np.inf)
        trace = -np.ones((n + 1, m + 1))
        cost[0, 0] = 0
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
                c, t = (c0, 0) if c0 < c1 and c0 < c2 else (c1, 1) if c1 < c0 and c1 < c2 else (c2, 2)
                cost[i, j], trace[i, j] = x[i - 1, j - 1] + c, t
        trace[0, :], trace[:, 0] = 2, 1
        i, j, texts, times = n, m, [], []
        while i > 0 or j > 0:
            texts.append(i - 1)
            times.append(j - 1)
            i, j = (i - 1, j - 1) if trace[i, j] == 0 else (i - 1, j) if trace[i, j] == 1 else (i, j - 1)
        return texts[::-1], times[::-1]

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (12, 40), (30, 9)]:
        x = rng.normal(size=shape)
        texts, times = dtw(x)
        assert (texts.tolist(), times.tolist()) == reference(x)


def test_words_split_at_leading_spaces_and_punctuation(tiny: TransformersEngine) -> None:
    ids = tiny.tokenizer(" Ask not, fellowship-wise!", add_special_tokens=False).input_ids
    words = [w for w, _ in split_spaces(ids, tiny.tokenizer)]
    assert "".join(words) == " Ask not, fellowship-wise!"
    assert words[:3] == [" Ask", " not", ","] and words[-1] == "!"


def test_window_end_processor_forces_end_of_text() -> None:
    eot, begin = 10, 20  # toy vocabulary: text < 10, eot = 10, timestamps from 20 on
    processor = _WindowEnd([0.1, 30.0], begin, eot, max_index=1500, device=torch.device("cpu"))
    ids = torch.tensor([[1, 2, begin + 5], [1, 2, 3]])  # row 0 has reached its window's end (0.1 s)
    scores = processor(ids, torch.zeros(2, begin + 1501))
    assert torch.isinf(scores[0]).sum() == scores.shape[1] - 1 and scores[0, eot] == 0
    assert torch.isinf(scores[1]).sum() == 0  # a full 30 s window: nothing suppressed


HINDI_LOOP = Path(__file__).resolve().parents[3] / "shared" / "audio" / "hi_mannkibaat_00C007.mp3"


@pytest.mark.skipif(not HINDI_LOOP.is_file(), reason="the Hindi clips live in ../shared/audio only")
def test_a_window_stuck_in_a_loop_is_stopped_and_decoded_again_warmer(base: TransformersEngine) -> None:
    """`base` with beam search repeats one word of this Hindi clip's speech window to its 448-token limit
    (loops.py); the guard ends the loop within ~60 tokens and the window is decoded again at 0.2, seeded."""
    from service.inference.windows import cut

    window = cut(decode(HINDI_LOOP), vad=True).audio[0]
    first, again = (base.transcribe_batch([window], DecodeOptions(language="hi"))[0] for _ in range(2))
    assert first.temperature == 0.2 and first.segments
    tokens = [t for s in first.segments for t in s.tokens]
    assert len(tokens) < 120 and first.compression_ratio is not None and first.compression_ratio < 2.4
    assert text_of(again) == text_of(first)  # seeded: the same text each time
