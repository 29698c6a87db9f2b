"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache per test session: joined and converted checkpoints are made once."""
    path = tmp_path_factory.getbasetemp() / "model-cache"
    path.mkdir(exist_ok=True)
    return path
