"""Fixtures: the real service per engine, and a gateway-only process against its Ray Serve app."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import ENGINES, Service, free_port, start_service, stop_service

__all__ = ["Service", "free_port"]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


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
    port = free_port()
    env = {
        **os.environ,
        "SPCS_WHISPER_PORT": str(port),
        "SPCS_WHISPER_DATA_DIR": str(tmp_path / "gw"),
        "SPCS_WHISPER_SERVE_URL": service.serve_url,
        "SPCS_WHISPER_MAX_UPLOAD_MB": "0.5",
    }
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "gateway"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    yield url, process
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
