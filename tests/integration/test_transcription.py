"""End to end over real HTTP: gateway → Ray Serve (decoder + batched Whisper) → store, for both engines."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
import srt

from tests.harness import Service
from tests.integration.helpers import DATA, SHARED_AUDIO, manifest, nfc_words, submit, transcribe, wait, wer

MANIFEST = manifest()


@pytest.mark.parametrize("name", ["en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4"])
def test_jfk_every_container(service: Service, name: str) -> None:
    with service.client() as client:
        job, transcript = transcribe(client, DATA / name)
    error = wer(MANIFEST[name]["reference_text"], transcript["text"])
    print(f"[{service.engine}] {name}: WER {error:.3f}, {job['timings']['seconds_per_audio_second']} s/audio s")
    assert error <= 0.05, transcript["text"]
    assert transcript["language"] == "en"
    assert abs(transcript["duration"] - 11.0) < 0.2
    assert transcript["segments"] and all(s["end"] >= s["start"] for s in transcript["segments"])


def test_jfk_video_as_srt_and_vtt(service: Service) -> None:
    with service.client() as client:
        job, _ = transcribe(client, DATA / "en_jfk_video.mp4", language="en")
        srt_body = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "srt"})
        vtt_body = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "vtt"})
        text = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"}).text
        verbose = client.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"}).json()
    cues = list(srt.parse(srt_body.text))
    assert cues and cues[-1].end.total_seconds() <= 11.1
    assert wer(MANIFEST["en_jfk_video.mp4"]["reference_text"], " ".join(c.content for c in cues)) <= 0.05
    assert vtt_body.text.startswith("WEBVTT") and "-->" in vtt_body.text
    assert "ask not what your country" in text.lower()
    assert verbose["task"] == "transcribe" and verbose["segments"][0]["id"] == 0


def test_long_form_in_full_with_increasing_timestamps(service: Service) -> None:
    name = "en_ljspeech_longform.wav"
    with service.client() as client:
        job, transcript = transcribe(client, DATA / name, timeout=600, language="en")
    error = wer(MANIFEST[name]["reference_text"], transcript["text"])
    print(f"[{service.engine}] {name}: WER {error:.3f}, {job['timings']['seconds_per_audio_second']} s/audio s")
    assert error <= 0.15
    starts = [s["start"] for s in transcript["segments"]]
    assert starts == sorted(starts) and len(starts) >= 10
    assert transcript["segments"][-1]["end"] > 160  # the last sentence is there, near the end of 171 s
    assert "fourteen sixty-two" in transcript["text"].lower() or "1462" in transcript["text"]


def test_no_text_on_silence_and_noise(service: Service) -> None:
    with service.client() as client:
        _, transcript = transcribe(client, DATA / "none_silence_then_pinknoise_30s.wav")
    assert len(transcript["text"].split()) <= 2, transcript["text"]


def test_word_timestamps(service: Service) -> None:
    with service.client() as client:
        _, transcript = transcribe(client, DATA / "en_jfk.flac", word_timestamps="true")
        job_id = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"][0]["id"]
        verbose = client.get(f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}).json()
    words = verbose["words"]
    assert len(words) >= 18
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and words[-1]["end"] <= 11.1
    assert all(w["end"] >= w["start"] for w in words)


def test_concurrent_jobs_all_complete(service: Service) -> None:
    """Several jobs at once: windows from different requests share batches; every job gets its own text."""
    files = ["en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4", "en_jfk.flac"]
    with service.client() as client:
        before = httpx.get(f"{service.serve_url}/ready").json()
        ids = [submit(client, DATA / f, language="en").json()["id"] for f in files]
        jobs = [wait(client, i) for i in ids]
        after = httpx.get(f"{service.serve_url}/ready").json()
        texts = [client.get(f"/v1/jobs/{i}/transcript").json()["text"] for i in ids]
    assert all(j["status"] == "succeeded" for j in jobs)
    assert all(wer(MANIFEST["en_jfk.flac"]["reference_text"], t) <= 0.05 for t in texts)
    windows, batches = after["windows"] - before["windows"], after["batches"] - before["batches"]
    # The first window runs alone; the others queue while the model is busy and share the next call.
    assert windows >= len(files) and batches < windows, (windows, batches)
    assert after["queued_windows"] == 0


@pytest.mark.parametrize("service", ["ctranslate2"], indirect=True)  # engine-agnostic: one engine is enough
def test_long_poll_answers_once_the_job_has_finished(service: Service) -> None:
    with service.client() as client:
        job_id = submit(client, DATA / "en_jfk.flac", language="en").json()["id"]
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        assert job["status"] == "succeeded"  # one request, no polling loop
        assert client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded"
        for bad in ("-1", "61", "soon"):
            response = client.get(f"/v1/jobs/{job_id}", params={"wait": bad})
            assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
        missing = client.get("/v1/jobs/job_doesnotexist", params={"wait": 5})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"


HINDI = sorted(SHARED_AUDIO.glob("hi_*.mp3")) if SHARED_AUDIO.is_dir() else []


@pytest.mark.skipif(not HINDI, reason="Hindi clips are not redistributable; they live in ../shared/audio only")
def test_hindi_mp3s_complete_with_language_forced(service: Service) -> None:
    with service.client() as client, concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda p: transcribe(client, p, language="hi"), HINDI))
    for path, (job, transcript) in zip(HINDI, results, strict=True):
        assert job["language"] == "hi" and transcript["language"] == "hi"
        assert abs(transcript["duration"] - float(manifest(SHARED_AUDIO)[path.name]["seconds"])) < 0.3
    # Quality is not judged with the base model (STACK-NOTES: it writes Hindi in Urdu script), but the
    # Hindi path must produce words, not an empty shell, for at least most clips.
    assert sum(bool(nfc_words(t["text"])) for _, t in results) >= 2, [t["text"] for _, t in results]
