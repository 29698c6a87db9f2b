"""The OpenAI-compatible routes on a job longer than a client's (or SPCS ingress's) idle timeout.

SPCS ingress closes a connection idle for 90 s; here the same race is run at a small scale: the real gateway
(uvicorn, real HTTP) with a keep-alive every 0.5 s, jobs of 4 s, and clients whose read timeout is 2 s. The
inference side is a STAND-IN for the Ray Serve app (same HTTP protocol, not Whisper): what is under test is
the connection, not the transcript. The job's `prompt` steers the stand-in: `seconds=4` answers after 4 s,
`fail=2` fails the job after 2 s; `fresh` adds a nonce, as the same upload with the same options from the same
caller within the hour would otherwise find the job of the test before (the implicit idempotency key that makes
SDK retries safe).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest
import srt
import webvtt
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from service.api.app import create_app
from service.config import GatewaySettings, Settings
from tests.harness import wait_ready
from tests.integration.helpers import DATA
from tests.store_load import serving, standin_app

AUDIO = DATA / "en_jfk.m4a"  # a real file: the gateway probes uploads before it stores them
KEEPALIVE_S, JOB_S, READ_TIMEOUT_S = 0.5, 4.0, 2.0
SEGMENTS = [
    (0.0, 1.5, "Ask not what your country can do for you,"),
    (1.5, 3.0, "ask what you can do for your country."),
]
TEXT = " ".join(text for _, _, text in SEGMENTS)
FORMATS = ["json", "verbose_json", "text", "srt", "vtt"]
FORMATS_MEDIA = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def standin_inference() -> FastAPI:
    """STAND-IN for the Ray Serve app (not Whisper): `/ready`, and `/transcribe` answering a fixed two-segment
    transcript after `seconds=N` of progress events, or an error event after `fail=N` (read from the prompt)."""
    app = standin_app()

    @app.post("/whisper/transcribe")
    async def transcribe(request: Request, prompt: str = "") -> StreamingResponse:
        async for _ in request.stream():
            pass
        steer = dict(part.split("=", 1) for part in prompt.split() if "=" in part)
        seconds = float(steer.get("fail", steer.get("seconds", 0)))
        segments = [{"start": start, "end": end, "text": " " + text} for start, end, text in SEGMENTS]
        transcript = {"text": TEXT, "language": "en", "duration": 3.0, "segments": segments}

        async def events() -> AsyncIterator[str]:
            steps = max(1, int(seconds / 0.1))
            for step in range(steps):
                yield json.dumps({"event": "progress", "fraction": step / steps, "segments": []}) + "\n"
                await asyncio.sleep(seconds / steps)
            if "fail" in steer:
                yield json.dumps({"event": "error", "code": "corrupt_audio", "message": "stand-in: bad audio"}) + "\n"
            else:
                yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """`gateway(keepalive_s, max_wait_s)`: the URL of a real gateway with those settings (started once) on the
    SQLite store, against the stand-in inference app."""
    with ExitStack() as stack:
        inference = stack.enter_context(serving(standin_inference()))
        started: dict[tuple[float, float], str] = {}

        def start(keepalive_s: float = KEEPALIVE_S, max_wait_s: float = 60.0) -> str:
            if (keepalive_s, max_wait_s) not in started:
                settings = Settings(
                    store="sqlite",
                    translate_method="whisper",
                    data_dir=tmp_path_factory.mktemp("gateway"),
                    serve_url=f"{inference}/whisper",
                    max_attempts=1,
                    drain_timeout_s=0,
                    openai_keepalive_s=keepalive_s,
                    openai_max_wait_s=max_wait_s,
                )
                url = stack.enter_context(serving(create_app(settings)))
                wait_ready(url, 30)
                started[keepalive_s, max_wait_s] = url
            return started[keepalive_s, max_wait_s]

        yield start


def openai_client(url: str) -> openai.OpenAI:
    """The official client with a read timeout far below the job's length, and no retries."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=READ_TIMEOUT_S, max_retries=0)


def fresh(prompt: str) -> str:
    """The stand-in's steering words and a nonce: a request of its own, never a replay of an earlier one."""
    return f"{prompt} run={uuid.uuid4().hex}"


