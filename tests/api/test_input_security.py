"""Issue 14, no body or file can hurt the host, in process: the gateway app (SQLite store, both doors) behind
which no Ray Serve app answers (the real InferenceClient on an address where nothing listens: jobs stay queued).
What is under test is intake and serving.

- JSON bodies have their nesting checked before any parser recurses (400 `json_too_deep`); ordinary ones pass.
- Stored audio comes back as the audio type PyAV found, never as the client's file name (`x.html`), with
  `nosniff`, `attachment` and a sandboxing CSP; the web page itself runs under a strict CSP.
- Concurrent URL downloads (MAX_URL_DOWNLOADS) and long polls (MAX_LONG_POLLS) are bounded: 429 beyond.

What needs the real gateway process (its memory under a 50 MB hostile body, a browser opening its origin) stays
in tests/integration/test_security_inputs.py."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from service.api.routes_jobs import AUDIO_TYPES, audio_type
from service.api.routes_web import WEB_DIR
from service.audio import ALLOWED_FORMATS
from service.inference.client import InferenceClient
from tests.api.conftest import Gateway, gateway
from tests.harness import free_port
from tests.hostile import SECOND, Request, accepted_but_inert, nested_json, upload

LONG_POLLS = 2
INERT = accepted_but_inert()


JSON = {"content-type": "application/json"}
USER = {"sf-context-current-user": "ANALYST"}  # the functions port needs the caller Snowflake names


class Doors:
    """The gateway's two doors, as the process's test reached them by URL."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def client(self) -> httpx.Client:
        return self.gw.client("public")

    def for_path(self, path: str) -> httpx.Client:
        """A client of the door that answers `path` (service functions have their own)."""
        if path.startswith("/functions/"):
            return self.gw.client("functions", headers=USER)
        return self.client()


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    root = tmp_path_factory.mktemp("input-security")
    absent = InferenceClient(f"http://127.0.0.1:{free_port()}/absent", 30)  # no Ray app: jobs stay queued
    with gateway(
        root / "data",
        absent,
        max_long_polls=LONG_POLLS,
        max_url_downloads=1,
        url_allow_http=True,
        url_allowlist=["127.0.0.1"],
        drain_timeout_s=0,
    ) as running:
        yield Doors(running)


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


# --- 1. JSON bodies -----------------------------------------------------------------------------------------------


NESTED = {
    "/v1/jobs": nested_json(100_000),
    "/v1/batches": b'{"stage": "@S", "pattern": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "/functions/transcribe": b'{"data": [[0, ' + b"[" * 100_000 + b"]" * 100_000 + b"]]}",
    "/functions/job_status": b'{"data": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
}


@pytest.mark.parametrize("path", list(NESTED))
def test_deeply_nested_json_is_refused_before_it_is_parsed(doors: Doors, path: str) -> None:
    with doors.for_path(path) as client:
        started = time.monotonic()
        response = client.post(path, content=NESTED[path], headers=JSON)
        _error(response, 400, "json_too_deep")
        assert time.monotonic() - started < 5
        unclosed = client.post(path, content=b'{"data": ' + b"[" * 100_000, headers=JSON)
        _error(unclosed, 400, "json_too_deep")  # as deep as a parser would go before it found the end missing
        _error(client.post(path, content=b'{"data": [[0, "a"]', headers=JSON), 400, "invalid_json")
    assert doors.client().get("/healthz").status_code == 200


def test_ordinary_json_still_passes(doors: Doors) -> None:
    """What Snowflake sends (a batch of rows) and what clients send (a job) are far inside both limits."""
    rows = [[i, f"job_{i:05d}"] for i in range(1000)]
    with doors.for_path("/functions/") as client:
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
    doors: Doors, name: str, build: Callable[[], Request], media_type: str
) -> None:
    request = build()
    with doors.client() as client:
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


def test_the_web_page_runs_under_a_strict_content_security_policy(doors: Doors) -> None:
    with doors.client() as client:
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
    """A real HTTP server of audio sources (the gateway downloads them over the loopback)."""
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


def test_url_downloads_are_bounded(doors: Doors, media: str) -> None:
    """MAX_URL_DOWNLOADS=1: while one source trickles in, the next is refused at once (429, Retry-After)."""
    with doors.client() as client, doors.client() as other:
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


def test_long_polls_are_bounded(doors: Doors) -> None:
    """MAX_LONG_POLLS=2: a third `?wait=` while two are held gets 429 at once (not a quick 200, which would
    make a poll loop spin); plain reads still answer; once the two are done, a long poll waits again."""
    with doors.client() as client:
        job = client.post("/v1/jobs", **upload("q.wav", SECOND)).json()["id"]  # stays queued: no Ray app
        holders = [doors.client() for _ in range(LONG_POLLS)]
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
