"""The engine registry: every engine the service can run, with what it declares it can do, and `load_engine`.

A spec names its module and class; the module is imported only by `load_engine`, so reading the registry (the
settings' validation, the gateway, the tests) imports no torch, ctranslate2 or transformers. This is the seam a
new engine (vLLM, whisper.cpp...) plugs into: a class implementing `types.Engine` with a `load(settings, files)`
classmethod, and one `EngineSpec` here. An engine that batches requests itself (`batches_itself`, e.g. vLLM's
continuous batching) gets one call per window from the Whisper deployment instead of the service's `Batcher`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from service.inference.models import ModelFiles, resolve

if TYPE_CHECKING:
    from service.config import InferenceSettings
    from service.inference.types import Engine

E = TypeVar("E")


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is and declares it can do."""

    name: str
    module: str  # imported only when the engine is loaded
    cls: str  # a class with `load(settings: InferenceSettings, files: ModelFiles | None) -> Engine`
    description: str
    devices: tuple[str, ...]  # the DEVICE values it runs on ("auto" always: the engine picks)
    batches_itself: bool = False  # True: one call per window, concurrently; False: the service's Batcher
    mixes_languages: bool = False  # one call may hold windows of several languages and tasks (per-row prompts)
    word_timestamps: bool = True
    multilingual_models: bool = True  # runs multilingual checkpoints (language detection, translation)
    loads_model: bool = True  # needs MODEL resolved to a checkpoint (`models.resolve`)
    transcribes: bool = True  # False: a stand-in that returns no real speech (scale tests only)


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "ctranslate2",
            "service.inference.engine_ctranslate2",
            "CTranslate2Engine",
            "faster-whisper's CTranslate2 model, batched as its BatchedInferencePipeline (int8 on CPU)",
            devices=("cpu", "cuda"),
            mixes_languages=True,
        ),
        EngineSpec(
            "transformers",
            "service.inference.engine_transformers",
            "TransformersEngine",
            "Whisper on 🤗 transformers: one generate call per batch (fp16 + SDPA on CUDA)",
            devices=("cpu", "cuda"),
        ),
        EngineSpec(
            "standin",
            "service.inference.engine_standin",
            "StandInEngine",
            "scale tests only: no model, holds each batch as long as a GPU would (runs on the CPU)",
            devices=("cpu",),
            mixes_languages=True,
            word_timestamps=False,
            loads_model=False,
            transcribes=False,
        ),
    )
}


def engine_names() -> list[str]:
    """Every registered engine's name."""
    return list(ENGINES)


def speech_engines() -> list[str]:
    """The engines that transcribe real speech (not the stand-in)."""
    return [name for name, s in ENGINES.items() if s.transcribes]


def spec(name: str) -> EngineSpec:
    """The spec of engine `name`; KeyError naming the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}: one of {', '.join(ENGINES)}") from None


def check_engine(name: str, device: str) -> str | None:
    """What is wrong with running engine `name` on `device` (None: nothing)."""
    if name not in ENGINES:
        return f"unknown engine {name!r}: one of {', '.join(ENGINES)}"
    devices = ENGINES[name].devices
    if device != "auto" and device not in devices:
        return f"engine {name!r} runs on {' or '.join(devices)}, not {device!r}"
    return None


def from_checkpoint(engine_class: Callable[..., E], settings: InferenceSettings, files: ModelFiles | None) -> E:
    """A checkpoint engine built as each is: its files, the model cache, DEVICE, COMPUTE_TYPE and CPU_THREADS."""
    assert files is not None, "a model to load"
    return engine_class(
        files,
        settings.model_cache_dir,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )


def load_engine(settings: InferenceSettings) -> Engine:
    """Load `settings.model` with `settings.effective_engine` on `settings.device` (ValueError if it cannot)."""
    name = settings.effective_engine
    problem = check_engine(name, settings.device)
    if problem:
        raise ValueError(problem)
    chosen = ENGINES[name]
    files = None
    if chosen.loads_model:
        cache = settings.model_cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        files = resolve(settings.model, cache)
    engine_class = getattr(importlib.import_module(chosen.module), chosen.cls)
    return engine_class.load(settings, files)
