"""Model resolution: packaged CTranslate2 checkpoints, and a Hugging Face checkpoint folder given by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.audio import decode
from service.inference.convert import ensure_hf_checkpoint
from service.inference.models import ModelNotFound, resolve
from service.inference.types import DecodeOptions

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_packaged_models_resolve(cache: Path) -> None:
    base = resolve("base", cache)
    assert base.format == "ctranslate2" and (base.path / "model.bin").stat().st_size > 100_000_000
    assert resolve("base", cache).path == base.path  # joined once, then reused
    assert resolve("tiny.en", cache).format == "ctranslate2"


def test_unknown_model_is_refused(cache: Path) -> None:
    with pytest.raises(ModelNotFound):
        resolve("large-v9", cache)
    with pytest.raises(ModelNotFound):
        resolve(str(cache), cache)  # a folder without a checkpoint


def test_hugging_face_folder_loads_by_path_in_both_engines(cache: Path) -> None:
    """A Hugging Face checkpoint folder (like large-v3 on a stage mount) is found by path; the ctranslate2
    engine converts it once with ctranslate2's own converter, the transformers engine loads it directly."""
    from service.inference.engine_ctranslate2 import CTranslate2Engine
    from service.inference.engine_transformers import TransformersEngine

    hf_dir = ensure_hf_checkpoint(resolve("tiny.en", cache), cache)
    files = resolve(str(hf_dir), cache)
    assert files.format == "huggingface"
    jfk = decode(DATA / "en_jfk.flac")
    for engine in (CTranslate2Engine(files, cache, cpu_threads=2), TransformersEngine(files, cache, cpu_threads=2)):
        text = " ".join(s.text for s in engine.transcribe_batch([jfk], DecodeOptions(language="en"))[0].segments)
        assert "ask not what your country can do for you" in text.lower().replace(",", ""), (engine.name, text)
