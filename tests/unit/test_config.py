"""Settings come from SPCS_WHISPER_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("HOST", "PORT", "DATA_DIR", "ENGINE", "MODEL", "MAX_UPLOAD_MB"):
        monkeypatch.delenv(f"SPCS_WHISPER_{key}", raising=False)
    s = Settings()
    assert (s.gateway.host, s.gateway.port, s.gateway.data_dir, s.inference.model) == (
        "127.0.0.1",
        8080,
        Path("./data"),
        "base",
    )
    assert s.inference.effective_engine in ("ctranslate2", "transformers")
    assert s.effective_serve_url == "http://127.0.0.1:8000/whisper"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPCS_WHISPER_HOST", "0.0.0.0")
    monkeypatch.setenv("SPCS_WHISPER_PORT", "9000")
    monkeypatch.setenv("SPCS_WHISPER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPCS_WHISPER_ENGINE", "transformers")
    monkeypatch.setenv("SPCS_WHISPER_MODEL", "tiny.en")
    monkeypatch.setenv("SPCS_WHISPER_MAX_UPLOAD_MB", "1.5")
    s = Settings()
    assert (s.gateway.host, s.gateway.port, s.gateway.data_dir, s.inference.effective_engine, s.inference.model) == (
        "0.0.0.0",
        9000,
        tmp_path,
        "transformers",
        "tiny.en",
    )
    assert s.inference.max_upload_bytes == int(1.5 * 1024 * 1024)
    assert s.gateway.db_path == tmp_path / "jobs.sqlite3"


@pytest.mark.parametrize(("key", "value"), [("ENGINE", "onnx"), ("PORT", "0"), ("MAX_UPLOAD_MB", "-1")])
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"SPCS_WHISPER_{key}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_come_in_groups_and_only_inference_goes_to_ray() -> None:
    """Flat keywords land in their group; the Ray deployments get the inference group and nothing else."""
    from service.config import InferenceSettings

    s = Settings(max_batch_size=4, store="sqlite", snowflake_database="DB", api_token="t", data_dir=Path("/tmp/d"))
    assert (s.inference.max_batch_size, s.gateway.store, s.snowflake.snowflake_database) == (4, "sqlite", "DB")
    assert s.inference.model_cache_dir == Path("/tmp/d/models")  # CACHE_DIR defaults under DATA_DIR
    shipped = s.inference.model_dump(mode="json")
    assert "api_token" not in shipped and "snowflake_password" not in shipped and "max_batch_size" in shipped
    assert InferenceSettings(**shipped).max_batch_size == 4


def test_engine_is_checked_against_the_registry() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown engine 'vllm'"):
        Settings(engine="vllm")
    with pytest.raises(ValidationError, match="runs on cpu, not 'cuda'"):
        Settings(engine="standin", device="cuda")
    assert Settings(engine="transformers", device="cpu").inference.effective_engine == "transformers"
