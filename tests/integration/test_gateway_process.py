"""The gateway is its own light process: no torch, transformers or ctranslate2 in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import Service
from tests.integration.helpers import DATA, transcribe

HEAVY = ("torch", "transformers", "ctranslate2", "faster_whisper", "ray")


def test_gateway_imports_no_engine() -> None:
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.api.app import create_app\n"
        "with TestClient(create_app()) as c:\n"
        "    c.get('/healthz'); c.get('/readyz')\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "SPCS_WHISPER_SERVE_URL": "http://127.0.0.1:9/none"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"gateway imported {result.stdout.strip()}"


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)  # engine-agnostic: one engine is enough
def test_running_gateway_process_maps_no_engine(service: Service) -> None:
    maps = _mapped_libraries(service.process.pid)
    assert "libtorch" not in maps and "libctranslate2" not in maps


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)  # engine-agnostic: one engine is enough
def test_gateway_only_process_against_the_ray_app(gateway_only) -> None:
    url, process = gateway_only
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        _, transcript = transcribe(client, DATA / "en_jfk.m4a")
    assert "ask not" in transcript["text"].lower()
    maps = _mapped_libraries(process.pid)
    assert "libtorch" not in maps and "libctranslate2" not in maps
