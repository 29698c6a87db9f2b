"""The mixed workload of issue 16: 16 files (≈ 400 s: English and Hindi, 4–171 s, two without speech) through
the service, all submitted at once, side by side with faster-whisper used directly on the same weights.

- `batched`: `BatchedInferencePipeline(model).transcribe(file, batch_size=16)` looping over the files;
- `naive_vad`: `WhisperModel.transcribe(file, vad_filter=True)` looping over the files;
- `service`: every file posted to `/v1/jobs` at once (16 concurrent uploads), each job awaited by its own long
  poll; a file's latency is from the start of the submissions to its job's end. Then again with the files
  posted one after another, the longest first: the worst order for the short ones (`*_long_first`).

All three use the same `base` weights (CTranslate2 int8 on CPU), beam 5 and auto-detected language.
Figures: wall time of each, `service_vs_batched_pipeline` and `service_vs_naive_vad` (time ratios: above 1,
the service is faster), word error rate on the English files (corpus WER, normalised as the tests do), and
the median latency of the files of at most 12 s with its share of the service's wall time.

The files are built from the audio the tests may use: `tests/data` (public domain) and, when present, the
Hindi clips of `../shared/audio` (never committed; without them three short long-form excerpts stand in).
Run alone: `python -m bench.mixed [--runs 1]`; `make bench` runs it too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.audio import SAMPLE_RATE, decode
from tests.integration.helpers import DATA, SHARED_AUDIO, manifest, normalise
from tests.media import write_wav

SHARED = SHARED_AUDIO
SHORT_S = 12.0  # the files whose latency the issue bounds
LONG = "en_ljspeech_longform.wav"
# Long-form excerpts (first and last utterance id of each), for files between the short clips and the long one.
EXCERPTS = (("LJ001-0001", "LJ001-0004"), ("LJ001-0005", "LJ001-0009"), ("LJ001-0010", "LJ001-0013"),
            ("LJ001-0014", "LJ001-0016"), ("LJ001-0017", "LJ001-0018"))  # fmt: skip
# Stand-ins for the Hindi clips when ../shared/audio is absent: short single utterances.
SHORT_EXCERPTS = (("LJ001-0006", "LJ001-0006"), ("LJ001-0011", "LJ001-0011"), ("LJ001-0016", "LJ001-0016"))
HINDI = ("hi_mannkibaat_00A020.mp3", "hi_mannkibaat_00C007.mp3", "hi_ddnews_00D002.mp3")


@dataclass(frozen=True)
class WorkFile:
    """One file of the workload: where it is, its language (`none`: no speech), length and reference."""

    path: Path
    language: str
    seconds: float
    reference: str

    @property
    def short(self) -> bool:
        return self.seconds <= SHORT_S


def _pink_noise(seconds: float, dbfs: float, seed: int) -> np.ndarray:
    """Pink noise (1/f power) at `dbfs` RMS."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _utterances() -> list[dict[str, str]]:
    with (DATA / "en_ljspeech_longform.segments.tsv").open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _excerpt(folder: Path, audio: np.ndarray, first: str, last: str) -> WorkFile:
    rows = _utterances()
    ids = [row["utterance_id"] for row in rows]
    chosen = rows[ids.index(first) : ids.index(last) + 1]
    start, end = float(chosen[0]["start_s"]), float(chosen[-1]["end_s"])
    clip = audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
    path = folder / f"en_ljspeech_{first[-4:]}_{last[-4:]}.wav"
    write_wav(path, clip)
    return WorkFile(path, "en", clip.shape[0] / SAMPLE_RATE, " ".join(row["text"] for row in chosen))


