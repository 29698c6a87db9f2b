"""Issue 14, no body or file can hurt the host: attacks on the real gateway process (`spcs-whisper gateway`,
SQLite store, real HTTP), each of which worked before the fix.

- JSON bodies are capped while they stream (MAX_JSON_MB, 413 `json_too_large`) and their nesting is checked
  before any parser recurses (400 `json_too_deep`); a 50 MB hostile body leaves the gateway's memory alone.
- Stored audio comes back as the audio type PyAV found, never as the client's file name (`x.html`), with
  `nosniff`, `attachment` and a sandboxing CSP; the web page itself runs under a strict CSP.
- Concurrent URL downloads (MAX_URL_DOWNLOADS) and long polls (MAX_LONG_POLLS) are bounded: 429 beyond.

The gateway has no Ray Serve app behind it (jobs stay queued): what is under test is intake and serving.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import Popen

import httpx
import pytest

from service.api.routes_jobs import AUDIO_TYPES, audio_type
from service.api.routes_web import WEB_DIR
from service.audio import ALLOWED_FORMATS
from tests.harness import free_port, rss_mb, start_gateway, stop_gateway
from tests.hostile import SCRIPT, SECOND, Request, accepted_but_inert, nested_json, script_wav, upload

pytestmark = pytest.mark.integration

LONG_POLLS = 2
HOSTILE_MB = 50
MEMORY_BUDGET_MB = 100
INERT = accepted_but_inert()


JSON = {"content-type": "application/json"}
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
        SPCS_WHISPER_MAX_LONG_POLLS=str(LONG_POLLS),
        SPCS_WHISPER_MAX_URL_DOWNLOADS="1",
        SPCS_WHISPER_URL_ALLOW_HTTP="true",
        SPCS_WHISPER_URL_ALLOWLIST='["127.0.0.1"]',
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


NESTED = {
    "/v1/jobs": nested_json(100_000),
    "/v1/batches": b'{"stage": "@S", "pattern": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "/functions/transcribe": b'{"data": [[0, ' + b"[" * 100_000 + b"]" * 100_000 + b"]]}",
    "/functions/job_status": b'{"data": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
}


@pytest.mark.parametrize("path", list(NESTED))
def test_deeply_nested_json_is_refused_before_it_is_parsed(gateway: Gateway, path: str) -> None:
    with gateway.for_path(path) as client:
        started = time.monotonic()
        response = client.post(path, content=NESTED[path], headers=JSON)
        _error(response, 400, "json_too_deep")
        assert time.monotonic() - started < 5
        unclosed = client.post(path, content=b'{"data": ' + b"[" * 100_000, headers=JSON)
        _error(unclosed, 400, "json_too_deep")  # as deep as a parser would go before it found the end missing
        _error(client.post(path, content=b'{"data": [[0, "a"]', headers=JSON), 400, "invalid_json")
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_ordinary_json_still_passes(gateway: Gateway) -> None:
    """What Snowflake sends (a batch of rows) and what clients send (a job) are far inside both limits."""
    rows = [[i, f"job_{i:05d}"] for i in range(1000)]
    with gateway.for_path("/functions/") as client:
        response = client.post("/functions/job_status", json={"data": rows})
        assert response.status_code == 200, response.text[:300]
        assert len(response.json()["data"]) == 1000
        # Brackets, quotes and backslashes inside strings are text, not nesting.
        tricky = ['[[[[{{{{ \\" ]]' * 20 + "[" * 100, "\\", '\\"[', "]]]]}}"]
        response = client.post("/functions/job_status", json={"data": [[i, t] for i, t in enumerate(tricky)]})
        assert response.status_code == 200, response.text[:300]
        assert [v["error"]["code"] for _, v in response.json()["data"]] == ["job_not_found"] * len(tricky)


# --- 2. stored audio is served as audio --------------------------------------------------------------------------


def _base_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def _assert_inert(response: httpx.Response, media_type: str) -> None:
    assert _base_type(response) == media_type, response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment"), disposition
    assert not re.search(r"\.(html?|svg|js|xml)\b", disposition), disposition


@pytest.mark.parametrize(("name", "build", "media_type"), INERT, ids=[case[0] for case in INERT])
def test_stored_audio_is_served_as_the_audio_the_probe_found(
    gateway: Gateway, name: str, build: Callable[[], Request], media_type: str
) -> None:
    request = build()
    with gateway.client() as client:
        created = client.post("/v1/jobs", **request)
        assert created.status_code == 202, created.text
        audio = client.get(f"/v1/jobs/{created.json()['id']}/audio")
        assert audio.status_code == 200
        _assert_inert(audio, media_type)
        assert audio.content == request["files"]["file"][1]
        part = client.get(f"/v1/jobs/{created.json()['id']}/audio", headers={"range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100  # players seek with Range requests
        _assert_inert(part, media_type)


def test_every_readable_container_has_an_audio_type() -> None:
    for demuxer in ALLOWED_FORMATS.split(","):
        assert any(demuxer in name.split(",") for name in AUDIO_TYPES), demuxer
    for name, (default, _, others) in AUDIO_TYPES.items():
        assert all(t.split("/")[0] in ("audio", "video") for t in (default, *others)), name
    assert audio_type(None, "x.html") == ("application/octet-stream", "bin")
    assert audio_type("wav", "x.html") == ("audio/wav", "wav")
    assert audio_type("mov,mp4,m4a,3gp,3g2,mj2", "talk.m4a")[0] == "audio/mp4"


def test_the_web_page_runs_under_a_strict_content_security_policy(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        page = client.get("/")
        assets = [client.get(f"/web/{name}") for name in ("app.js", "style.css")]
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert all(a.headers["x-content-type-options"] == "nosniff" for a in assets)
    html = (WEB_DIR / "index.html").read_text()  # what the policy forbids, the page must not need
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "inline style or handler"


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


# --- 3. bounds: URL downloads and long polls ----------------------------------------------------------------------


class _Media(BaseHTTPRequestHandler):
    """`/slow.wav` sends half of a WAV, then waits for `release`; `/fast.wav` all of it at once."""

    requested = threading.Event()
    release = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "audio/wav")
        self.send_header("content-length", str(len(SECOND)))
        self.end_headers()
        if self.path == "/slow.wav":
            self.wfile.write(SECOND[:1000])
            self.wfile.flush()
            type(self).requested.set()
            type(self).release.wait(30)
            self.wfile.write(SECOND[1000:])
        else:
            self.wfile.write(SECOND)


@pytest.fixture
def media() -> Iterator[str]:
    _Media.requested.clear()
    _Media.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Media)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Media.release.set()
    server.shutdown()


def _in_background(fn: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def test_url_downloads_are_bounded(gateway: Gateway, media: str) -> None:
    """MAX_URL_DOWNLOADS=1: while one source trickles in, the next is refused at once (429, Retry-After)."""
    with gateway.client() as client, gateway.client() as other:
        slow, done = _in_background(lambda: other.post("/v1/jobs", json={"source": f"{media}/slow.wav"}))
        assert _Media.requested.wait(10), "the gateway never asked for the slow source"
        started = time.monotonic()
        refused = client.post("/v1/jobs", json={"source": f"{media}/fast.wav"})
        assert time.monotonic() - started < 5
        _error(refused, 429, "too_many_downloads")
        assert int(refused.headers["retry-after"]) > 0
        _Media.release.set()
        slow.join(30)
        assert done and done[0].status_code == 202, done and done[0].text
        again = client.post("/v1/jobs", json={"source": f"{media}/fast.wav"})  # the slot was given back
        assert again.status_code == 202, again.text


def test_long_polls_are_bounded(gateway: Gateway) -> None:
    """MAX_LONG_POLLS=2: a third `?wait=` while two are held gets 429 at once (not a quick 200, which would
    make a poll loop spin); plain reads still answer; once the two are done, a long poll waits again."""
    with gateway.client() as client:
        job = client.post("/v1/jobs", **upload("q.wav", SECOND)).json()["id"]  # stays queued: no Ray app
        holders = [gateway.client() for _ in range(LONG_POLLS)]
        try:
            threads = [
                _in_background(lambda c=c: c.get(f"/v1/jobs/{job}", params={"wait": 4}))  # type: ignore[misc]
                for c in holders
            ]
            time.sleep(1.0)  # both are held by now
            started = time.monotonic()
            refused = client.get(f"/v1/jobs/{job}", params={"wait": 4})
            assert time.monotonic() - started < 1.5
            error = _error(refused, 429, "too_many_waiters")
            assert int(refused.headers["retry-after"]) > 0 and "MAX_LONG_POLLS" in error["message"]
            plain = client.get(f"/v1/jobs/{job}")
            assert plain.status_code == 200 and plain.json()["status"] == "queued"
            for thread, out in threads:
                thread.join(10)
                assert out and out[0].status_code == 200 and out[0].json()["status"] == "queued"
        finally:
            for c in holders:
                c.close()
        started = time.monotonic()
        waited = client.get(f"/v1/jobs/{job}", params={"wait": 0.5})
        assert waited.status_code == 200 and time.monotonic() - started >= 0.5  # a slot is free again
