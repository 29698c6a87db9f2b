"""The engine registry (service/inference/engines.py): light to import, its checks, `load_engine` through it, and
the Whisper deployment's two ways of calling an engine: batched by the service, or one call per window for an
engine that batches itself."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from service.config import InferenceSettings
from service.inference import deployment, engines
from service.inference.engines import ENGINES, check_engine, engine_names, spec, speech_engines
from service.inference.pipeline import EngineCalls
from service.inference.types import DecodeOptions, WindowResult
from service.transcript import Segment

HEAVY = ("torch", "transformers", "ctranslate2", "faster_whisper")


def test_importing_the_registry_imports_no_engine() -> None:
    code = (
        "import sys, service.inference.engines as e; e.spec('transformers'); e.check_engine('ctranslate2', 'cuda'); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registry_declares_the_engines() -> None:
    assert engine_names() == ["ctranslate2", "transformers", "standin"]
    assert speech_engines() == ["ctranslate2", "transformers"]
    assert spec("ctranslate2").devices == ("cpu", "cuda") and not spec("ctranslate2").batches_itself
    assert spec("standin").loads_model is False and spec("standin").transcribes is False
    assert all(s.name == name and s.description for name, s in ENGINES.items())
    with pytest.raises(KeyError, match="unknown engine 'vllm'"):
        spec("vllm")


def test_check_engine() -> None:
    assert check_engine("ctranslate2", "cuda") is None and check_engine("transformers", "cpu") is None
    assert check_engine("standin", "auto") is None and check_engine("standin", "cpu") is None
    assert "runs on cpu, not 'cuda'" in (check_engine("standin", "cuda") or "")
    assert "unknown engine" in (check_engine("whisper.cpp", "cpu") or "")


def test_load_engine_refuses_a_device_the_engine_does_not_run_on() -> None:
    with pytest.raises(ValueError, match="runs on cpu"):
        engines.load_engine(InferenceSettings(engine="standin", device="cuda"))


class SelfBatching:
    """An engine that batches itself (as vLLM would): it wants one window per call, many calls at once."""

    name, model_name, multilingual = "standin", "self-batching", True
    loaded: list[Any] = []

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.concurrent = self.most = 0
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: InferenceSettings, files: Any) -> SelfBatching:
        engine = cls()
        cls.loaded.append((settings, files))
        return engine

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return "en", 1.0

    def transcribe_batch(self, windows: list[np.ndarray], options: DecodeOptions) -> list[WindowResult]:
        with self._lock:
            self.calls.append(len(windows))
            self.concurrent += 1
            self.most = max(self.most, self.concurrent)
        time.sleep(0.2)
        with self._lock:
            self.concurrent -= 1
        return [WindowResult([Segment(start=0.0, end=1.0, text=" w")]) for _ in windows]


async def _three_windows(calls: EngineCalls) -> list[WindowResult]:
    audio = np.zeros(16_000, np.float32)
    options = DecodeOptions("en", temperature=0.3)
    return await asyncio.gather(*(calls.transcribe_window(audio, options) for _ in range(3)))


def test_an_engine_that_batches_itself_gets_one_call_per_window_concurrently() -> None:
    engine = SelfBatching()
    calls = EngineCalls(engine, 16, quiet_s=0.05, max_wait_s=0.5, batches_itself=True, node="n")
    results = asyncio.run(_three_windows(calls))
    assert calls.batcher is None and engine.calls == [1, 1, 1] and engine.most > 1
    assert all(r.node == "n" and r.temperature == 0.3 for r in results)
    assert (calls.batches, calls.items, calls.pending()) == (3, 3, 0)


def test_other_engines_are_batched_by_the_service() -> None:
    engine = SelfBatching()
    calls = EngineCalls(engine, 16, quiet_s=0.05, max_wait_s=0.5)
    asyncio.run(_three_windows(calls))
    assert engine.calls == [3] and (calls.batches, calls.items) == (1, 3)


class _Reporter:
    def __init__(self, deployment_name: str) -> None:
        self.counters = type("Counters", (), {"node": "node-1"})()
        self.added: list[tuple[float, int]] = []

    def add(self, busy_s: float, batches: int = 0, windows: int = 0) -> None:
        self.added.append((busy_s, windows))


def test_the_whisper_deployment_follows_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine registered with batches_itself: loaded through the registry, called once per window."""
    registered = dataclasses.replace(
        ENGINES["standin"], module=__name__, cls="SelfBatching", batches_itself=True, loads_model=False
    )
    monkeypatch.setitem(ENGINES, "standin", registered)
    monkeypatch.setattr(deployment, "Reporter", _Reporter)
    settings = InferenceSettings(engine="standin", device="cpu").model_dump(mode="json")
    whisper = deployment.Whisper.func_or_class(settings)
    assert isinstance(whisper.engine, SelfBatching) and isinstance(SelfBatching.loaded[-1][0], InferenceSettings)

    async def run() -> list[WindowResult]:
        audio = np.zeros(16_000, np.float32)
        return await asyncio.gather(*(whisper.transcribe_window(audio, DecodeOptions("en")) for _ in range(3)))

    results = asyncio.run(run())
    assert whisper.engine.calls == [1, 1, 1] and all(r.node == "node-1" for r in results)
    assert whisper.info().batches == 3 and whisper.info().mean_batch_size == 1.0
    assert len(whisper.reporter.added) == 3
