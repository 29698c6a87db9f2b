"""The stand-in engine for scale tests (service/inference/engine_standin.py): its GPU curves, its results, its hold
scaled by STANDIN_TIME_SCALE, and that it is used only when named."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from service import config
from service.audio import SAMPLE_RATE
from service.config import Settings
from service.inference import engines
from service.inference.engine_standin import CURVES, StandInEngine
from service.inference.types import DecodeOptions


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in os.environ:
        if key.startswith("SPCS_WHISPER_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("gpu", sorted(CURVES))
def test_batch_time_and_realtime_factor_grow_with_the_batch(gpu: str) -> None:
    curve = CURVES[gpu]
    sizes = [1, 2, 4, 8, 16, 32, 64]
    times = [curve.batch_seconds(b) for b in sizes]
    factors = [curve.realtime_factor(b) for b in sizes]
    assert all(t > 0 for t in times)
    assert times == sorted(times) and len(set(times)) == len(times)  # a bigger batch takes longer...
    assert factors == sorted(factors) and len(set(factors)) == len(factors)  # ...but gets more audio per second
    assert curve.realtime_factor(8) == pytest.approx(30 * 8 / curve.batch_seconds(8))


def test_a10g_is_slower_than_h100_at_every_batch_size() -> None:
    a10g, h100 = CURVES["a10g"], CURVES["h100"]
    for b in (1, 8, 16, 32, 64):
        assert a10g.batch_seconds(b) > h100.batch_seconds(b)
        assert a10g.realtime_factor(b) < h100.realtime_factor(b)
    # The published figures the curves stand on, loosely: ~70x real time (A10G) and a few hundred (H100) at 64.
    assert 40 < a10g.realtime_factor(64) < 120
    assert 200 < h100.realtime_factor(64) < 600


def test_one_result_per_window_with_a_segment_spanning_it() -> None:
    engine = StandInEngine("h100", time_scale=1e-4)
    lengths = [30.0, 12.5, 0.5]
    windows = [np.zeros(int(s * SAMPLE_RATE), dtype=np.float32) for s in lengths]
    results = engine.transcribe_batch(windows, DecodeOptions(language="en"))
    assert len(results) == len(windows)
    for seconds, result in zip(lengths, results, strict=True):
        assert len(result.segments) == 1
        segment = result.segments[0]
        assert (segment.start, segment.end) == (0.0, pytest.approx(seconds))
        assert segment.text.strip()
        assert result.no_speech_prob == 0.0
    assert engine.detect_language(windows[0]) == ("en", 1.0)
    assert (engine.name, engine.multilingual) == ("standin", True)
    assert engine.model_name == "standin-large-v3-h100"


def _held(engine: StandInEngine, windows: int) -> float:
    audio = [np.zeros(SAMPLE_RATE, dtype=np.float32)] * windows
    started = time.perf_counter()
    engine.transcribe_batch(audio, DecodeOptions(language="en"))
    return time.perf_counter() - started


def test_time_scale_multiplies_the_hold() -> None:
    curve = CURVES["a10g"]
    small, large = 0.02, 0.1
    expected_small, expected_large = curve.batch_seconds(4) * small, curve.batch_seconds(4) * large  # 0.064, 0.32
    held_small = _held(StandInEngine("a10g", time_scale=small), 4)
    held_large = _held(StandInEngine("a10g", time_scale=large), 4)
    assert expected_small * 0.95 <= held_small < expected_small + 0.5  # sleep never returns early; loose above
    assert expected_large * 0.95 <= held_large < expected_large + 0.5
    assert held_large > held_small
    started = time.perf_counter()
    StandInEngine("a10g", time_scale=small).detect_language(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert time.perf_counter() - started >= curve.fixed_s * small * 0.95


def test_load_engine_picks_the_standin_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engines.load_engine(Settings(engine="standin", standin_gpu="h100", standin_time_scale=3.0).inference)
    assert isinstance(engine, StandInEngine)
    assert (engine.curve, engine.time_scale) == (CURVES["h100"], 3.0)
    monkeypatch.setenv("SPCS_WHISPER_ENGINE", "standin")
    monkeypatch.setenv("SPCS_WHISPER_STANDIN_TIME_SCALE", "2.5")
    engine = engines.load_engine(Settings().inference)
    assert isinstance(engine, StandInEngine) and engine.time_scale == 2.5 and engine.curve is CURVES["a10g"]


@pytest.mark.parametrize("gpu", [True, False])
def test_default_engine_is_never_the_standin(monkeypatch: pytest.MonkeyPatch, gpu: bool) -> None:
    monkeypatch.setattr(config, "gpu_present", lambda: gpu)
    settings = Settings()
    assert settings.inference.engine is None
    assert settings.inference.effective_engine == ("transformers" if gpu else "ctranslate2")


def test_a_real_engine_setting_does_not_load_the_standin(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """ENGINE=ctranslate2 goes to the model resolver (stubbed here: it refuses), never to the stand-in."""

    def resolve(model: str, cache) -> None:
        raise LookupError(model)

    monkeypatch.setattr(engines, "resolve", resolve)
    with pytest.raises(LookupError):
        engines.load_engine(Settings(engine="ctranslate2", cache_dir=tmp_path).inference)
