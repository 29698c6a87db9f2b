"""The CTranslate2 engine's answer to a repetition loop (`service/inference/loops.py`): the looping row is decoded
again at Whisper's fallback temperatures, the other rows are left as they were.

No clip of the test audio makes `base` loop on CTranslate2, so the first decoding of one row is replaced by a loop
(a 7-token unit repeated to 120 tokens, as the transformers engine met on a Hindi clip); every decoding after it
is the real model's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.inference.engine_ctranslate2 import CTranslate2Engine
from service.inference.types import DecodeOptions
from tests.integration.helpers import MANIFEST_JFK, wer

LOOP = [1456, 2091, 322, 13, 1456, 2091, 1192] * 17 + [50257]


def _looping(engine: CTranslate2Engine, monkeypatch: pytest.MonkeyPatch, calls: int) -> list[float]:
    """Make row 0 of the engine's first `calls` decodings a loop; returns the temperatures decoded at."""
    real, seen = engine._generate, []

    def generate(encoder_output: Any, options: Any, prompts: list[list[int]]) -> list[dict]:
        outputs = real(encoder_output, options, prompts)
        seen.append(options.temperatures[0])
        if len(seen) <= calls:
            outputs[0] = {**outputs[0], "tokens": list(LOOP)}
        return outputs

    monkeypatch.setattr(engine, "_generate", generate)
    return seen


def test_a_looping_row_is_decoded_again_warmer(
    engine: CTranslate2Engine, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _looping(engine, monkeypatch, calls=1)
    looped, plain = engine.transcribe_batch([jfk, jfk], DecodeOptions(language="en"))
    assert seen == [0.0, 0.2]  # one batch, then the looping row alone at the next temperature
    assert looped.temperature == 0.2 and wer(MANIFEST_JFK, "".join(s.text for s in looped.segments)) < 0.1
    assert plain.temperature == 0.0 and wer(MANIFEST_JFK, "".join(s.text for s in plain.segments)) == 0.0


def test_a_row_that_loops_at_every_temperature_keeps_its_first_decoding(
    engine: CTranslate2Engine, jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _looping(engine, monkeypatch, calls=6)
    (result,) = engine.transcribe_batch([jfk], DecodeOptions(language="en"))
    assert seen == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert result.temperature == 0.0 and result.compression_ratio is not None and result.compression_ratio > 2.4
