"""`source: "https://..."`: the gateway downloads the audio (address checks, limits), stores it like an
upload and transcribes it. Served here by a local HTTP server, which the gateway under test is configured
to allow (http and 127.0.0.1 on the allowlist); every other internal address stays refused."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.harness import Service, start_gateway, stop_gateway, wait_ready
from tests.integration.helpers import DATA, MANIFEST_JFK, wait, wer

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def media_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(DATA)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def client(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("url-gateway")
    url, process = start_gateway(
        root / "data",
        service.serve_url,
        root / "gateway.log",
        SPCS_WHISPER_URL_ALLOW_HTTP="true",
        SPCS_WHISPER_URL_ALLOWLIST='["127.0.0.1"]',
        SPCS_WHISPER_MAX_UPLOAD_MB="1",
    )
    wait_ready(url)
    with httpx.Client(base_url=url, timeout=300) as c:
        yield c
    stop_gateway(process)


def test_a_url_source_is_downloaded_and_transcribed(client: httpx.Client, media_server: str) -> None:
    response = client.post("/v1/jobs", json={"source": f"{media_server}/en_jfk.m4a?signature=SECRET", "language": "en"})
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["source"] == f"{media_server}/en_jfk.m4a"  # the query (a signature, say) is not kept
    job = wait(client, created["id"])
    assert job["status"] == "succeeded", job
    assert wer(MANIFEST_JFK, client.get(f"/v1/jobs/{job['id']}/transcript").json()["text"]) == 0.0


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/missing.mp3", 404, "source_not_found"),
        ("/manifest.tsv", 415, "unsupported_media"),
        ("/en_jfk.flac", 413, "file_too_large"),  # 1.1 MB against a 1 MB limit, refused while downloading
    ],
)
def test_bad_url_sources(client: httpx.Client, media_server: str, path: str, status: int, code: str) -> None:
    response = client.post("/v1/jobs", json={"source": media_server + path})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_only_the_allowlisted_address_is_reachable(client: httpx.Client) -> None:
    for source in ("http://10.0.0.1/a.mp3", "http://169.254.169.254/latest/", "http://[::1]:9/a.mp3"):
        response = client.post("/v1/jobs", json={"source": source})
        assert response.status_code == 422 and response.json()["error"]["code"] == "forbidden_address", source
