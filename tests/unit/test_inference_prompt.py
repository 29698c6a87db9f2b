"""Prompt and hotwords with the real tokenizer of the offline `base` model, in both engines, and the Whisper
fields of their segments (text tokens, the window's compression ratio, the temperature)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio

from service.audio import decode
from service.inference.engine_ctranslate2 import CTranslate2Engine
from service.inference.engine_transformers import TransformersEngine
from service.inference.models import resolve
from service.inference.types import DecodeOptions, WindowResult

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent.parent / "data"
HOTWORDS = "Kennedy, inaugural address"


def reference(name: str) -> str:
    with (DATA / "manifest.tsv").open(newline="") as fh:
        return next(row for row in csv.DictReader(fh, delimiter="\t") if row["file"] == name)["reference_text"]


# A previous transcript of 16,000 characters (the most the Ray app takes): about 3,500 tokens.
LONG_PROMPT = (" ".join([reference("en_ljspeech_longform.wav")] * 6))[-16_000:]


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode(DATA / "en_jfk.flac")


@pytest.fixture(scope="module")
def ct2(model_cache: Path) -> CTranslate2Engine:
    return CTranslate2Engine(resolve("base", model_cache), model_cache, cpu_threads=2)


@pytest.fixture(scope="module")
def hf(model_cache: Path) -> TransformersEngine:
    return TransformersEngine(resolve("base", model_cache), model_cache, cpu_threads=2)


def ct2_tokenizer(engine: CTranslate2Engine) -> Tokenizer:
    return Tokenizer(engine.model.hf_tokenizer, True, task="transcribe", language="en")


def check_fields(result: WindowResult, decode_text: Callable[[list[int]], str]) -> None:
    """Every segment's tokens are its text; the window's compression ratio is that of its whole text."""
    assert result.segments
    for segment in result.segments:
        assert segment.tokens and all(t < 50257 for t in segment.tokens)
        assert decode_text(segment.tokens) == segment.text
        assert segment.text.startswith(" ")
    text = decode_text([t for s in result.segments for t in s.tokens])
    assert result.compression_ratio == pytest.approx(get_compression_ratio(text))
    assert result.temperature == 0.0
    assert result.avg_logprob is not None and result.avg_logprob < 0


def test_ct2_prompt_keeps_the_last_223_tokens(ct2: CTranslate2Engine) -> None:
    tokenizer = ct2_tokenizer(ct2)
    text = tokenizer.encode(" " + LONG_PROMPT.strip())
    assert len(text) > 3000
    prompt = ct2.prompt(tokenizer, DecodeOptions("en", initial_prompt=LONG_PROMPT))
    assert prompt == [tokenizer.sot_prev, *text[-223:], *tokenizer.sot_sequence]
    hot = tokenizer.encode(" " + HOTWORDS)
    prompt = ct2.prompt(tokenizer, DecodeOptions("en", initial_prompt=LONG_PROMPT, hotwords=HOTWORDS))
    assert prompt == [tokenizer.sot_prev, *hot, *text[-(223 - len(hot)) :], *tokenizer.sot_sequence]
    assert ct2.prompt(tokenizer, DecodeOptions("en")) == list(tokenizer.sot_sequence)


def test_transformers_prompt_is_the_same_tokens(ct2: CTranslate2Engine, hf: TransformersEngine) -> None:
    tokenizer = ct2_tokenizer(ct2)
    for options in (
        DecodeOptions("en", initial_prompt=LONG_PROMPT),
        DecodeOptions("en", initial_prompt=LONG_PROMPT, hotwords=HOTWORDS),
        DecodeOptions("en", hotwords=HOTWORDS),
    ):
        ids = hf.prompt_ids(options)
        assert ids == ct2.prompt(tokenizer, options)[: -len(tokenizer.sot_sequence)]
        assert len(ids) <= 224
    assert hf.prompt_ids(DecodeOptions("en")) == []


def test_ct2_decodes_with_a_long_prompt_and_hotwords(ct2: CTranslate2Engine, jfk: np.ndarray) -> None:
    options = DecodeOptions("en", beam_size=2, initial_prompt=LONG_PROMPT, hotwords=HOTWORDS)
    (result,) = ct2.transcribe_batch([jfk], options)
    assert "fellow americans" in "".join(s.text for s in result.segments).lower()
    check_fields(result, ct2_tokenizer(ct2).decode)


def test_transformers_decodes_with_a_long_prompt_and_hotwords(hf: TransformersEngine, jfk: np.ndarray) -> None:
    options = DecodeOptions("en", beam_size=1, initial_prompt=LONG_PROMPT, hotwords=HOTWORDS)
    (result,) = hf.transcribe_batch([jfk], options)
    assert "fellow americans" in "".join(s.text for s in result.segments).lower()
    check_fields(result, hf.tokenizer.decode)


def test_sampling_temperature_is_reported(ct2: CTranslate2Engine, jfk: np.ndarray) -> None:
    (result,) = ct2.transcribe_batch([jfk], DecodeOptions("en", temperature=0.3))
    assert result.temperature == 0.3 and "country" in "".join(s.text for s in result.segments).lower()