def post(http: httpx.Client, fmt: str, prompt: str, **headers: str) -> tuple[httpx.Response, bytes, list[float]]:
    """POST /v1/audio/transcriptions, reading the body as it arrives: (response, body, gaps between arrivals)."""
    fields = {"model": "whisper-1", "response_format": fmt, "prompt": fresh(prompt)}
    with AUDIO.open("rb") as fh:
        begun = time.monotonic()
        with http.stream(
            "POST", "/v1/audio/transcriptions", files={"file": (AUDIO.name, fh)}, data=fields, headers=headers
        ) as response:
            arrivals, body = [begun, time.monotonic()], b""
            for chunk in response.iter_raw():
                arrivals.append(time.monotonic())
                body += chunk
    return response, body, [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]


def check_transcript(fmt: str, result: Any) -> None:
    """`result` (a dict for the json formats, else text) parses as `fmt` and holds the stand-in's transcript."""
    if fmt in ("json", "verbose_json"):
        assert result["text"] == TEXT
        if fmt == "verbose_json":
            assert result["language"] == "english" and result["duration"] == 3.0
            assert [(s["start"], s["end"], s["text"].strip()) for s in result["segments"]] == SEGMENTS
    elif fmt == "text":
        assert result.strip() == TEXT
    elif fmt == "srt":
        cues = list(srt.parse(result))
        assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == SEGMENTS
    else:
        assert result.startswith("WEBVTT\n")
        cues = [(seconds(c.start), seconds(c.end), c.text) for c in webvtt.from_string(result)]
        assert cues == SEGMENTS


def seconds(timestamp: str) -> float:
    hours, minutes, secs = timestamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(secs)


def parsed(fmt: str, body: bytes) -> Any:
    """The body as JSON for the json formats, else as text."""
    return json.loads(body) if fmt in ("json", "verbose_json") else body.decode()


def error_in(fmt: str, body: bytes) -> dict[str, Any]:
    """The error object at the end of a body whose job ended badly after the 200 was sent."""
    text = body.decode()
    if fmt in ("json", "verbose_json"):
        return json.loads(text)["error"]
    if fmt == "vtt":
        assert text.startswith("WEBVTT\n") and list(webvtt.from_string(text)) == []  # valid WebVTT, no cues
        note = [line for line in text.splitlines() if line.startswith("NOTE ")]
        assert len(note) == 1
        return json.loads(note[0].removeprefix("NOTE "))["error"]
    assert text.endswith("\n") and not text.strip().count("\n")  # blank lines, then one line
    return json.loads(text)["error"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_openai_client_gets_a_long_job_over_one_connection(gateway: Callable[..., str], fmt: str) -> None:
    """The official client, a 2 s read timeout and no retries, on a 4 s job: the whole transcript arrives."""
    client = openai_client(gateway())
    begun = time.monotonic()
    with AUDIO.open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format=fmt, prompt=fresh(f"seconds={JOB_S}")
        )
    assert time.monotonic() - begun >= JOB_S > READ_TIMEOUT_S
    check_transcript(fmt, result if isinstance(result, str) else result.model_dump())


@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_flow_while_the_job_runs(gateway: Callable[..., str], fmt: str) -> None:
    """httpx sees the 200 early, then no gap near its read timeout, then a body that parses as `fmt`."""
    with httpx.Client(base_url=gateway(), timeout=httpx.Timeout(READ_TIMEOUT_S)) as http:
        response, body, gaps = post(http, fmt, f"seconds={JOB_S}")
        assert response.status_code == 200, body
        assert response.headers["content-type"] == FORMATS_MEDIA[fmt]
        assert sum(gaps) >= JOB_S and max(gaps) < READ_TIMEOUT_S, gaps
        assert len(gaps) > JOB_S / KEEPALIVE_S / 2  # keep-alives, not one late answer
        assert body.startswith(b"WEBVTT\n\n" if fmt == "vtt" else b"\n")
        check_transcript(fmt, parsed(fmt, body))
        job = http.get(f"/v1/jobs/{response.headers['x-job-id']}").json()
        assert job["status"] == "succeeded" and job["attempts"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_job_failing_after_the_headers_ends_the_body_with_an_error(gateway: Callable[..., str], fmt: str) -> None:
    with httpx.Client(base_url=gateway(), timeout=httpx.Timeout(READ_TIMEOUT_S)) as http:
        response, body, _ = post(http, fmt, "fail=2")
    assert response.status_code == 200  # sent before the job failed; the body says what happened
    error = error_in(fmt, body)
    # a bad file: 400 as OpenAI answers it (the service's own routes say 422), the service's code kept
    assert error["code"] == "corrupt_audio" and error["status"] == 400 and error["type"] == "invalid_request_error"
    assert error["message"] == "stand-in: bad audio" and error["job_id"] == response.headers["x-job-id"]


def test_the_openai_client_sees_the_error_object(gateway: Callable[..., str]) -> None:
    client = openai_client(gateway())
    with AUDIO.open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh, prompt=fresh("fail=2"))
    assert result.text is None and result.error["code"] == "corrupt_audio"  # type: ignore[attr-defined]


