"""`make bench`: engine speed in-process, the naive faster-whisper baseline, the service over HTTP, and the
Snowflake store at a real account's prices (bench/store.py).

Prints a table and writes `bench/results/latest.json`. Ratios are measured side by side in one run;
every figure is the median of `--runs` runs (min–max kept too). Timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from service.audio import SAMPLE_RATE, decode
from service.config import Settings
from service.inference.engines import load_engine, speech_engines
from service.inference.local import transcribe_audio
from service.inference.types import DecodeOptions
from tests.harness import Service, rss_mb, start_service, stop_service
from tests.integration.helpers import DATA, manifest, submit, wer

LONG = DATA / "en_ljspeech_longform.wav"
JFK = DATA / "en_jfk.flac"
OUT = Path(__file__).parent / "results" / "latest.json"
DOC = Path(__file__).parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def finished(client: httpx.Client, job_id: str, timeout: float = 900) -> dict[str, Any]:
    """The job once finished, by long poll (`?wait=`): no polling load on the machine being measured."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
    raise TimeoutError(f"job {job_id} not finished after {timeout} s")


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def engine_pass(engine, audio, batch_size: int) -> tuple[float, str]:
    """The service's own path in-process: VAD windows, batched decode, stitched text."""
    started = time.perf_counter()
    transcript = transcribe_audio(engine, audio, options=DecodeOptions(language="en"), batch_size=batch_size)
    return time.perf_counter() - started, transcript.text


def naive_pass(model, path: Path) -> tuple[float, str]:
    started = time.perf_counter()
    segments, _ = model.transcribe(str(path))
    text = " ".join(s.text.strip() for s in segments)
    return time.perf_counter() - started, text


def service_pass(url: str, path: Path, copies: int) -> float:
    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        ids = [submit(client, path, language="en").json()["id"] for _ in range(copies)]
        for job_id in ids:
            assert finished(client, job_id)["status"] == "succeeded"
        return time.perf_counter() - started


def engine_batching(engine, windows: int, batch_size: int) -> tuple[float, float]:
    """The engine alone, in-process: `windows` jfk windows one per call, then `batch_size` per call. Their
    ratio is what batching can give at most on this machine, whatever the service does."""
    audio = decode(JFK)
    options = DecodeOptions(language="en")
    started = time.perf_counter()
    for _ in range(windows):
        engine.transcribe_batch([audio], options)
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(0, windows, batch_size):
        engine.transcribe_batch([audio] * min(batch_size, windows - first), options)
    return one_by_one, time.perf_counter() - started


def batching_pass(url: str, serve_url: str, n: int) -> tuple[float, float, float]:
    """n short jobs one at a time, then all at once; returns (sequential s, concurrent s, the mean batch
    size the Whisper deployment formed during the concurrent part)."""
    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        for _ in range(n):
            finished(client, submit(client, JFK, language="en").json()["id"])
        sequential = time.perf_counter() - started
        before = httpx.get(f"{serve_url}/ready").json()
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            ids = list(pool.map(lambda _: submit(client, JFK, language="en").json()["id"], range(n)))
        for job_id in ids:
            finished(client, job_id)
        elapsed = time.perf_counter() - started
        after = httpx.get(f"{serve_url}/ready").json()
        mean_batch = (after["windows"] - before["windows"]) / max(1, after["batches"] - before["batches"])
        return sequential, elapsed, mean_batch


@contextlib.contextmanager
def running(model: str, cache: Path, **env: str) -> Iterator[Service]:
    """The whole service (gateway, Ray Serve app) on the CPU engine, removed with its data afterwards."""
    root = Path(tempfile.mkdtemp(prefix="spcsw-bench-"))
    svc = start_service("ctranslate2", root / "data", cache, root / "service.log", SPCS_WHISPER_MODEL=model, **env)
    try:
        yield svc
    finally:
        stop_service(svc)
        shutil.rmtree(root, ignore_errors=True)


def layout_figures(long_rtf: float, sequential_s: float, concurrent_s: float) -> dict[str, float]:
    return {
        "lone_job_s": round(sequential_s / 16, 3),
        "long_form_rtf": round(long_rtf, 4),
        "sixteen_jobs_s": round(concurrent_s, 2),
    }


def cpu_layout(model: str, cache: Path, cores: int, seconds: float) -> dict[str, dict[str, float]]:
    """The other way to spend the cores: one single-threaded replica per core (the main runs use one replica
    with every core). One run of each figure: a lone jfk job, the long-form file, 16 concurrent jfk jobs."""
    env = {"SPCS_WHISPER_WHISPER_REPLICAS": str(cores), "SPCS_WHISPER_CPU_THREADS": "1"}
    with running(model, cache, SPCS_WHISPER_RAY_NUM_CPUS=str(cores + 1), **env) as svc:
        service_pass(svc.url, JFK, 1)  # warm-up
        long_rtf = service_pass(svc.url, LONG, 1) / seconds
        sequential, concurrent_s, _ = batching_pass(svc.url, svc.serve_url, 16)
    return {f"{cores}x1": layout_figures(long_rtf, sequential, concurrent_s)}


