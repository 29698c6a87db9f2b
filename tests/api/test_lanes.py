"""Interactive and bulk lanes at the gateway, in process (the gateway app, SQLite store, the FAKE inference): the
lane each route gives a job (`lane_of`), shown in the job's JSON, and sent to the Ray app with the job."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Gateway
from tests.fakes import FakeInference
from tests.integration.helpers import DATA, FUNCTION_HEADERS, submit, wait

SHORT = DATA / "en_jfk.flac"  # 11 s
LONG = DATA / "en_ljspeech_longform.wav"  # 171 s


def _job(client: httpx.Client, path: Path) -> dict[str, Any]:
    """Upload `path` and wait for its job; the job as the 202 showed it (`audio_seconds`: the probed length; the
    fake's transcript replaces it), once it checked the finished job kept its lane."""
    response = submit(client, path)
    assert response.status_code == 202, response.text
    created = response.json()
    job = wait(client, created["id"], timeout=60)
    assert job["status"] == "succeeded", job
    assert job["lane"] == created["lane"]
    return created


def test_a_short_upload_is_interactive_and_a_long_one_bulk(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    with gw.client() as client:
        short = _job(client, SHORT)
        assert short["audio_seconds"] < 30 and short["lane"] == "interactive"
        assert gw.inference.lanes == ["interactive"]  # the Ray app is told the job's lane
        long = _job(client, LONG)
        assert long["audio_seconds"] > 30 and long["lane"] == "bulk"
        assert gw.inference.lanes == ["interactive", "bulk"]
        listed = {j["id"]: j["lane"] for j in client.get("/v1/jobs").json()["jobs"]}
        assert listed == {short["id"]: "interactive", long["id"]: "bulk"}


def test_the_bound_is_interactive_max_seconds(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(interactive_max_seconds=200)
    with gw.client() as client:
        assert _job(client, LONG)["lane"] == "interactive"
        assert gw.inference.lanes == ["interactive"]


def test_fifo_makes_every_job_bulk(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway(scheduling="fifo")
    with gw.client() as client:
        assert _job(client, SHORT)["lane"] == "bulk"
        assert _job(client, LONG)["lane"] == "bulk"
        files = {"file": (SHORT.name, SHORT.read_bytes())}
        response = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files=files)
        assert response.status_code == 200, response.text
        assert client.get(f"/v1/jobs/{response.headers['x-job-id']}").json()["lane"] == "bulk"
    assert gw.inference.lanes == ["bulk", "bulk", "bulk"]


def test_openai_requests_are_interactive_however_long(make_gateway: Callable[..., Gateway]) -> None:
    gw = make_gateway()
    with gw.client() as client:
        for route in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            response = client.post(route, data={"model": "whisper-1"}, files={"file": (LONG.name, LONG.read_bytes())})
            assert response.status_code == 200, response.text
            job = client.get(f"/v1/jobs/{response.headers['x-job-id']}").json()
            assert job["lane"] == "interactive"
    assert gw.inference.lanes == ["interactive", "interactive"]


def test_stage_files_batches_and_function_rows(make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    """A mounted stage file is probed at submit: short is interactive, long bulk; a batch's files are bulk; a
    service-function row is interactive, however long its file."""
    stage = tmp_path / "stage"
    stage.mkdir()
    shutil.copy(SHORT, stage / "short.flac")
    shutil.copy(LONG, stage / "long.wav")
    gw = make_gateway(stage_mounts={"AUDIO_FILES_STAGE": stage})
    expected: dict[str, str] = {}
    with gw.client() as client, gw.client("functions") as functions:
        for name, lane in (("short.flac", "interactive"), ("long.wav", "bulk")):
            response = client.post("/v1/jobs", json={"source": f"@AUDIO_FILES_STAGE/{name}"})
            assert response.status_code == 202, response.text
            assert response.json()["lane"] == lane
            expected[response.json()["id"]] = lane
        batch = client.post("/v1/batches", json={"stage": "@AUDIO_FILES_STAGE", "pattern": ".*"})
        assert batch.status_code == 202, batch.text
        assert len(batch.json()["jobs"]) == 2
        expected.update(dict.fromkeys(batch.json()["jobs"], "bulk"))
        rows = functions.post(
            "/functions/submit", json={"data": [[0, "@AUDIO_FILES_STAGE/long.wav"]]}, headers=FUNCTION_HEADERS
        )
        assert rows.status_code == 200, rows.text
        expected[rows.json()["data"][0][1]["job_id"]] = "interactive"
        for job_id, lane in expected.items():
            job = wait(client, job_id, timeout=60)
            assert (job["status"], job["lane"]) == ("succeeded", lane), job
    assert Counter(gw.inference.lanes) == Counter(expected.values())


def _run_in_order(make_gateway: Callable[..., Gateway], **settings: Any) -> list[str | None]:
    """Queue two long uploads, then a short one, while the Ray app is down (from the start: nothing is
    claimed); bring it up. The prompts of the jobs in the order the dispatcher (one job at a time) ran them."""
    fake = FakeInference()
    fake.down = True
    gw = make_gateway(fake, dispatch_concurrency=1, **settings)
    with gw.client() as client:
        ids = []
        for path, prompt in ((LONG, "long 1"), (LONG, "long 2"), (SHORT, "short")):
            response = submit(client, path, prompt=prompt)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        gw.inference.down = False
        for job_id in ids:
            assert wait(client, job_id, timeout=60)["status"] == "succeeded"
    return [options.prompt for options in gw.inference.calls]


def test_the_dispatcher_claims_interactive_jobs_first(make_gateway: Callable[..., Gateway]) -> None:
    assert _run_in_order(make_gateway) == ["short", "long 1", "long 2"]
    assert _run_in_order(make_gateway, scheduling="fifo") == ["long 1", "long 2", "short"]


@pytest.mark.parametrize("reserve", [4, 0])
def test_an_interactive_job_never_waits_for_a_slot_a_bulk_job_holds(
    make_gateway: Callable[..., Gateway], reserve: int
) -> None:
    """One slot, held by a long (bulk) job: the interactive reserve runs a short job beside it at once; without
    a reserve the short job waits until the long one is done."""
    gw = make_gateway(FakeInference(seconds=2.0), dispatch_concurrency=1, interactive_reserve=reserve)
    with gw.client() as client:
        long_id = submit(client, LONG).json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/jobs/{long_id}").json()["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
        short = wait(client, submit(client, SHORT).json()["id"], timeout=60)
        long = wait(client, long_id, timeout=60)
    assert (short["lane"], long["lane"]) == ("interactive", "bulk")
    overlapped = short["timings"]["started_at"] < long["timings"]["finished_at"]
    assert overlapped == bool(reserve)