def workload(folder: Path) -> list[WorkFile]:
    """The 16 files, long ones first, written under `folder` where they are cut or generated."""
    known = manifest()
    long_audio = decode(DATA / LONG)

    def listed(name: str, source: Path = DATA, copy: str | None = None) -> WorkFile:
        row = (manifest(source) if source != DATA else known)[name]
        path = source / name
        if copy:
            path = folder / copy
            shutil.copyfile(source / name, path)
        return WorkFile(path, row["language"], float(row["seconds"]), row["reference_text"])

    files = [listed(LONG)] + [_excerpt(folder, long_audio, first, last) for first, last in EXCERPTS]
    files.append(listed("none_silence_then_pinknoise_30s.wav"))
    jfk = [listed("en_jfk.flac"), listed("en_jfk.m4a"), listed("en_jfk_video.mp4")]
    jfk += [listed("en_jfk.flac", copy="en_jfk_2.flac"), listed("en_jfk.m4a", copy="en_jfk_2.m4a")]
    files += jfk
    if all((SHARED / name).exists() for name in HINDI):
        files += [listed(name, SHARED) for name in HINDI]
    else:
        files += [_excerpt(folder, long_audio, first, last) for first, last in SHORT_EXCERPTS]
    noise = folder / "none_pinknoise_8s.wav"
    write_wav(noise, _pink_noise(8.0, -45.0, seed=1))
    files.append(WorkFile(noise, "none", 8.0, ""))
    return files


def english_wer(files: list[WorkFile], texts: list[str]) -> float:
    """Corpus WER over the English files (one reference and hypothesis per file, normalised as the tests do)."""
    import jiwer

    pairs = [(normalise(f.reference), normalise(t)) for f, t in zip(files, texts) if f.language == "en"]
    return round(float(jiwer.wer([r for r, _ in pairs], [h or "<empty>" for _, h in pairs])), 4)


def library_pass(model: Any, files: list[WorkFile], batched: bool) -> tuple[float, list[str]]:
    """faster-whisper used directly, one file after another: the batched pipeline or VAD-filtered sequential."""
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model) if batched else None
    texts = []
    started = time.perf_counter()
    for f in files:
        if pipeline is not None:
            segments, _ = pipeline.transcribe(str(f.path), batch_size=16, beam_size=5)
        else:
            segments, _ = model.transcribe(str(f.path), vad_filter=True, beam_size=5)
        texts.append(" ".join(s.text.strip() for s in segments))
    return time.perf_counter() - started, texts


def _submit(client: httpx.Client, f: WorkFile) -> str:
    with f.path.open("rb") as fh:
        response = client.post("/v1/jobs", files={"file": (f.path.name, fh)})
    response.raise_for_status()
    return str(response.json()["id"])


def app_counters(serve_url: str) -> dict[str, float]:
    """The Ray app's cumulative counters over every replica (`GET /stats`): Whisper batches, windows and busy
    seconds (engine time), Decoder busy seconds (decode and VAD). Replicas report every few seconds."""
    counters: dict[str, float] = {"whisper_batches": 0, "whisper_windows": 0}
    for row in httpx.get(f"{serve_url}/stats", timeout=30).json()["replicas"]:
        name = row["deployment"].lower()
        counters[f"{name}_busy_s"] = counters.get(f"{name}_busy_s", 0.0) + row["busy_s"]
        if name == "whisper":
            counters["whisper_batches"] += row["batches"]
            counters["whisper_windows"] += row["windows"]
    return counters


def service_pass(url: str, serve_url: str, files: list[WorkFile], long_first: bool = False) -> dict[str, Any]:
    """All files submitted at once (concurrently; `long_first`: one after another in the workload's order, the
    longest first, the worst order for the short ones); each job awaited by its own long poll. Wall time,
    per-file latency, texts, and what the Ray app did meanwhile (batches, windows, busy seconds)."""
    before = app_counters(serve_url)
    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        if long_first:
            ids = [_submit(client, f) for f in files]
        else:
            with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
                ids = list(pool.map(lambda f: _submit(client, f), files))

        def finish(job_id: str) -> tuple[float, dict[str, Any]]:
            while True:
                job = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
                if job["status"] in ("succeeded", "failed", "cancelled"):
                    return time.perf_counter() - started, job

        with concurrent.futures.ThreadPoolExecutor(len(ids)) as pool:
            done = list(pool.map(finish, ids))
        wall = max(t for t, _ in done)
        texts = []
        for (_, job), job_id in zip(done, ids):
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
            texts.append(client.get(f"/v1/jobs/{job_id}/transcript", params={"format": "text"}).text.strip())
    latencies = [t for t, _ in done]
    after = app_counters(serve_url)
    app = {key: round(after[key] - before.get(key, 0.0), 2) for key in after}
    # Where each file's time went: queued at the gateway, then at the Ray app until Whisper started, then Whisper.
    jobs = [{k: (job["timings"] or {}).get(k) for k in ("queued_s", "processing_s", "inference_s")} for _, job in done]
    return {"wall_s": wall, "latencies": latencies, "texts": texts, "app": app, "jobs": jobs}


