"""Every input of the hostile corpus (tests/hostile.py) is refused with its 4xx and the one error body, by a real
gateway with small limits; afterwards the gateway is still ready, serves a normal job, and kept nothing refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Service, start_gateway, stop_gateway, wait_ready
from tests.hostile import MAX_AUDIO_SECONDS, MAX_UPLOAD_MB, Case, corpus
from tests.integration.helpers import DATA, assert_error, transcribe

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)]

CASES = corpus()


@pytest.fixture(scope="module")
def gateway(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A gateway-only process (its own store) against the running Ray Serve app; yields (url, data dir)."""
    root = tmp_path_factory.mktemp("hostile")
    url, process = start_gateway(
        root / "data",
        service.serve_url,
        root / "gateway.log",
        SPCS_WHISPER_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
        SPCS_WHISPER_MAX_AUDIO_SECONDS=str(MAX_AUDIO_SECONDS),
    )
    wait_ready(url, 30)
    yield url, root / "data"
    stop_gateway(process)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_is_refused(gateway: tuple[str, Path], case: Case, tmp_path: Path) -> None:
    url, _ = gateway
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/v1/jobs", **case.build(tmp_path))
    assert_error(response, case.status, case.code)
    assert set(response.json()) == {"error"}


def test_the_gateway_is_whole_after_the_corpus(gateway: tuple[str, Path]) -> None:
    """Runs after the corpus (file order): still ready, a normal job succeeds, only that job was kept."""
    url, data_dir = gateway
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/readyz").status_code == 200
        job, transcript = transcribe(client, DATA / "en_jfk.m4a")
        assert "ask not" in transcript["text"].lower()
        listed = client.get("/v1/jobs", params={"limit": 200}).json()
    assert not list(data_dir.rglob(".incoming-*"))
    assert [j["id"] for j in listed["jobs"]] == [job["id"]], [j["source"] for j in listed["jobs"]]
