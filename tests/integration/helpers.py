"""Shared helpers for the integration tests: submit, wait, WER."""

from __future__ import annotations

import csv
import re
import shutil
import time
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jiwer

DATA = Path(__file__).parent.parent / "data"
SHARED_AUDIO = Path(__file__).resolve().parents[3] / "shared" / "audio"


def manifest(folder: Path = DATA) -> dict[str, dict[str, str]]:
    with (folder / "manifest.tsv").open(newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh, delimiter="\t")}


MANIFEST_JFK = manifest()["en_jfk.flac"]["reference_text"]
# What Snowflake sends with a service-function batch (its query id, the calling user).
FUNCTION_HEADERS = {
    "sf-external-function-format": "json",
    "sf-external-function-format-version": "1.0",
    "sf-external-function-current-query-id": "01b2c3d4-0000-0000-0000-000000000001",
    "sf-context-current-user": "ANALYST",
}
JFK_CLIPS = ("en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4")  # one speech, three containers


def stage_of_clips(folder: Path) -> Path:
    """`folder` as a mounted stage holding the JFK clips (JFK_CLIPS)."""
    for name in JFK_CLIPS:
        shutil.copy(DATA / name, folder / name)
    return folder


@lru_cache(maxsize=1)
def _english_normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def normalise(text: str) -> str:
    return _english_normalizer()(text)


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>")


def nfc_words(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def submit(client: httpx.Client, path: Path, **fields: Any) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/jobs", files={"file": (path.name, fh)}, data={k: str(v) for k, v in fields.items()})


def wait(client: httpx.Client, job_id: str, timeout: float = 300, poll: float = 0.25) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s")


def call_function(
    client: httpx.Client, path: str, rows: list, headers: dict[str, str], timeout: float = 600, poll: float = 0.2
) -> httpx.Response:
    """A service-function batch as Snowflake sends it: POST the rows; while the answer is 202, poll with GET
    and the same headers (the batch id among them) until another status comes."""
    response = client.post(path, json={"data": rows}, headers=headers)
    deadline = time.monotonic() + timeout
    while response.status_code == 202:
        assert time.monotonic() < deadline, f"batch still 202 after {timeout} s"
        time.sleep(poll)
        response = client.get(path, headers=headers)
    return response


def transcribe(client: httpx.Client, path: Path, timeout: float = 300, **fields: Any) -> tuple[dict, dict]:
    """Submit, wait, and return (job, json transcript)."""
    response = submit(client, path, **fields)
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"], timeout)
    assert job["status"] == "succeeded", job
    transcript = client.get(f"/v1/jobs/{job['id']}/transcript").json()
    return job, transcript


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The service's one error body, with this status (and code), naming the request id it answered with."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "request_id"} and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    if code:
        assert error["code"] == code, error
    return error
