"""Fixtures: the real service per engine, and a gateway-only process against its Ray Serve app."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    ENGINES,
    Service,
    free_port,
    start_gateway,
    start_service,
    stop_gateway,
    stop_service,
    wait_ready,
)

__all__ = ["Service", "free_port"]


@pytest.fixture(scope="session", params=ENGINES)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Iterator[Service]:
    engine = request.param
    root = tmp_path_factory.mktemp(f"svc-{engine}")
    svc = start_service(engine, root / "data", model_cache, root / "service.log")
    yield svc
    stop_service(svc)


@pytest.fixture
def gateway_only(service: Service, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`spcs-whisper gateway` alone (its own store, 0.5 MB upload limit) against the running Ray Serve app."""
    url, process = start_gateway(
        tmp_path / "gw", service.serve_url, tmp_path / "gateway.log", SPCS_WHISPER_MAX_UPLOAD_MB="0.5"
    )
    wait_ready(url)
    yield url, process
    stop_gateway(process)