def measure(
    url: str, serve_url: str, model_path: Path, threads: int, runs: int = 1, library: bool = True
) -> dict[str, Any]:
    """The workload through the service at `url` and through faster-whisper (`model_path`), `runs` times
    each, alternating; figures are medians."""
    from faster_whisper import WhisperModel

    folder = Path(tempfile.mkdtemp(prefix="spcsw-mixed-"))
    try:
        files = workload(folder)
        model = WhisperModel(str(model_path), compute_type="int8", cpu_threads=threads)
        library_pass(model, files[-1:], batched=True)  # warm-up
        service_pass(url, serve_url, files[-2:-1])
        batched, naive, service, worst = [], [], [], []
        for _ in range(runs):
            if library:
                batched.append(library_pass(model, files, batched=True))
                naive.append(library_pass(model, files, batched=False))
            service.append(service_pass(url, serve_url, files))
            worst.append(service_pass(url, serve_url, files, long_first=True))
        del model
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    batched = batched or [(float("nan"), [""] * len(files))]
    naive = naive or [(float("nan"), [""] * len(files))]
    walls = [s["wall_s"] for s in service]

    def short_median(passes: list[dict[str, Any]]) -> list[float]:
        return [statistics.median(lat for f, lat in zip(files, s["latencies"]) if f.short) for s in passes]

    short, short_worst = short_median(service), short_median(worst)
    per_run = {  # each run's figure; ratios from the runs side by side
        "mixed_service_s": walls,
        "mixed_batched_pipeline_s": [t for t, _ in batched],
        "mixed_naive_vad_s": [t for t, _ in naive],
        "service_vs_batched_pipeline": [b / w for (b, _), w in zip(batched, walls)],
        "service_vs_naive_vad": [n / w for (n, _), w in zip(naive, walls)],
        "short_file_latency_p50_s": short,
        "short_file_latency_share": [lat / w for lat, w in zip(short, walls)],
        "mixed_service_long_first_s": [s["wall_s"] for s in worst],
        "short_file_latency_share_long_first": [lat / s["wall_s"] for lat, s in zip(short_worst, worst)],
    }
    figures: dict[str, Any] = {
        "mixed_files": len(files),
        "mixed_audio_s": round(sum(f.seconds for f in files), 1),
        "mixed_hindi": any(f.language == "hi" for f in files),
    }
    for key, values in per_run.items():
        figures[key] = round(statistics.median(values), 3)
        if len(values) > 1:
            figures[f"{key}_range"] = {"min": round(min(values), 3), "max": round(max(values), 3)}
    figures |= {
        "mixed_wer_service": english_wer(files, service[0]["texts"]),
        "mixed_wer_batched_pipeline": english_wer(files, batched[0][1]),
        "mixed_wer_naive_vad": english_wer(files, naive[0][1]),
        "mixed_service_app": service[0]["app"],
        "mixed_latencies_s": {f.path.name: round(lat, 2) for f, lat in zip(files, service[0]["latencies"])},
        "mixed_jobs": {f.path.name: job for f, job in zip(files, service[0]["jobs"])},
    }
    return figures


def main() -> None:
    from bench.run import running
    from service.inference.models import resolve

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--service-only", action="store_true", help="skip faster-whisper (quick A/B)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service")
    args = parser.parse_args()
    cache = Path(tempfile.gettempdir()) / "spcsw-bench-cache"
    # The service's own CPU layout (the test harness pins CPU_THREADS=2 unless told otherwise).
    env = {"SPCS_WHISPER_CPU_THREADS": "0", **dict(item.split("=", 1) for item in args.env)}
    with running(args.model, cache, **env) as svc:
        path = resolve(args.model, cache).path
        figures = measure(svc.url, svc.serve_url, path, args.threads, args.runs, not args.service_only)
    for key, value in figures.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
