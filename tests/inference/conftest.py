"""Fixtures of the engine-level tests: the real `base` weights on CTranslate2 and the JFK clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.audio import decode
from service.inference.engine_ctranslate2 import CTranslate2Engine
from service.inference.models import resolve
from tests.integration.helpers import DATA


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> CTranslate2Engine:
    return CTranslate2Engine(resolve("base", model_cache), model_cache, cpu_threads=2)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return decode(DATA / "en_jfk.flac")
