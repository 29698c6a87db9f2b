"""No accepted job is lost: SIGKILL of the gateway mid-way, a restart, every job done exactly once.
And back-pressure: a full queue answers 429 with Retry-After, never 5xx."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx

from tests.harness import free_port, start_gateway, start_service, stop_gateway, stop_service
from tests.integration.helpers import DATA, MANIFEST_JFK, submit, wait, wer


def test_sigkill_of_the_gateway_loses_nothing(tmp_path: Path, model_cache: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_service("ctranslate2", data_dir, model_cache, tmp_path / "first.log")
    with first.client() as client:
        ids = [submit(client, DATA / "en_jfk.m4a").json()["id"] for _ in range(20)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill once some, but not all, are done
            statuses = [client.get(f"/v1/jobs/{i}").json()["status"] for i in ids]
            if statuses.count("succeeded") >= 3:
                break
            time.sleep(0.2)
    first.process.send_signal(signal.SIGKILL)  # the gateway only; its Ray app notices and stops itself
    first.process.wait()
    assert 3 <= statuses.count("succeeded") < 20, statuses

    second = start_service("ctranslate2", data_dir, model_cache, tmp_path / "second.log")
    try:
        with second.client() as client:
            jobs = [wait(client, i, timeout=600) for i in ids]
            texts = [client.get(f"/v1/jobs/{i}/transcript").json()["text"] for i in ids]
    finally:
        stop_service(second)
    assert [j["status"] for j in jobs] == ["succeeded"] * 20
    assert all(wer(MANIFEST_JFK, text) <= 0.05 for text in texts)
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 20
        per_job = db.execute("SELECT job_id, count(*) FROM transcripts GROUP BY job_id").fetchall()
    assert sorted(j for j, _ in per_job) == sorted(ids) and {n for _, n in per_job} == {1}


def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    """A gateway whose Ray Serve app is absent keeps jobs queued; past the bound it pushes back."""
    url, process = start_gateway(
        tmp_path / "data",
        f"http://127.0.0.1:{free_port()}/absent",
        tmp_path / "gateway.log",
        SPCS_WHISPER_MAX_QUEUED_JOBS="3",
        SPCS_WHISPER_MAX_JOBS_PER_USER="1",
    )
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            # One user's share of the queue is bounded too (users as SPCS names them).
            alice = {"sf-context-current-user": "ALICE"}
            first = client.post(
                "/v1/jobs", files={"file": ("a.m4a", (DATA / "en_jfk.m4a").read_bytes())}, headers=alice
            )
            again = client.post(
                "/v1/jobs", files={"file": ("a.m4a", (DATA / "en_jfk.m4a").read_bytes())}, headers=alice
            )
            assert first.status_code == 202 and again.status_code == 429
            assert again.json()["error"]["code"] == "too_many_jobs" and int(again.headers["retry-after"]) > 0
            assert client.delete(f"/v1/jobs/{first.json()['id']}").status_code == 200  # Alice's slot is free again
            assert client.get("/readyz").status_code == 503  # no model behind it: not ready...
            accepted = [submit(client, DATA / "en_jfk.m4a") for _ in range(3)]
            assert [r.status_code for r in accepted] == [202] * 3  # ...but jobs are still accepted and kept
            refused = submit(client, DATA / "en_jfk.m4a")
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert refused.json()["error"]["code"] == "queue_full"
            assert client.delete(f"/v1/jobs/{accepted[0].json()['id']}").status_code == 200  # cancelled
            assert submit(client, DATA / "en_jfk.m4a").status_code == 202  # room again
    finally:
        stop_gateway(process)


def _whisper_replica_pid(serve_port: int) -> int | None:
    """The Whisper replica of the Ray instance serving on `serve_port` (Ray workers inherit its env)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::ServeReplica:whisper:Whisper"):
                continue
            if f"SPCS_WHISPER_SERVE_PORT={serve_port}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue
    return None


def test_a_killed_whisper_replica_is_replaced_and_the_job_retried(tmp_path: Path, model_cache: Path) -> None:
    svc = start_service("ctranslate2", tmp_path / "data", model_cache, tmp_path / "svc.log")
    try:
        serve_port = int(svc.serve_url.rsplit(":", 1)[1].split("/")[0])
        pid = _whisper_replica_pid(serve_port)
        assert pid is not None
        with svc.client() as client:
            job_id = submit(client, DATA / "en_ljspeech_longform.wav", language="en").json()["id"]
            while client.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
                time.sleep(0.1)
            time.sleep(2.0)  # mid-inference
            os.kill(pid, signal.SIGKILL)
            job = wait(client, job_id, timeout=600)
            assert job["status"] == "succeeded", job
            # The windows the dead replica held were sent again by the Decoder to its replacement (the job went
            # on); had the replacement been slower to start than the retries last, the gateway's next attempt.
            retried = httpx.get(f"{svc.serve_url}/ready", timeout=10).json()["windows_retried"]
            assert retried >= 1 or job["attempts"] >= 2, (retried, job)
            assert "printing" in client.get(f"/v1/jobs/{job_id}/transcript").json()["text"].lower()
            # The service is whole again: a new replica serves the next job.
            assert _whisper_replica_pid(serve_port) not in (None, pid)
            assert wait(client, submit(client, DATA / "en_jfk.m4a").json()["id"])["status"] == "succeeded"
    finally:
        stop_service(svc)


def test_sigterm_drains_running_jobs_and_keeps_the_queue(tmp_path: Path, model_cache: Path) -> None:
    data_dir = tmp_path / "data"
    svc = start_service(
        "ctranslate2",
        data_dir,
        model_cache,
        tmp_path / "svc.log",
        SPCS_WHISPER_DISPATCH_CONCURRENCY="1",
        SPCS_WHISPER_DRAIN_TIMEOUT_S="120",
    )
    with svc.client() as client:
        ids = [submit(client, DATA / "en_ljspeech_longform.wav", language="en").json()["id"] for _ in range(3)]
        while client.get(f"/v1/jobs/{ids[0]}").json()["status"] != "running":
            time.sleep(0.1)
    svc.process.send_signal(signal.SIGTERM)
    svc.process.wait(timeout=180)
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        status = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert status[ids[0]] == "succeeded"  # the running job was allowed to finish
    assert [status[i] for i in ids[1:]] == ["queued", "queued"]  # the rest wait for the next start