class ReplicaRss:
    """Samples the Whisper replica's resident memory every 0.5 s while a load runs; keeps the peak."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if (proc / "cmdline").read_bytes().startswith(b"ray::ServeReplica:whisper:Whisper"):
                        self.peak = max(self.peak, rss_mb(int(proc.name)))
                except OSError:
                    continue

    def __enter__(self) -> ReplicaRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("ray", "ctranslate2", "faster-whisper", "transformers", "torch", "av", "fastapi", "uvicorn")
    return {name: version(name) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="base")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--skip-store", action="store_true", help="skip the Snowflake store at account prices")
    args = parser.parse_args()
    reference = manifest()[LONG.name]["reference_text"]
    audio = decode(LONG)
    seconds = audio.shape[0] / SAMPLE_RATE
    cache = Path(tempfile.gettempdir()) / "spcsw-bench-cache"
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "model": args.model,
        "versions": versions(),
        "audio_seconds": round(seconds, 2),
        "engine_rtf": {},
        "engine_rtf_range": {},
        "wer_longform": {},
    }
    for name in speech_engines():
        settings = Settings(engine=name, model=args.model, cache_dir=cache, cpu_threads=args.threads)
        engine = load_engine(settings.inference)
        engine_pass(engine, audio[: 5 * SAMPLE_RATE], settings.inference.batch_size)  # warm-up
        runs = [engine_pass(engine, audio, settings.inference.batch_size) for _ in range(args.runs)]
        times = [t / seconds for t, _ in runs]
        result["engine_rtf"][name] = stats(times)["median"]
        result["engine_rtf_range"][name] = stats(times)
        result["wer_longform"][name] = round(wer(reference, runs[0][1]), 4)
        print(f"engine {name:12s} RTF {stats(times)}  WER {result['wer_longform'][name]}", flush=True)
        if name == "ctranslate2":
            alone, batched = engine_batching(engine, 16, settings.inference.batch_size)
            result["engine_batching_ceiling"] = round(alone / batched, 3)
            print(f"engine batching ceiling (16 windows, 1 per call vs {settings.inference.batch_size}): "
                  f"{alone:.1f} s vs {batched:.1f} s = {result['engine_batching_ceiling']}", flush=True)  # fmt: skip
        del engine

    from faster_whisper import WhisperModel

    from service.inference.models import resolve

    model = WhisperModel(str(resolve(args.model, cache).path), cpu_threads=args.threads)
    naive = [naive_pass(model, LONG) for _ in range(args.runs)]
    result["naive_engine_rtf"] = stats([t / seconds for t, _ in naive])["median"]
    result["naive_engine_rtf_range"] = stats([t / seconds for t, _ in naive])
    result["wer_longform"]["naive"] = round(wer(reference, naive[0][1]), 4)
    print(f"naive faster-whisper RTF {result['naive_engine_rtf']}  WER {result['wer_longform']['naive']}", flush=True)
    del model

    if not args.skip_service:
        with running(args.model, cache, SPCS_WHISPER_CPU_THREADS=str(args.threads)) as svc:
            service_pass(svc.url, LONG, 1)  # warm-up
            with ReplicaRss() as replica:
                service_times = [service_pass(svc.url, LONG, 1) / seconds for _ in range(args.runs)]
                batching = [batching_pass(svc.url, svc.serve_url, 16) for _ in range(args.runs)]
            result["service_rtf"] = stats(service_times)["median"]
            result["service_rtf_range"] = stats(service_times)
            result["service_vs_engine"] = round(result["engine_rtf"]["ctranslate2"] / result["service_rtf"], 3)
            result["service_vs_naive"] = round(result["naive_engine_rtf"] / result["service_rtf"], 3)
            speedups = [sequential / concurrent_s for sequential, concurrent_s, _ in batching]
            result["batching_speedup"] = stats(speedups)["median"]
            result["batching_speedup_range"] = stats(speedups)
            result["mean_batch_size"] = stats([mean for _, _, mean in batching])["median"]
            result["mean_batch_size_range"] = stats([mean for _, _, mean in batching])
            result["gateway_rss_mb"] = round(rss_mb(svc.process.pid), 1)
            result["replica_rss_mb"] = round(replica.peak, 1)
            print(
                f"service RTF {stats(service_times)}  vs engine {result['service_vs_engine']}  "
                f"vs naive {result['service_vs_naive']}  batching {stats(speedups)} "
                f"(mean batch {result['mean_batch_size']})  gateway RSS {result['gateway_rss_mb']} MB  "
                f"replica RSS {result['replica_rss_mb']} MB",
                flush=True,
            )
        one = f"1x{args.threads}"
        result["cpu_layouts"] = {
            one: layout_figures(result["service_rtf"], *batching[0][:2]),
            **cpu_layout(args.model, cache, args.threads, seconds),
        }
        print(f"CPU layouts (replicas x threads): {result['cpu_layouts']}", flush=True)

    if not args.skip_service:
        from bench.mixed import measure as measure_mixed
        from service.inference.models import resolve

        # The service as deployed by default (its own CPU layout), against faster-whisper on the same weights.
        with running(args.model, cache, SPCS_WHISPER_CPU_THREADS="0") as svc:
            mixed = measure_mixed(svc.url, svc.serve_url, resolve(args.model, cache).path, args.threads, args.runs)
        result.update(mixed)
        print(f"mixed workload: {json.dumps(mixed)}", flush=True)

    from bench.speakers import measure as measure_speakers

    result.update(measure_speakers(args.runs, args.model))

    from bench.submit_load import measure

    submit = measure()
    print(
        f"submit p50 {submit['submit_p50_ms']} ms, p99 {submit['submit_p99_ms']} ms, "
        f"{submit['submit_rps']} req/s, 5xx {submit['submit_5xx']}",
        flush=True,
    )
    result.update({k: v for k, v in submit.items() if k != "gateway_rss_mb"})
    result["gateway_rss_mb_after_submit_load"] = submit["gateway_rss_mb"]

    if not args.skip_store:
        from bench.store import measure as measure_store

        result.update(measure_store())

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    update_doc(result)


def update_doc(result: dict[str, Any]) -> None:
    """Replace the generated table in docs/benchmarks.md with this run's figures."""

    def ranged(key: str) -> str:
        rng = result.get(f"{key}_range")
        return f"{result[key]} ({rng['min']}–{rng['max']})" if rng else str(result[key])

    rows = [
        ("machine", result["machine"]),
        ("date", result["date"]),
        ("versions", ", ".join(f"{k} {v}" for k, v in result["versions"].items())),
        ("model / audio", f"{result['model']} / {result['audio_seconds']} s long-form"),
    ]
    for name, rng in result["engine_rtf_range"].items():
        rows.append((f"engine_rtf.{name}", f"{rng['median']} ({rng['min']}–{rng['max']})"))
    rows.append(("naive_engine_rtf", ranged("naive_engine_rtf")))
    rows.append(("long-form WER", ", ".join(f"{k} {v}" for k, v in result["wer_longform"].items())))
    for key in (
        "service_rtf",
        "service_vs_engine",
        "service_vs_naive",
        "batching_speedup",
        "engine_batching_ceiling",
        "mean_batch_size",
        "mixed_files",
        "mixed_audio_s",
        "mixed_service_s",
        "mixed_batched_pipeline_s",
        "mixed_naive_vad_s",
        "service_vs_batched_pipeline",
        "service_vs_naive_vad",
        "mixed_wer_service",
        "mixed_wer_batched_pipeline",
        "mixed_wer_naive_vad",
        "short_file_latency_p50_s",
        "short_file_latency_share",
        "mixed_service_long_first_s",
        "short_file_latency_share_long_first",
        "speakers_conversation_off_s_per_audio_s",
        "speakers_conversation_on_s_per_audio_s",
        "speakers_conversation_on_vs_off",
        "speakers_conversation_embed_cluster_s_per_audio_s",
        "speakers_conversation_der",
        "speakers_conversation_found",
        "speakers_conversation_detected_off_s_per_audio_s",
        "speakers_conversation_detected_on_s_per_audio_s",
        "speakers_conversation_detected_on_vs_off",
        "speakers_conversation_detected_der",
        "speakers_conversation_detected_found",
        "speakers_longform_off_s_per_audio_s",
        "speakers_longform_on_s_per_audio_s",
        "speakers_longform_on_vs_off",
        "speakers_longform_embed_cluster_s_per_audio_s",
        "speakers_longform_found",
        "submit_p50_ms",
        "submit_p99_ms",
        "submit_rps",
        "submit_5xx",
        "submit_single_client_p50_ms",
        "submit_gateway_cpu_ms_per_request",
        "submit_client_cpu_ms_per_request",
        "gateway_rss_mb",
        "gateway_rss_mb_after_submit_load",
        "replica_rss_mb",
        "store_files_per_batch",
        "store_jobs_per_s",
        "store_warehouse_statements_per_job",
        "store_charged_s_per_job",
        "store_transcribe_8_rows_statements",
        "store_idle_table_statements",
        "store_idle_statements_per_hour",
    ):
        if key in result:
            rows.append((key, ranged(key)))
    for layout, figures in result.get("cpu_layouts", {}).items():
        rows.append((f"cpu layout {layout} (replicas x threads)", ", ".join(f"{k} {v}" for k, v in figures.items())))
    table = "| figure | median (min–max) |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{table}\n{END}{tail}")


if __name__ == "__main__":
    main()