def test_quick_jobs_answer_as_before(gateway: Callable[..., str]) -> None:
    """Before the first keep-alive nothing is streamed: exact bodies, and errors keep their HTTP status."""
    url = gateway(keepalive_s=10.0)
    with httpx.Client(base_url=url, timeout=30) as http:
        response, body, _ = post(http, "json", "seconds=0")
        assert response.status_code == 200 and response.headers["content-length"] == str(len(body))
        assert json.loads(body) == {"text": TEXT, "usage": {"type": "duration", "seconds": 3}}
        assert body.startswith(b"{")
        response, body, _ = post(http, "vtt", "seconds=0")
        assert body.startswith(b"WEBVTT\n\n0")
    with AUDIO.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).audio.transcriptions.create(
            model="whisper-1", file=fh, prompt=fresh("fail=0")
        )
    assert err.value.code == "corrupt_audio"


def test_past_the_longest_wait_the_body_names_the_job(gateway: Callable[..., str]) -> None:
    """Headers sent, job still running at `openai_max_wait_s`: the body links to the job, which goes on."""
    with httpx.Client(base_url=gateway(keepalive_s=KEEPALIVE_S, max_wait_s=1.5), timeout=READ_TIMEOUT_S) as http:
        response, body, _ = post(http, "json", f"seconds={JOB_S}")
        assert response.status_code == 200
        error = json.loads(body)["error"]
        job_id = response.headers["x-job-id"]
        assert error["code"] == "job_still_running" and error["links"]["job"] == f"/v1/jobs/{job_id}"
        job = http.get(error["links"]["job"], params={"wait": 10}, timeout=15).json()
        assert job["status"] == "succeeded"
        assert http.get(error["links"]["transcript"]).json()["text"] == TEXT


def test_without_keepalive_the_longest_wait_answers_202_with_the_job(gateway: Callable[..., str]) -> None:
    with httpx.Client(base_url=gateway(keepalive_s=0, max_wait_s=1.0), timeout=READ_TIMEOUT_S) as http:
        response, body, _ = post(http, "json", f"seconds={JOB_S}")
        assert response.status_code == 202
        job = json.loads(body)
        assert response.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
        assert job["status"] in ("queued", "running")
        assert http.get(response.headers["location"], params={"wait": 10}, timeout=15).json()["status"] == "succeeded"


def test_a_client_that_leaves_loses_nothing_and_its_retry_adds_no_job(gateway: Callable[..., str]) -> None:
    """The first connection is dropped mid-wait; the job runs on (an explicit Idempotency-Key says the client
    will come back: no cancellation), and a retry with the same key gets that job's transcript instead of a
    second job."""
    url, key = gateway(), "keepalive-retry-1"
    fields = {"model": "whisper-1", "prompt": "seconds=3"}
    with httpx.Client(base_url=url, timeout=READ_TIMEOUT_S) as http, AUDIO.open("rb") as fh:
        files = {"file": (AUDIO.name, fh)}
        with http.stream(
            "POST", "/v1/audio/transcriptions", files=files, data=fields, headers={"idempotency-key": key}
        ) as response:
            assert response.status_code == 200
            next(response.iter_raw())  # a keep-alive arrived; now go away
            first = response.headers["x-job-id"]
    client = openai_client(url)
    with AUDIO.open("rb") as fh:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=fh, prompt="seconds=3", extra_headers={"Idempotency-Key": key}
        )
    assert raw.headers["x-job-id"] == first and raw.headers["idempotent-replayed"] == "true"
    assert raw.parse().text == TEXT
    with httpx.Client(base_url=url) as http:
        jobs = [j for j in http.get("/v1/jobs", params={"limit": 200}).json()["jobs"] if j["idempotency_key"] == key]
    assert [(j["id"], j["status"], j["attempts"]) for j in jobs] == [(first, "succeeded", 1)]


def test_the_keepalive_setting_stays_under_the_ingress_idle_timeout() -> None:
    assert GatewaySettings.model_fields["openai_keepalive_s"].default < 90
    with pytest.raises(ValueError):
        Settings(openai_keepalive_s=90)
