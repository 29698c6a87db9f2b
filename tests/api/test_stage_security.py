"""Issue 14, stages: the gateway must not be a confused deputy for the stages its service role can read, and a
batch pattern must not be able to freeze it. Attacks on the gateway app in process (SQLite store, both doors as
TestClients).

The Ray app is the FAKE inference (tests/fakes.py: a fixed transcript, "stand-in"), because what is under test
is which stages the gateway agrees to read and how it matches patterns, not Whisper. Folders stand for mounted
stages: `AUDIO_FILES_STAGE` (the analysts' stage), `HR_RECORDINGS` (a stage the service can read but that only
the HR_ANALYST role may name) and `BULK_STAGE` (thousands of files with 40-letter names).

The gateway has two doors (service/api/errors.py): the public port, which never believes a role header, and the
functions port, where Snowflake's service functions send CURRENT_ROLE; the tests use both. A "restart" is the
app's lifespan ending and another app starting on the same data directory with other settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Gateway, gateway
from tests.fakes import FakeInference
from tests.hostile import HOSTILE_PATTERN, letters_name
from tests.store_load import write_stage

BULK_FILES = 5000
ALLOWLIST = {"*": ["AUDIO_FILES_STAGE", "BULK_STAGE"], "HR_ANALYST": ["HR_RECORDINGS"]}
ANALYST = {"sf-context-current-user": "ANALYST", "sf-context-current-role": "WHISPER_ANALYST"}
HR = {"sf-context-current-user": "HANNA", "sf-context-current-role": "HR_ANALYST"}
FUNCTION = {"sf-external-function-format": "json", "sf-external-function-format-version": "1.0"}


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stages")
    bulk = root / "bulk"
    bulk.mkdir()
    for i in range(BULK_FILES):
        (bulk / letters_name(i)).touch()
    return {
        "AUDIO_FILES_STAGE": write_stage(root / "audio", 3),
        "HR_RECORDINGS": write_stage(root / "hr", 2),
        "BULK_STAGE": bulk,
    }


def _start(data: Path, mounts: dict[str, Path], **settings: Any) -> Any:
    """A gateway app on `data` with these stages mounted, its lifespan running while the `with` block does."""
    return gateway(data, FakeInference(segments=1, text="stand-in"), stage_mounts=mounts, **settings)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, stages: dict[str, Path]) -> Iterator[Gateway]:
    """Every stage mounted (the service role can read them all); the allow-list says who may name which."""
    with _start(
        tmp_path_factory.mktemp("gateway") / "data",
        stages,
        stage_allowlist=ALLOWLIST,
        snowflake_database="WHISPER_DB",  # as SPCS sets them: names are compared fully qualified
        snowflake_schema="PUBLIC",
    ) as running:
        yield running


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "stage_not_allowed", response.text


def _job_count(client: httpx.Client) -> int:
    return len(client.get("/v1/jobs", params={"limit": 200}).json()["jobs"])


# --- 1. confused deputy: only allow-listed stages --------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "@HR_RECORDINGS/call_00000.wav",  # readable by the service (mounted), not allow-listed for this caller
        "@hr_recordings/call_00001.wav",  # the same stage, lower case
        "@OTHER_DB.S.HR/call.mp3",  # any other stage the service role might read
        "@OTHER_DB.S.AUDIO_FILES_STAGE/call_00000.wav",  # same leaf name, another database: another stage
        "@OTHER_DB.S.HR/missing.mp3",  # refused before anything is looked up: no existence oracle
    ],
)
def test_a_job_on_a_stage_off_the_allow_list_is_403(client: httpx.Client, source: str) -> None:
    before = _job_count(client)
    _refused(client.post("/v1/jobs", json={"source": source, "language": "en"}, headers=ANALYST))
    _refused(client.post("/v1/jobs", json={"source": source}))  # no caller named at all (local, internal)
    assert _job_count(client) == before


def test_a_job_on_an_allow_listed_stage_still_runs(client: httpx.Client) -> None:
    created = client.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/call_00000.wav"}, headers=ANALYST)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 30
    while (job := client.get(f"/v1/jobs/{job_id}", headers=ANALYST).json())["status"] != "succeeded":
        assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert client.get(f"/v1/jobs/{job_id}/transcript", headers=ANALYST).json()["text"] == "stand-in"
    assert client.get(f"/v1/jobs/{job_id}/audio", headers=ANALYST).status_code == 200


def test_qualified_names_of_an_allowed_stage_are_that_stage(client: httpx.Client) -> None:
    """In the service's database and schema, `@WHISPER_DB.PUBLIC.AUDIO_FILES_STAGE` is `@AUDIO_FILES_STAGE`;
    the same name in another database or schema is another stage."""
    for source in ("@WHISPER_DB.PUBLIC.AUDIO_FILES_STAGE/call_00001.wav", "@public.audio_files_stage/call_00002.wav"):
        response = client.post("/v1/jobs", json={"source": source}, headers=ANALYST)
        assert response.status_code == 202, response.text
    for source in ("@WHISPER_DB.OTHER.AUDIO_FILES_STAGE/call_00001.wav", "@OTHER.AUDIO_FILES_STAGE/call_00001.wav"):
        _refused(client.post("/v1/jobs", json={"source": source}, headers=ANALYST))


def test_a_batch_on_a_stage_off_the_allow_list_is_403(client: httpx.Client) -> None:
    before = _job_count(client)
    for stage in ("@HR_RECORDINGS", "@HR_RECORDINGS/sub", "@OTHER_DB.S.HR", "@WHISPER_DB.PUBLIC.HR_RECORDINGS"):
        _refused(client.post("/v1/batches", json={"stage": stage, "pattern": ".*"}, headers=ANALYST))
    assert _job_count(client) == before


def test_a_role_header_on_the_public_port_opens_nothing(client: httpx.Client) -> None:
    """Only the functions port believes Sf-Context-Current-Role (SPCS ingress sends none, so a client wrote it):
    claiming the HR role through the public port does not open the HR stage."""
    before = _job_count(client)
    _refused(client.post("/v1/batches", json={"stage": "@HR_RECORDINGS", "pattern": ".*"}, headers=HR))
    _refused(client.post("/v1/jobs", json={"source": "@HR_RECORDINGS/call_00000.wav"}, headers=HR))
    assert _job_count(client) == before


def _submit_rows(functions: httpx.Client, rows: list, headers: dict[str, str], batch: str) -> list:
    headers = {**FUNCTION, **headers, "sf-external-function-query-batch-id": batch}
    response = functions.post("/functions/submit", json={"data": rows}, headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [row for row, _ in data] == [row for row, *_ in rows]
    return data


def test_a_per_role_stage_stays_closed_to_other_roles(functions: httpx.Client) -> None:
    data = _submit_rows(functions, [[0, "@HR_RECORDINGS/call_00000.wav", "en", None]], ANALYST, "role-1")
    assert data[0][1]["error"]["code"] == "stage_not_allowed", data


def test_the_per_role_entry_opens_the_stage_to_that_role(functions: httpx.Client) -> None:
    data = _submit_rows(functions, [[0, "@HR_RECORDINGS/call_00001.wav", "en", None]], HR, "role-2")
    assert data[0][1].get("job_id"), data


def test_service_function_rows_off_the_allow_list_get_a_row_error(functions: httpx.Client) -> None:
    rows = [
        [0, "@AUDIO_FILES_STAGE/call_00001.wav", "en", None],
        [1, "@HR_RECORDINGS/call_00000.wav", "en", None],
        [2, "@OTHER_DB.S.HR/call.mp3", None, None],
        [3, "@AUDIO_FILES_STAGE/call_00002.wav", None, None],
    ]
    data = _submit_rows(functions, rows, ANALYST, "deputy-1")
    assert data[0][1]["job_id"] and data[3][1]["job_id"]
    for index in (1, 2):
        assert data[index][1]["error"]["code"] == "stage_not_allowed", data[index]


def test_the_audio_route_rechecks_the_allow_list(tmp_path: Path, stages: dict[str, Path]) -> None:
    """A job accepted under a wider allow-list (an older deployment) cannot be downloaded once the stage is off
    the list: the audio route reads the stage again, so it checks again."""
    data = tmp_path / "data"
    with _start(data, stages, stage_allowlist=["AUDIO_FILES_STAGE", "HR_RECORDINGS"]) as wide, wide.client() as c:
        created = c.post("/v1/jobs", json={"source": "@HR_RECORDINGS/call_00000.wav"}, headers=ANALYST)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert c.get(f"/v1/jobs/{job_id}/audio", headers=ANALYST).status_code == 200
    with _start(data, stages, stage_allowlist=["AUDIO_FILES_STAGE"]) as narrow, narrow.client() as c:
        assert c.get(f"/v1/jobs/{job_id}", headers=ANALYST).status_code == 200  # the job is still there
        _refused(c.get(f"/v1/jobs/{job_id}/audio", headers=ANALYST))


def test_by_default_only_the_mounted_stages_are_allowed(tmp_path: Path, stages: dict[str, Path]) -> None:
    mounts = {"AUDIO_FILES_STAGE": stages["AUDIO_FILES_STAGE"]}
    with _start(tmp_path / "data", mounts) as started, started.client() as c:
        assert c.post("/v1/jobs", json={"source": "@AUDIO_FILES_STAGE/call_00000.wav"}).status_code == 202
        for source in ("@OTHER_DB.S.HR/call.mp3", "@HR_RECORDINGS/call_00000.wav", "@MODELS/model.bin"):
            _refused(c.post("/v1/jobs", json={"source": source}))
        _refused(c.post("/v1/batches", json={"stage": "@OTHER_DB.S.HR", "pattern": ".*"}))


# --- 2. batch patterns: linear time, off the event loop, time-bounded ------------------------------------------


def _post_in_background(gw: Gateway, body: dict[str, Any], out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        start = time.monotonic()
        with gw.client() as c:
            out["response"] = c.post("/v1/batches", json=body, headers=ANALYST)
        out["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_hostile_pattern_never_stalls_the_gateway(gw: Gateway) -> None:
    """`([a-z/.]+)+x` over 40-letter names froze the gateway for minutes (Python re, on the event loop). Now
    /healthz answers within 1 s throughout, and the batch completes quickly (no name matches) or is refused.
    The app's event loop runs in the TestClient's portal thread; each /healthz is sent from a worker thread
    and waited for at most 1 s (as a client's read timeout)."""
    out: dict[str, Any] = {}
    thread = _post_in_background(gw, {"stage": "@BULK_STAGE", "pattern": HOSTILE_PATTERN}, out)
    slowest = 0.0
    pool = ThreadPoolExecutor(1)

    def healthz() -> int:
        return pool.submit(health.get, "/healthz").result(timeout=1.0).status_code  # TimeoutError after 1 s

    try:
        with gw.client() as health:
            deadline = time.monotonic() + 20
            while thread.is_alive() and time.monotonic() < deadline:
                start = time.monotonic()
                assert healthz() == 200
                slowest = max(slowest, time.monotonic() - start)
                time.sleep(0.05)
            assert healthz() == 200
    finally:
        pool.shutdown(wait=False)  # a /healthz stuck on a frozen loop must not hold the test up
    thread.join(timeout=1)
    assert not thread.is_alive(), "the hostile batch took longer than 20 s"
    assert slowest < 1.0
    response = out["response"]
    assert out["seconds"] < 10, out["seconds"]
    code = response.json()["error"]["code"]
    assert (response.status_code, code) in {(404, "no_matching_files"), (422, "invalid_pattern")}, response.text


def test_a_pattern_that_matches_still_works_over_many_files(client: httpx.Client) -> None:
    first = letters_name(0)
    body = {"stage": "@BULK_STAGE", "pattern": f"({first[:5]})+.*"}
    start = time.monotonic()
    response = client.post("/v1/batches", json=body, headers=ANALYST)
    assert time.monotonic() - start < 10
    assert response.status_code in (202, 429), response.text  # 429: more matches than the queue takes
    # Syntax RE2 does not have (backreferences, lookaround) is a 422 with a reason, never a 500.
    for pattern in (r"(a)\1", "(?=a).*", "(?<!b)a"):
        refused = client.post("/v1/batches", json={"stage": "@BULK_STAGE", "pattern": pattern}, headers=ANALYST)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_pattern", refused.text


def test_matching_past_its_time_bound_is_refused(tmp_path: Path, stages: dict[str, Path]) -> None:
    """The time bound holds whatever the engine: a stage listing too large to match in time is a 422."""
    mounts = {"BULK_STAGE": stages["BULK_STAGE"]}
    with _start(tmp_path / "data", mounts, batch_match_timeout_s=0.000001) as started, started.client() as c:
        response = c.post("/v1/batches", json={"stage": "@BULK_STAGE", "pattern": ".*q.*"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "pattern_timeout"
        assert c.get("/healthz").status_code == 200
