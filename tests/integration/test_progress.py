"""A long job reports progress while it runs: windows stream back from Ray Serve as they finish."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import start_service, stop_service
from tests.integration.helpers import DATA, submit


def test_progress_rises_while_a_long_job_runs(tmp_path: Path, model_cache: Path) -> None:
    # Batches of 2 windows make the 171 s file finish in several steps.
    svc = start_service(
        "ctranslate2", tmp_path / "data", model_cache, tmp_path / "svc.log", SPCS_WHISPER_MAX_BATCH_SIZE="2"
    )
    try:
        with svc.client() as client:
            job_id = submit(client, DATA / "en_ljspeech_longform.wav", language="en").json()["id"]
            seen: list[tuple[str, float, float | None]] = []
            texts: list[tuple[str, str]] = []  # (status, partial transcript text) as the job runs
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                job = client.get(f"/v1/jobs/{job_id}").json()
                seen.append((job["status"], job["progress"]["fraction"], job["progress"]["done_seconds"]))
                if job["status"] == "running":
                    so_far = client.get(f"/v1/jobs/{job_id}/transcript", params={"partial": "true"})
                    # The job may finish between the two reads: then the final transcript, marked as such.
                    assert so_far.status_code == 200 and so_far.headers["x-partial"] in ("true", "false")
                    if so_far.headers["x-partial"] == "true":
                        texts.append((job["status"], so_far.json()["text"]))
                if job["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.1)
            final_words = len(client.get(f"/v1/jobs/{job_id}/transcript").json()["text"].split())
    finally:
        stop_service(svc)
    assert seen[-1][0] == "succeeded" and seen[-1][1] == 1.0
    running = [fraction for status, fraction, _ in seen if status == "running"]
    assert any(0 < f < 1 for f in running), seen
    assert running == sorted(running)  # never goes backwards
    partial = next(done for status, f, done in seen if status == "running" and 0 < f < 1)
    assert 0 < partial < 171
    # The partial transcript fills in while the job runs: some text before the end, never less later on.
    lengths = [len(text.split()) for _, text in texts]
    assert any(n > 0 for n in lengths), texts[-3:]
    assert lengths == sorted(lengths)
    assert max(lengths) <= final_words
