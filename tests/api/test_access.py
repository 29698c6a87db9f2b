"""Nobody reads what isn't theirs (issue 14), in process: the gateway app (SQLite store, both doors) with a
STAND-IN Ray app behind the real InferenceClient (an ASGI app, `misbehaving_inference`: the HTTP protocol of
service/inference, a fixed transcript, and, steered by a job's prompt, the failures a real Ray app has).

1. Two doors: the public port needs the API token for all but /healthz, /readyz and the web page, and never
   answers /functions/*; the service functions answer on their own port only, where every request names its user.
2. Admin rights come only from a header Snowflake sets: the role header counts on the functions port only, and a
   user or role header sent twice is refused.
3. Idempotency keys belong to their owner: no oracle of other users' keys, no squatting, no replay across owners.
4. Errors carry no stack traces or internal addresses; metric labels are bounded.

What needs a real process (raw sockets: stalled bodies, idle connections, oversized heads; a store fault
injected at start) stays in tests/integration/test_security_access.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.testclient import TestClient

from service.inference.client import InferenceClient
from tests.api.conftest import Gateway, gateway
from tests.store_load import write_stage

TOKEN = "s3cret-token"
KEY = {"x-api-key": TOKEN}
USER = "sf-context-current-user"
ROLE = "sf-context-current-role"
ALICE, BOB = {USER: "ALICE"}, {USER: "BOB"}
DEPLOYER = ADMIN_ROLE_ENV = "WHISPER_DEPLOYER"  # the admin role (SPCS_WHISPER_ADMIN_ROLE)
BATCH = "sf-external-function-query-batch-id"
INTERNAL = "10.9.8.7"  # stands for an address inside the cluster: no caller may ever see it


def misbehaving_inference() -> FastAPI:
    """STAND-IN for the Ray Serve app (not Whisper). A job's `prompt` (sent as a query parameter) steers it:
    `traceback`: Ray Serve's plain-text 500 (a traceback naming files and an internal URL); `actor-died`: an
    `inference_failed` event carrying an actor's repr with its node address; `garbage`: a progress event whose
    fraction is not a number (the gateway fails on it). Anything else: a transcript."""
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
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("access")
    stage = write_stage(root / "stage", 2)
    client = InferenceClient("http://ray/whisper", 30, transport=httpx.ASGITransport(misbehaving_inference()))
    with gateway(
        root / "data",
        client,
        api_token=TOKEN,
        stage_mounts={"AUDIO_FILES_STAGE": str(stage)},
        admin_role=DEPLOYER,
        max_attempts=1,
        retry_backoff_s=0.1,
    ) as running:
        yield running


@pytest.fixture
def public(gw: Gateway) -> Iterator[TestClient]:
    """A holder of the API token on the public port (as a user's request through SPCS ingress, with `headers`)."""
    yield gw.client("public", headers=KEY)


@pytest.fixture
def snowflake(gw: Gateway) -> Iterator[TestClient]:
    """Snowflake's service functions: the functions port, no token."""
    yield gw.client("functions")


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
def alices_job(gw: Gateway) -> str:
    """A finished job of ALICE's, with a transcript nobody else may read."""
    client = gw.client("public", headers=KEY)
    response = _submit(client, ALICE)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert _finished(client, job_id)["status"] == "succeeded"
    return job_id


def _status(client: httpx.Client, job_id: str, headers: Any) -> httpx.Response:
    return client.post("/functions/job_status", json={"data": [[0, job_id]]}, headers=headers)


# 1. Two doors -------------------------------------------------------------------------------------------------


def test_the_public_port_serves_no_service_function(gw: Gateway, alices_job: str) -> None:
    """Before: /functions/* skipped the token and, without a user header, saw every job: anyone who reached the
    port read Alice's transcript with TRANSCRIPTION_STATUS's route."""
    with gw.client("public") as anyone:
        for path in ("/functions/job_status", "/functions/submit", "/functions/transcribe", "/functions/drain"):
            response = anyone.post(path, json={"data": [[0, alices_job]]})
            assert response.status_code == 404, (path, response.text)
            assert "alice's secret" not in response.text
        assert anyone.get("/functions/transcribe", headers={BATCH: "b"}).status_code == 404
        with_token = anyone.post("/functions/job_status", json={"data": [[0, alices_job]]}, headers=KEY)
        assert with_token.status_code == 404 and "alice's secret" not in with_token.text


def test_the_public_port_needs_the_token_for_all_but_probes_and_the_page(gw: Gateway, alices_job: str) -> None:
    with gw.client("public") as anyone:
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


def test_the_functions_port_serves_service_functions_only(gw: Gateway, alices_job: str) -> None:
    with gw.client("functions") as snowflake:
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
def test_a_user_or_role_header_sent_twice_is_refused(gw: Gateway, alices_job: str, door: str) -> None:
    """Which of two values would be believed depends on who reads them (a proxy, Starlette's first, a list's
    last): neither is. Before, `Sf-Context-Current-User: BOB` then `ALICE` read as Bob on one layer, Alice on
    another."""
    twice_user = [(USER, "BOB"), (USER, "ALICE"), *KEY.items()]
    twice_role = [(USER, "BOB"), (ROLE, "ANALYST"), (ROLE, DEPLOYER), *KEY.items()]
    with gw.client(door) as client:
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
