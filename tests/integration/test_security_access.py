"""Nobody reads what isn't theirs (issue 14): the real gateway process (`spcs-whisper gateway`, SQLite store,
real HTTP and raw sockets), attacked from outside.

1. Two doors: the public port (SPCS's public endpoint) needs the API token for all but /healthz, /readyz and the
   web page, and never answers /functions/*; the service functions answer on their own port only (a non-public
   endpoint in SPCS), where every request must name its user.
2. Admin rights come only from a header Snowflake sets: the role header counts on the functions port only, and a
   user or role header sent twice is refused.
3. Idempotency keys belong to their owner: no oracle of other users' keys, no squatting, no replay across owners.
4. Errors carry no stack traces, internal addresses or store reprs.
5. Metric labels are bounded; a stalled body, an idle connection, a half-sent or oversized head are cut off.

The Ray app is a STAND-IN (`misbehaving_inference` below: the HTTP protocol of service/inference, a fixed
transcript, and, steered by a job's prompt, the failures a real Ray app has: a plain-text traceback, an actor's
repr in the stream, a malformed event). The store fault of the readiness test is a STAND-IN too (a
sitecustomize that makes the store's ping fail with an error naming internal paths and hosts).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from tests.harness import free_port, functions_url, start_gateway, stop_gateway, wait_ready
from tests.store_load import serving, write_stage

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
KEY = {"x-api-key": TOKEN}
USER = "sf-context-current-user"
ROLE = "sf-context-current-role"
ALICE, BOB = {USER: "ALICE"}, {USER: "BOB"}
DEPLOYER = "WHISPER_DEPLOYER"  # the admin role (SPCS_WHISPER_ADMIN_ROLE)
BATCH = "sf-external-function-query-batch-id"
INTERNAL = "10.9.8.7"  # stands for an address inside the cluster: no caller may ever see it
READ_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.5


def misbehaving_inference() -> FastAPI:
    """STAND-IN for the Ray Serve app (not Whisper). A job's `prompt` (sent as a query parameter) steers it:
    `traceback`: Ray Serve's plain-text 500 (a traceback naming files and an internal URL); `actor-died`: an
    `inference_failed` event carrying an actor's repr with its node address; `garbage`: a progress event whose
    fraction is not a number (the gateway fails on it). Anything else: a transcript after 0.2 s."""
    app = FastAPI()

    @app.get("/whisper/ready")
    async def ready() -> dict[str, Any]:
        return {"status": "ready", "engine": "stand-in", "model": "base", "multilingual": True}

    @app.post("/whisper/transcribe", response_model=None)
    async def transcribe(request: Request, prompt: str | None = None) -> PlainTextResponse | StreamingResponse:
        await request.body()
        if prompt == "traceback":
            trace = (
                "Traceback (most recent call last):\n"
                '  File "/home/ray/anaconda3/lib/python3.11/site-packages/ray/serve/_private/proxy.py", line 912\n'
                f"ConnectionError: http://{INTERNAL}:8000/whisper/transcribe: replica unreachable\n"
            )
            return PlainTextResponse(trace, status_code=500)

        async def events() -> AsyncIterator[str]:
            if prompt == "actor-died":
                message = f"RayActorError(actor_id=7f3a, name=Whisper#1, node_ip={INTERNAL}, pid=4242)"
                yield json.dumps({"event": "error", "code": "inference_failed", "message": message}) + "\n"
                return
            if prompt == "garbage":
                yield json.dumps({"event": "progress", "fraction": f"http://{INTERNAL}:8000/whisper"}) + "\n"
                return
            yield json.dumps({"event": "progress", "fraction": 0.5, "segments": []}) + "\n"
            transcript = {"text": "alice's secret", "language": "en", "duration": 1.0, "segments": []}
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stage(tmp_path_factory.mktemp("stage"), 2)


@pytest.fixture(scope="module")
def inference() -> Iterator[str]:
    with serving(misbehaving_inference(), free_port()) as url:
        yield f"{url}/whisper"


def _start(root: Path, inference: str, stage: Path, **env: str) -> tuple[str, Any]:
    url, process = start_gateway(
        root / "data",
        inference,
        root / "gateway.log",
        SPCS_WHISPER_API_TOKEN=TOKEN,
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"AUDIO_FILES_STAGE": str(stage)}),
        SPCS_WHISPER_ADMIN_ROLE=DEPLOYER,
        SPCS_WHISPER_MAX_ATTEMPTS="1",
        SPCS_WHISPER_RETRY_BACKOFF_S="0.1",
        **env,
    )
    return url, process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, inference: str, stage: Path) -> Iterator[tuple[str, str]]:
    """(public URL, service-function URL) of one gateway process."""
    url, process = _start(tmp_path_factory.mktemp("gateway"), inference, stage)
    try:
        wait_ready(url, 60)
        yield url, functions_url(url)
    finally:
        stop_gateway(process)


@pytest.fixture
def public(gateway: tuple[str, str]) -> Iterator[httpx.Client]:
    """A holder of the API token on the public port (as a user's request through SPCS ingress, with `headers`)."""
    with httpx.Client(base_url=gateway[0], timeout=30, headers=KEY) as client:
        yield client


@pytest.fixture
def snowflake(gateway: tuple[str, str]) -> Iterator[httpx.Client]:
    """Snowflake's service functions: the functions port, no token."""
    with httpx.Client(base_url=gateway[1], timeout=30) as client:
        yield client


def _submit(client: httpx.Client, headers: dict[str, str], **fields: Any) -> httpx.Response:
    body = {"source": "@AUDIO_FILES_STAGE/call_00000.wav", **fields}
    return client.post("/v1/jobs", json=body, headers=headers)


def _finished(client: httpx.Client, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job once finished, read by a token holder without a user (who sees every job)."""
    deadline = time.monotonic() + 30
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}, headers=headers or {}).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


@pytest.fixture(scope="module")
def alices_job(gateway: tuple[str, str]) -> str:
    """A finished job of ALICE's, with a transcript nobody else may read."""
    with httpx.Client(base_url=gateway[0], timeout=30, headers=KEY) as client:
        response = _submit(client, ALICE)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert _finished(client, job_id)["status"] == "succeeded"
    return job_id


def _status(client: httpx.Client, job_id: str, headers: Any) -> httpx.Response:
    return client.post("/functions/job_status", json={"data": [[0, job_id]]}, headers=headers)


# 1. Two doors -------------------------------------------------------------------------------------------------


def test_the_public_port_serves_no_service_function(gateway: tuple[str, str], alices_job: str) -> None:
    """Before: /functions/* skipped the token and, without a user header, saw every job: anyone who reached the
    port read Alice's transcript with TRANSCRIPTION_STATUS's route."""
    with httpx.Client(base_url=gateway[0], timeout=30) as anyone:
        for path in ("/functions/job_status", "/functions/submit", "/functions/transcribe", "/functions/drain"):
            response = anyone.post(path, json={"data": [[0, alices_job]]})
            assert response.status_code == 404, (path, response.text)
            assert "alice's secret" not in response.text
        assert anyone.get("/functions/transcribe", headers={BATCH: "b"}).status_code == 404
        with_token = anyone.post("/functions/job_status", json={"data": [[0, alices_job]]}, headers=KEY)
        assert with_token.status_code == 404 and "alice's secret" not in with_token.text


def test_the_public_port_needs_the_token_for_all_but_probes_and_the_page(
    gateway: tuple[str, str], alices_job: str
) -> None:
    with httpx.Client(base_url=gateway[0], timeout=30) as anyone:
        for path in ("/healthz", "/readyz", "/", "/web/app.js", "/web/style.css"):
            assert anyone.get(path).status_code == 200, path
        for method, path in [
            ("GET", "/v1/jobs"),
            ("GET", f"/v1/jobs/{alices_job}"),
            ("GET", f"/v1/jobs/{alices_job}/transcript"),
            ("GET", f"/v1/jobs/{alices_job}/audio"),
            ("DELETE", f"/v1/jobs/{alices_job}"),
            ("GET", "/v1/batches/batch_x"),
            ("POST", "/v1/audio/transcriptions"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/docs"),
            ("GET", "/web/index.html"),
        ]:
            response = anyone.request(method, path, headers=ALICE)  # naming a user is no credential
            assert response.status_code == 401, (method, path, response.status_code)
            assert "alice's secret" not in response.text


def test_the_functions_port_serves_service_functions_only(gateway: tuple[str, str], alices_job: str) -> None:
    with httpx.Client(base_url=gateway[1], timeout=30) as snowflake:
        for path in ("/v1/jobs", f"/v1/jobs/{alices_job}/transcript", "/metrics", "/healthz", "/", "/docs"):
            response = snowflake.get(path, headers=ALICE)
            assert response.status_code == 404, (path, response.status_code)
            assert "alice's secret" not in response.text


def test_a_status_read_must_name_its_user(snowflake: httpx.Client, alices_job: str) -> None:
    """Unscoped reads are refused: without Sf-Context-Current-User no row is answered, let alone Alice's."""
    for headers in ({}, {USER: ""}, {ROLE: DEPLOYER}):
        response = _status(snowflake, alices_job, headers)
        assert response.status_code == 400, (headers, response.text)
        assert response.json()["error"]["code"] == "missing_user" and "alice's secret" not in response.text
    rows = [[0, "@AUDIO_FILES_STAGE/call_00000.wav", "en", None]]
    assert snowflake.post("/functions/submit", json={"data": rows}).status_code == 400


def test_status_reads_are_scoped_to_their_user(snowflake: httpx.Client, alices_job: str) -> None:
    mine = _status(snowflake, alices_job, ALICE).json()["data"][0][1]
    assert mine["status"] == "succeeded" and mine["text"] == "alice's secret"
    theirs = _status(snowflake, alices_job, BOB).json()["data"][0][1]
    assert theirs["error"]["code"] == "job_not_found" and "text" not in theirs


# 2. Admin rights only from a header Snowflake sets -------------------------------------------------------------


def test_a_role_header_through_the_public_port_grants_nothing(public: httpx.Client, alices_job: str) -> None:
    """SPCS ingress passes the user only: a role header on the public port is the client's own claim. Before,
    Bob became an admin by sending the admin role himself."""
    claimed = {**BOB, ROLE: DEPLOYER}
    assert public.get(f"/v1/jobs/{alices_job}", headers=claimed).status_code == 404
    assert public.get(f"/v1/jobs/{alices_job}/transcript", headers=claimed).status_code == 404
    listed = public.get("/v1/jobs", params={"limit": 200}, headers=claimed).json()["jobs"]
    assert alices_job not in [j["id"] for j in listed]
    assert public.delete(f"/v1/jobs/{alices_job}", headers=claimed).status_code == 404


def test_the_admin_role_counts_where_snowflake_sends_it(snowflake: httpx.Client, alices_job: str) -> None:
    """On the functions port the role comes from CONTEXT_HEADERS (Snowflake's own): the admin role sees all."""
    value = _status(snowflake, alices_job, {**BOB, ROLE: DEPLOYER.lower()}).json()["data"][0][1]
    assert value["status"] == "succeeded"
    drained = snowflake.post("/functions/drain", json={"data": [[0, 0]]}, headers={**BOB, BATCH: "d-1"})
    assert drained.json()["data"][0][1]["error"]["code"] == "forbidden"


@pytest.mark.parametrize("door", ["public", "functions"])
def test_a_user_or_role_header_sent_twice_is_refused(gateway: tuple[str, str], alices_job: str, door: str) -> None:
    """Which of two values would be believed depends on who reads them (a proxy, Starlette's first, a list's
    last): neither is. Before, `Sf-Context-Current-User: BOB` then `ALICE` read as Bob on one layer, Alice on
    another."""
    url = gateway[0] if door == "public" else gateway[1]
    twice_user = [(USER, "BOB"), (USER, "ALICE"), *KEY.items()]
    twice_role = [(USER, "BOB"), (ROLE, "ANALYST"), (ROLE, DEPLOYER), *KEY.items()]
    with httpx.Client(base_url=url, timeout=30) as client:
        for headers in (twice_user, twice_role):
            if door == "public":
                response = client.get(f"/v1/jobs/{alices_job}", headers=headers)
            else:
                response = client.post("/functions/job_status", json={"data": [[0, alices_job]]}, headers=headers)
            if door == "public" and headers is twice_role:  # the public port ignores roles altogether
                assert response.status_code == 404, response.text
                continue
            assert response.status_code == 400, (headers, response.text)
            assert response.json()["error"]["code"] == "ambiguous_caller" and "alice's secret" not in response.text


# 3. Idempotency keys belong to their owner ---------------------------------------------------------------------


def test_idempotency_keys_are_scoped_to_their_owner(public: httpx.Client) -> None:
    """Before, the key was global: Bob's submit with Alice's key answered 409 (her key exists: an oracle; and
    Bob could take a key before Alice did), and a caller naming no user was handed Alice's job."""
    key = {"idempotency_key": "monthly-report"}
    alice = _submit(public, ALICE, **key)
    assert alice.status_code == 202, alice.text
    bob = _submit(public, BOB, **key)
    assert bob.status_code == 202, bob.text  # his own job: nothing said about Alice's
    assert bob.json()["owner"] == "BOB" and bob.json()["id"] != alice.json()["id"]
    nobody = _submit(public, {}, **key)  # a token holder naming no user: not Alice's job either
    assert nobody.status_code == 202 and nobody.json()["id"] not in (alice.json()["id"], bob.json()["id"])
    assert nobody.json()["owner"] is None
    again = _submit(public, ALICE, **key)
    assert again.status_code == 200 and again.json()["id"] == alice.json()["id"]  # her retry: her job
    assert _submit(public, BOB, **key).json()["id"] == bob.json()["id"]
    assert _submit(public, {}, **key).json()["id"] == nobody.json()["id"]


def test_a_guessed_batch_id_yields_no_other_users_job(snowflake: httpx.Client) -> None:
    """Service-function rows are keyed by Snowflake's batch id: Bob sending Alice's batch id gets jobs of his
    own (before: 409 idempotency_key_in_use, i.e. "Alice ran this batch")."""
    rows = [[0, "@AUDIO_FILES_STAGE/call_00001.wav", "en", None]]
    alice = snowflake.post("/functions/submit", json={"data": rows}, headers={**ALICE, BATCH: "batch-42"}).json()
    bob = snowflake.post("/functions/submit", json={"data": rows}, headers={**BOB, BATCH: "batch-42"}).json()
    alice_job, bob_job = alice["data"][0][1], bob["data"][0][1]
    assert "job_id" in alice_job and "job_id" in bob_job, (alice, bob)
    assert alice_job["job_id"] != bob_job["job_id"]
    retried = snowflake.post("/functions/submit", json={"data": rows}, headers={**ALICE, BATCH: "batch-42"}).json()
    assert retried["data"][0][1]["job_id"] == alice_job["job_id"]  # Snowflake's retry of Alice's batch: hers


# 4. Errors carry no internals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steer", ["traceback", "actor-died", "garbage"])
def test_job_errors_carry_no_traces_or_internal_addresses(public: httpx.Client, steer: str) -> None:
    """Before: the Ray app's plain-text 500 (a traceback), an actor's repr and the gateway's own repr(exc) went
    into the job's error message, which every caller who may read the job reads."""
    response = _submit(public, ALICE, prompt=steer)
    assert response.status_code == 202, response.text
    job = _finished(public, response.json()["id"], ALICE)
    assert job["status"] == "failed", job
    error = job["error"]
    text = json.dumps(job)
    for leak in (INTERNAL, "Traceback", 'File "', "RayActorError", "ValueError", "/home/ray", "http://"):
        assert leak not in text, (leak, error)
    if steer == "garbage":  # the gateway's own failure: a generic message that names the job (the log has more)
        assert error["code"] == "internal_error" and job["id"] in error["message"]
    else:
        assert error["code"] == "inference_failed" and error["message"]


def test_readiness_names_no_store_internals(tmp_path: Path, inference: str, stage: Path) -> None:
    """A store that fails its ping with an error naming paths and hosts (STAND-IN fault, injected through a
    sitecustomize): /readyz, open to anyone, says `unavailable` and the request id; the log has the rest."""
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(
        "# STAND-IN fault (tests/integration/test_security_access.py): the store's ping fails.\n"
        "import os\n"
        "if os.environ.get('STANDIN_STORE_FAULT'):\n"
        "    import sqlite3\n"
        "    from service.storage.sqlite import SQLiteStore\n"
        "    async def ping(self):\n"
        "        raise sqlite3.OperationalError(os.environ['STANDIN_STORE_FAULT'])\n"
        "    SQLiteStore.ping = ping\n"
    )
    secret = f"disk I/O error on /data/jobs.sqlite3 (nfs://{INTERNAL}/volumes/whisper)"
    pythonpath = os.pathsep.join([str(fault), str(ROOT), os.environ.get("PYTHONPATH", "")])
    url, process = _start(tmp_path, inference, stage, PYTHONPATH=pythonpath, STANDIN_STORE_FAULT=secret)
    try:
        deadline = time.monotonic() + 30
        while True:  # the dispatcher has seen the stand-in: what is left is the store
            response = httpx.get(f"{url}/readyz", headers={"x-request-id": "probe-1"}, timeout=10)
            if "inference: ok" in response.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "not_ready" and error["request_id"] == "probe-1"
        assert "store: unavailable" in error["message"], error
        for leak in (INTERNAL, "/data/jobs.sqlite3", "OperationalError", "disk I/O"):
            assert leak not in response.text, leak
    finally:
        stop_gateway(process)
    assert INTERNAL in (tmp_path / "gateway.log").read_text()  # the operator still learns what happened


# 5. Bounded metric labels; nothing holds a connection for ever -------------------------------------------------


def test_metric_labels_are_bounded(public: httpx.Client) -> None:
    """Before, the method label took whatever method the client sent (PROPFIND, PURGE, ...: each a new time
    series); with h11 any token is a method, so the label must be one of the standard methods or OTHER."""
    for method in ("PROPFIND", "PURGE", "XYZZY-7f3a9c", "get"):
        public.request(method, "/v1/jobs")
    public.get("/v1/jobs/job_0123456789abcdef")
    public.get("/no/such/path/job_0123456789abcdef")
    text = public.get("/metrics").text
    series = [line for line in text.splitlines() if line.startswith("spcs_whisper_http_request_seconds_count")]
    methods = {line.split('method="', 1)[1].split('"', 1)[0] for line in series}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER"}
    assert "OTHER" in methods, methods
    assert 'route="/v1/jobs/{job_id}"' in text
    assert "0123456789abcdef" not in text and "/no/such/path" not in text


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, inference: str, stage: Path) -> Iterator[int]:
    """A gateway with short read timeouts, for raw-socket clients only; yields its public port."""
    url, process = _start(
        tmp_path_factory.mktemp("strict"),
        inference,
        stage,
        SPCS_WHISPER_REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        SPCS_WHISPER_KEEP_ALIVE_S=str(KEEP_ALIVE_S),
    )
    try:
        yield urlsplit(url).port or 0
    finally:
        stop_gateway(process)


def _raw(port: int, data: bytes, wait: float) -> tuple[bytes, float | None]:
    """Send `data` and stop sending; read until the gateway closes the connection: (what came back, seconds
    until it closed), or seconds None when it was still open after `wait`."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        begun, got = time.monotonic(), b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            return got, None
        except ConnectionResetError:
            pass
        return got, time.monotonic() - begun


def test_a_stalled_body_is_cut_off(strict: int) -> None:
    """Headers, a first piece of the body, then nothing: 408 after REQUEST_READ_TIMEOUT_S, connection closed.
    Before, uvicorn waited for the rest for ever, and so did the request's handler."""
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"X-Api-Key: {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    )
    got, closed = _raw(strict, head.encode() + b'{"source": "@AUDIO', wait=READ_TIMEOUT_S + 10)
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b'"request_timeout"' in got and closed is not None and closed < READ_TIMEOUT_S + 5


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow"])
def test_an_idle_connection_or_a_half_sent_head_is_closed(strict: int, sent: bytes) -> None:
    """Before, uvicorn's keep-alive timer started only after a first response: a connection that sent nothing,
    or half a request head (slowloris), stayed open for ever."""
    got, closed = _raw(strict, sent, wait=KEEP_ALIVE_S + 10)
    assert closed is not None and closed < KEEP_ALIVE_S + 5 and got == b"", got


def test_an_oversized_request_head_is_refused(strict: int) -> None:
    """Headers past MAX_HEADER_KB (32 KiB): refused before the app sees them. A head that arrived whole gets 431;
    one still arriving is cut off by h11's buffer limit (400, connection closed) instead of being buffered on."""
    filler = "a" * 40_000
    whole = f"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Filler: {filler}\r\n\r\n"
    got, _ = _raw(strict, whole.encode(), wait=10)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert b'"headers_too_large"' in got
    unfinished = f"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Filler: {filler}"
    got, closed = _raw(strict, unfinished.encode(), wait=10)
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    assert closed is not None
