"""Choose and load an engine from settings; the engine modules are imported only when chosen."""

from __future__ import annotations

from service.config import Settings
from service.inference.models import resolve
from service.inference.types import Engine


def load_engine(settings: Settings) -> Engine:
    """Load `settings.model` with `settings.effective_engine` on `settings.device`."""
    if settings.effective_engine == "standin":  # scale tests only: no model at all
        from service.inference.engine_standin import StandInEngine

        return StandInEngine(settings.standin_gpu, settings.standin_time_scale)
    cache = settings.model_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    files = resolve(settings.model, cache)
    kwargs = dict(device=settings.device, compute_type=settings.compute_type, cpu_threads=settings.cpu_threads)
    if settings.effective_engine == "transformers":
        from service.inference.engine_transformers import TransformersEngine

        return TransformersEngine(files, cache, **kwargs)
    from service.inference.engine_ctranslate2 import CTranslate2Engine

    return CTranslate2Engine(files, cache, **kwargs)
