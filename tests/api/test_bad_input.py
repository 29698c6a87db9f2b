"""Every bad input gets a 4xx with the one error body, and the service stays ready afterwards: in process, the
gateway app (SQLite store) on a fake inference (tests/fakes.py). Moved from tests/integration/test_bad_input.py,
whose checks were all the gateway's own (uploads are probed with PyAV at submit, in the gateway)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import Gateway
from tests.fakes import FakeInference
from tests.integration.helpers import DATA, assert_error, submit
from tests.media import write_video_only


def wait(client: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def transcribe(client: httpx.Client, path: Path, **fields: Any) -> tuple[dict, dict]:
    """Submit, wait, and return (job, json transcript)."""
    response = submit(client, path, **fields)
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"])
    assert job["status"] == "succeeded", job
    transcript = client.get(f"/v1/jobs/{job['id']}/transcript").json()
    return job, transcript


def _bad_files(tmp: Path) -> list[tuple[Path, int, str]]:
    jfk = (DATA / "en_jfk.flac").read_bytes()
    video = (DATA / "en_jfk_video.mp4").read_bytes()
    cases = {
        "empty.wav": (b"", 400, "empty_file"),
        "notes.wav": (b"this is a text file, not audio\n" * 100, 415, "unsupported_media"),
        "random.mp3": (bytes(range(256)) * 200, 415, "unsupported_media"),
        "cut.flac": (jfk[: len(jfk) // 2], 422, "corrupt_audio"),
        "cut.mp4": (video[: len(video) // 3], 415, "unsupported_media"),
    }
    out = []
    for name, (payload, status, code) in cases.items():
        (tmp / name).write_bytes(payload)
        out.append((tmp / name, status, code))
    out.append((write_video_only(tmp / "no-audio.mp4"), 422, "no_audio_track"))
    return out


def test_bad_files_are_refused_at_submit(make_gateway: Callable[..., Gateway], tmp_path: Path) -> None:
    gw = make_gateway()
    client = gw.public
    for path, status, code in _bad_files(tmp_path):
        assert_error(submit(client, path), status, code)
    assert client.get("/readyz").status_code == 200
    transcribe(client, DATA / "en_jfk.m4a")  # a normal job still succeeds
    # Nothing refused was kept: only the blobs of accepted jobs are on disk.
    assert not list((gw.settings.gateway.data_dir / "blobs").glob(".incoming-*"))


def test_bad_requests(make_gateway: Callable[..., Gateway]) -> None:
    client = make_gateway().public
    assert_error(client.get("/v1/jobs/job_doesnotexist"), 404, "job_not_found")
    assert_error(client.get("/v1/jobs/job_doesnotexist/transcript"), 404, "job_not_found")
    assert_error(client.delete("/v1/jobs/job_doesnotexist"), 404, "job_not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.post("/v1/jobs", json={"source": "x.wav"}), 422, "invalid_source")  # not @STAGE/path
    assert_error(
        client.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media"
    )
    assert_error(client.post("/v1/jobs", data={"language": "en"}, files={"other": ("a", b"x")}), 422, "missing_file")
    with (DATA / "en_jfk.flac").open("rb") as fh:
        jfk = fh.read()
    for fields, code in [
        ({"language": "klingon"}, "validation_error"),
        ({"task": "summarise"}, "validation_error"),
        ({"colour": "blue"}, "validation_error"),
        ({"word_timestamps": "perhaps"}, "validation_error"),
        ({"model": "large-v9"}, "unsupported_model"),
    ]:
        response = client.post("/v1/jobs", files={"file": ("jfk.flac", jfk)}, data=fields)
        assert_error(response, 422, code)
    assert_error(client.get("/v1/jobs", params={"limit": 0}), 422, "validation_error")
    assert_error(client.get("/v1/jobs", params={"cursor": "%%%"}), 400, "invalid_cursor")
    assert_error(client.get("/v1/jobs", params={"status": "sleeping"}), 422, "validation_error")


def test_transcript_formats_and_states(make_gateway: Callable[..., Gateway]) -> None:
    client = make_gateway().public
    job, _ = transcribe(client, DATA / "en_jfk.m4a")
    assert_error(client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "docx"}), 400, "unsupported_format")
    for _ in range(2):
        submit(client, DATA / "en_jfk.m4a")
    listed = client.get("/v1/jobs", params={"limit": 2}).json()
    assert len(listed["jobs"]) == 2 and listed["next_cursor"]
    following = client.get("/v1/jobs", params={"limit": 2, "cursor": listed["next_cursor"]}).json()
    assert not {j["id"] for j in listed["jobs"]} & {j["id"] for j in following["jobs"]}
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert_error(client.get(f"/v1/jobs/{job['id']}"), 404)


def test_idempotency_key_returns_the_same_job(make_gateway: Callable[..., Gateway]) -> None:
    key = "idem-fake"
    client = make_gateway().public
    first = submit(client, DATA / "en_jfk.m4a", idempotency_key=key)
    assert first.status_code == 202
    with (DATA / "en_jfk.m4a").open("rb") as fh:
        again = client.post("/v1/jobs", files={"file": ("x.m4a", fh)}, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_cancel_a_queued_job(make_gateway: Callable[..., Gateway]) -> None:
    # A long job first keeps the one worker busy, so the later ones are still queued when cancelled.
    client = make_gateway(FakeInference(seconds=60), dispatch_concurrency=1, drain_timeout_s=0).public
    ids = [submit(client, DATA / "en_ljspeech_longform.wav").json()["id"] for _ in range(6)]
    cancelled = client.delete(f"/v1/jobs/{ids[-1]}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert_error(client.get(f"/v1/jobs/{ids[-1]}/transcript"), 409, "not_ready")
    for job_id in ids[:-1]:
        client.delete(f"/v1/jobs/{job_id}")


def test_upload_limit_enforced_while_streaming(make_gateway: Callable[..., Gateway]) -> None:
    client = make_gateway(max_upload_mb=0.5).public
    big = (DATA / "en_jfk.flac").read_bytes()  # 1.1 MB > 0.5 MB
    assert_error(client.post("/v1/jobs", files={"file": ("jfk.flac", big)}), 413, "file_too_large")

    def chunks():  # no Content-Length: the limit must hold while the body streams
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "file_too_large")
    assert client.get("/readyz").status_code == 200


def test_a_field_sent_both_plain_and_as_a_list_is_a_422(make_gateway: Callable[..., Gateway]) -> None:
    """`x` and `x[]` in one form: a clear 422, in either order (it was a 500 when `x` came first)."""
    client = make_gateway().public
    audio = (DATA / "en_jfk.flac").read_bytes()
    for order in (["language", "language[]"], ["language[]", "language"]):
        fields = {name: "en" for name in order}  # sent in this order
        response = client.post("/v1/jobs", data=fields, files={"file": ("a.flac", audio)})
        assert_error(response, 422, "validation_error")
        assert "both as `language` and `language[]`" in response.json()["error"]["message"]
