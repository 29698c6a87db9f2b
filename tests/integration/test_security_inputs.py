"""Issue 14, no body or file can hurt the host: what needs the real gateway process (`spcs-whisper gateway`,
SQLite store, real HTTP).

- A 50 MB hostile JSON body is refused while it streams (MAX_JSON_MB, 413 `json_too_large`) and leaves the
  gateway process's memory alone.
- A WAV named `x.html` whose bytes hold a page with a script never runs it on the gateway's origin (a browser).

The gateway has no Ray Serve app behind it (jobs stay queued). The rest of issue 14's input rules (nesting,
stored audio's type, the web page's CSP, bounded downloads and long polls) are tested in process in
tests/api/test_input_security.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from tests.harness import free_port, rss_mb, start_gateway, stop_gateway
from tests.hostile import SCRIPT, script_wav, upload

pytestmark = pytest.mark.integration

HOSTILE_MB = 50
MEMORY_BUDGET_MB = 100
USER = {"sf-context-current-user": "ANALYST"}  # the functions port needs the caller Snowflake names


@dataclass
class Gateway:
    url: str
    functions_url: str
    process: Popen
    log: Path

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def for_path(self, path: str, timeout: float = 60) -> httpx.Client:
        """A client of the port that answers `path` (service functions have their own)."""
        if path.startswith("/functions/"):
            return httpx.Client(base_url=self.functions_url, timeout=timeout, headers=USER)
        return self.client(timeout)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("security-inputs")
    functions_port = free_port()
    url, process = start_gateway(
        root / "data",
        f"http://127.0.0.1:{free_port()}/absent",  # no Ray app: jobs stay queued
        root / "gateway.log",
        SPCS_WHISPER_FUNCTIONS_PORT=str(functions_port),
    )
    yield Gateway(url, f"http://127.0.0.1:{functions_port}", process, root / "gateway.log")
    stop_gateway(process)


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


# --- 1. JSON bodies -----------------------------------------------------------------------------------------------


def _rows_body(megabytes: int) -> Iterator[bytes]:
    """`{"data": [[0, "a"], [0, "a"], ...]}` of about `megabytes` MB, in 64 KB chunks: millions of tiny lists,
    which a parser turns into about 20 times their size in objects."""
    row = b'[0, "a"], '
    chunk = row * (65536 // len(row))
    yield b'{"data": ['
    for _ in range(megabytes * 1024 * 1024 // len(chunk)):
        yield chunk
    yield b'[0, "a"]]}'


def _post_hostile(client: httpx.Client, path: str, declared: bool) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if declared:
        body = b"".join(_rows_body(HOSTILE_MB))
        return client.post(path, content=body, headers=headers)
    return client.post(path, content=_rows_body(HOSTILE_MB), headers=headers)  # chunked: no Content-Length


def test_a_50mb_json_body_is_refused_while_it_streams_and_costs_no_memory(gateway: Gateway) -> None:
    pid = gateway.process.pid
    with gateway.for_path("/functions/") as functions:
        warm = functions.post("/functions/job_status", json={"data": [[0, "job_x"]]})  # the route's code is loaded
        assert warm.status_code == 200, warm.text
    before = rss_mb(pid)
    samples = [before]
    sending = threading.Event()
    sending.set()

    def sample() -> None:  # the peak while the bodies arrive, not only between requests
        while sending.is_set():
            samples.append(rss_mb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers = []
    try:
        for path in ("/functions/transcribe", "/functions/job_status", "/v1/jobs", "/v1/batches"):
            for declared in (False, True):
                started = time.monotonic()
                with gateway.for_path(path) as client:
                    response = _post_hostile(client, path, declared)
                answers.append((path, declared, response, time.monotonic() - started))
    finally:
        sending.clear()
        sampler.join(5)
    after, peak = rss_mb(pid), max(samples)
    print(
        f"gateway RSS: {before:.0f} MB before, {after:.0f} MB after 8 hostile {HOSTILE_MB} MB bodies (peak {peak:.0f})"
    )
    assert after - before < MEMORY_BUDGET_MB, (before, after)
    assert peak - before < MEMORY_BUDGET_MB, (before, peak)
    for path, declared, response, seconds in answers:
        error = _error(response, 413, "json_too_large")
        assert "2 MB" in error["message"] and seconds < 20, (path, declared, seconds)
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def test_a_script_in_a_wav_never_runs_on_the_gateway_origin(gateway: Gateway, tmp_path: Path) -> None:
    """The browser's view: open the page (the origin that keeps the token), then the audio of a WAV named
    `x.html` whose bytes hold a page with a script. The script must not run; the page's own CSP is clean."""
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install Debian's `chromium chromium-driver`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    from tests.integration.test_web import CHROME_ARGS

    with gateway.client() as client:
        job = client.post("/v1/jobs", **upload("x.html", script_wav())).json()["id"]
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROME_ARGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads")})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        driver.get(f"{gateway.url}/")
        driver.execute_script("localStorage.setItem('spcs-whisper-token', 'secret')")
        assert driver.title == "spcs-whisper"
        driver.get(f"{gateway.url}/v1/jobs/{job}/audio")
        time.sleep(1)
        assert not driver.title.startswith("xss"), driver.title
        assert SCRIPT.decode() not in driver.page_source
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not [e for e in errors if "Content Security Policy" in e["message"]], errors
    finally:
        driver.quit()
