"""`make bench-scale`: does the cluster scale with its GPUs? (issue 19)

For N = 1, 2, 4 worker nodes (tests/cluster.py `LocalCluster`: a Ray head and N `ray start` worker processes
with one logical GPU each, in the worker spec's rejoin loop), the Ray Serve app with N Whisper replicas on the
STAND-IN engine (service/inference/engine_standin.py: each batch of B windows holds its replica
`(fixed_s + per_window_s × B) × STANDIN_TIME_SCALE` seconds, no CPU, one fake segment per window) and the
gateway (SQLite store) run one stage batch of several hundred short and long WAV files, built from tests/data
and cached under data/bench-scale/. Per N: wall time from the batch's submission to its last job finished,
throughput in audio seconds per second, scaling efficiency throughput_N / (N × throughput_1), and what every
part was doing meanwhile: the Whisper replicas' busy fraction and mean batch size, the Decoders' busy
fraction, the gateway's CPU, the jobs it had in flight, and the CPU of every process of the cluster.

This machine's few cores must decode (PyAV + Silero VAD) the real audio for N stand-in GPUs, so the stand-in is
slowed (`--time-scale`) until N = 4 stand-in GPUs need well under what the cores can decode: the GPUs, not the
cores, must be the bottleneck, or the figures measure this machine. The absolute throughput is therefore
meaningless; the ratios (efficiency) are the point.

Prints a table and writes bench/results/scale-<timestamp>.json. Quick run:
`python -m bench.scale --workers 1,2 --files 60`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.audio import SAMPLE_RATE, decode
from service.inference.engine_standin import CURVES
from tests.cluster import LocalCluster, start_ray_app, stop_process
from tests.harness import start_gateway, stop_gateway, wait_ready
from tests.media import write_wav

DATA = Path(__file__).parent.parent / "tests" / "data"
SOURCES = ("en_ljspeech_longform.wav", "en_jfk.flac")
CACHE = Path(__file__).parent.parent / "data" / "bench-scale"
RESULTS = Path(__file__).parent / "results"
STAGE, WARMUP = "AUDIO", "WARMUP"
SHORT_S, LONG_S = (4.0, 15.0), (60.0, 180.0)
CLK_TCK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------- the stage


def _pool() -> np.ndarray:
    """The speech every file is cut from: the long-form file, 0.3 s of silence, jfk (16 kHz mono float32)."""
    gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
    parts = []
    for name in SOURCES:
        parts += [decode(DATA / name), gap]
    return np.concatenate(parts)


def build_stage(files: int, long_share: float, seed: int, root: Path = CACHE) -> tuple[Path, list[dict[str, Any]]]:
    """`files` WAVs (16 kHz mono), `long_share` of them 60–180 s and the rest 4–15 s, each a slice of `_pool`
    looped at a random offset, in a random order of short and long (the file names give the order). Cached
    under `root` by (files, share, seed): built once. Returns (folder, manifest)."""
    folder = root / f"stage-{files}-{long_share:g}-{seed}"
    listed = folder / "manifest.json"
    if listed.exists():
        manifest = json.loads(listed.read_text())
        if all((folder / f["name"]).exists() for f in manifest):
            return folder, manifest
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    pool = _pool()
    looped = np.concatenate([pool, pool])
    longs = round(files * long_share)
    kinds = ["long"] * longs + ["short"] * (files - longs)
    rng.shuffle(kinds)
    manifest = []
    for index, kind in enumerate(kinds):
        seconds = round(rng.uniform(*(LONG_S if kind == "long" else SHORT_S)), 2)
        start = rng.randrange(0, pool.shape[0])
        name = f"f{index:04d}_{kind}.wav"
        write_wav(folder / name, looped[start : start + int(seconds * SAMPLE_RATE)])
        manifest.append({"name": name, "kind": kind, "seconds": seconds})
    listed.write_text(json.dumps(manifest))
    return folder, manifest


def warmup_stage(files: int) -> Path:
    """A few short files for a warm-up batch (every replica gets a call before the measured batch)."""
    folder = CACHE / f"warmup-{files}"
    if not folder.exists() or len(list(folder.glob("*.wav"))) != files:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        pool = _pool()
        for index in range(files):
            write_wav(folder / f"w{index:03d}.wav", pool[index * SAMPLE_RATE : (index + 8) * SAMPLE_RATE])
    return folder


# ------------------------------------------------------------------------------------------ CPU accounting


@dataclass(frozen=True)
class Proc:
    parent: int
    cpu_s: float  # user + system
    started: int  # clock ticks after boot: with the pid, names the process (pids are reused)


def _stat(pid: int) -> Proc | None:
    """A process's /proc/<pid>/stat figures; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return Proc(int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[19]))


def process_tree(marker: str, roots: set[int]) -> dict[int, Proc]:
    """The processes whose command line holds `marker` (a cluster's temp dir), those in `roots`, and every process
    below them (a raylet's workers and agents rename themselves `ray::...`)."""
    procs = {int(e.name): p for e in Path("/proc").iterdir() if e.name.isdigit() and (p := _stat(int(e.name)))}
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.parent, []).append(pid)
    todo = [pid for pid in procs if pid in roots or marker in _cmdline(pid)]
    tree: dict[int, Proc] = {}
    while todo:
        pid = todo.pop()
        if pid not in tree and pid in procs:
            tree[pid] = procs[pid]
            todo += children.get(pid, [])
    return tree


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores (/proc/stat): busy = all but idle and iowait."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return float(sum(values) - values[3] - values[4]), float(sum(values))


def busy_cores(seconds: float) -> float:
    """Cores busy on average over the next `seconds` (anything running on the machine)."""
    before = machine_busy()
    time.sleep(seconds)
    busy, total = (a - b for a, b in zip(machine_busy(), before))
    return busy / total * CORES if total else 0.0


GROUPS = (  # process title (a Ray worker renames itself `ray::...`) -> part of the system
    ("ray::ServeReplica:whisper:Decoder", "decoders"),
    ("ray::ServeReplica:whisper:Whisper", "whisper replicas"),
    ("ray::ProxyActor", "serve proxy"),
    ("ray::ServeController", "serve controller"),
)


class ProcessCpu:
    """CPU seconds of every process this bench started: the gateway, the Ray app's driver, and every process of
    the cluster (found by its temp dir in their command lines, with their descendants), grouped by part."""

    def __init__(self, cluster: LocalCluster, gateway: int, app: int) -> None:
        self.marker, self.named = str(cluster.temp_dir), {gateway: "gateway", app: "ray-app driver"}

    def snapshot(self) -> dict[int, tuple[str, float]]:
        tree = process_tree(self.marker, set(self.named))
        return {pid: (self._group(pid), proc.cpu_s) for pid, proc in tree.items()}

    def _group(self, pid: int) -> str:
        if pid in self.named:
            return self.named[pid]
        title = _cmdline(pid)
        return next((group for prefix, group in GROUPS if title.startswith(prefix)), "ray system")

    @staticmethod
    def delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds per group between two snapshots (a process started meanwhile counts from zero)."""
        groups: dict[str, float] = {}
        for pid, (group, seconds) in after.items():
            groups[group] = groups.get(group, 0.0) + seconds - (before[pid][1] if pid in before else 0.0)
        return groups


# --------------------------------------------------------------------------------------------- sampling


class Sampler:
    """Every second while the batch runs: the gateway's jobs in flight and queued (/metrics); every other second,
    in turn, the Ray app's running replicas (/ready) and its replicas' counters (/stats, with the time read)."""

    def __init__(self, url: str, serve_url: str) -> None:
        self.url, self.serve_url = url, serve_url
        self.in_flight: list[float] = []
        self.queued: list[float] = []
        self.replicas: list[dict[str, int]] = []
        self.capacity: list[int] = []
        self.stats: list[tuple[float, dict[str, dict[str, Any]]]] = []  # (seconds since the start, /stats)
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            tick = 0
            while not self._stop.wait(1.0):
                tick += 1
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    text = client.get(f"{self.url}/metrics").text
                    self.in_flight.append(_gauge(text, "spcs_whisper_jobs_in_flight"))
                    self.queued.append(_gauge(text, "spcs_whisper_queue_depth"))
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    if tick % 2 == 0:
                        ready = client.get(f"{self.serve_url}/ready").json()
                        self.replicas.append(ready.get("replicas", {}))
                        self.capacity.append(ready.get("job_capacity", 0))
                    else:
                        rows = client.get(f"{self.serve_url}/stats").json()["replicas"]
                        self.stats.append((time.monotonic() - self.started, {r["replica"]: r for r in rows}))

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def steady_batch(self, seconds: float, share: float = 0.15) -> float | None:
        """Mean Whisper batch between `share` and 1 - `share` of the batch's `seconds`: without the first
        and the last round, which run part-filled batches whatever the app does."""
        inside = [rows for at, rows in self.stats if share * seconds <= at <= (1 - share) * seconds]
        if len(inside) < 2:
            return None
        moved = stats_delta(inside[0], inside[-1], "Whisper")
        return round(moved["windows"] / moved["batches"], 2) if moved["batches"] else None

    def decoders(self) -> tuple[int, int]:
        """(fewest, most) Decoder replicas seen running."""
        counts = [r.get("Decoder", 0) for r in self.replicas] or [0]
        return min(counts), max(counts)


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def replica_stats(serve_url: str) -> dict[str, dict[str, Any]]:
    """The Ray app's per-replica counters (/stats), by replica id."""
    rows = httpx.get(f"{serve_url}/stats", timeout=30).json()["replicas"]
    return {row["replica"]: row for row in rows}


def stats_delta(before: dict[str, dict], after: dict[str, dict], deployment: str) -> dict[str, Any]:
    """Summed counters of one deployment's replicas between two /stats readings, and how many replicas worked."""
    total = {"busy_s": 0.0, "batches": 0, "windows": 0, "replicas": 0}
    for replica, row in after.items():
        if row["deployment"] != deployment:
            continue
        old = before.get(replica, {})
        moved = {key: row[key] - old.get(key, 0) for key in ("busy_s", "batches", "windows")}
        if moved["batches"]:
            total["replicas"] += 1
        for key, value in moved.items():
            total[key] += value
    return total


def settled_stats(serve_url: str) -> dict[str, dict[str, Any]]:
    """/stats once two readings 0.5 s apart agree (reports are fire-and-forget, the last may be on its way)."""
    reading = replica_stats(serve_url)
    for _ in range(20):
        time.sleep(0.5)
        again = replica_stats(serve_url)
        if again == reading:
            return again
        reading = again
    return reading


# ------------------------------------------------------------------------------------------------ one N


def wait_replicas(serve_url: str, whisper: int, timeout: float = 240) -> dict[str, Any]:
    """Until the Ray app runs `whisper` Whisper replicas and a Decoder; its /ready answer."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            ready = httpx.get(f"{serve_url}/ready", timeout=10).json()
            running = ready.get("replicas", {})
            if running.get("Whisper", 0) >= whisper and running.get("Decoder", 0) >= 1:
                return ready
        if time.monotonic() > deadline:
            raise TimeoutError(f"{whisper} Whisper replicas not running after {timeout} s")
        time.sleep(1)


def run_batch(client: httpx.Client, stage: str, timeout: float) -> tuple[dict[str, Any], float]:
    """POST /v1/batches over a whole stage and poll it (1 s) until done: (batch, seconds the client saw)."""
    started = time.monotonic()
    response = client.post("/v1/batches", json={"stage": f"@{stage}", "pattern": r".*[.]wav", "language": "en"})
    response.raise_for_status()
    batch = response.json()
    while batch["status"] == "running":
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"batch not done after {timeout} s: {batch['counts']}")
        time.sleep(1.0)
        batch = client.get(f"/v1/batches/{batch['id']}").json()
    return batch, time.monotonic() - started


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def measure(workers: int, args: argparse.Namespace, stage: Path, warmup: Path, root: Path) -> dict[str, Any]:
    """One cluster of `workers` GPU nodes, app and gateway; a warm-up batch, then the measured one."""
    cluster = LocalCluster(workers=workers, cpus_per_node=args.cpus_per_node)
    app = gateway = None
    app_env = {
        "SPCS_WHISPER_ENGINE": "standin",
        "SPCS_WHISPER_STANDIN_GPU": args.gpu,
        "SPCS_WHISPER_STANDIN_TIME_SCALE": str(args.time_scale),
        "SPCS_WHISPER_MAX_BATCH_SIZE": str(args.max_batch_size),
        "SPCS_WHISPER_DECODER_MIN_REPLICAS": str(args.decoders_min),
        "SPCS_WHISPER_DECODER_MAX_REPLICAS": str(max(args.decoders_min, workers * args.decoders_per_worker)),
        "SPCS_WHISPER_DOWNSCALE_DELAY_S": "600",  # no replica leaves mid-run
        "RAY_DEDUP_LOGS": "0",
    }
    mounts = json.dumps({STAGE: str(stage), WARMUP: str(warmup)})
    began = time.monotonic()
    try:
        cluster.start()
        cluster.wait_workers(workers)
        serve_url, app = start_ray_app(cluster, root / "app", root / "models", root / "ray-app.log", **app_env)
        cluster.app = app
        wait_replicas(serve_url, workers)
        url, gateway = start_gateway(
            root / "gateway", serve_url, root / "gateway.log", SPCS_WHISPER_STAGE_MOUNTS=mounts,
            SPCS_WHISPER_DRAIN_TIMEOUT_S="0",  # stopped after the batch, or interrupted: nothing worth waiting for
        )  # fmt: skip
        wait_ready(url, 60)
        time.sleep(6)  # the dispatcher reads job_capacity from /ready every 5 s
        up = time.monotonic() - began
        print(f"  N={workers}: cluster ({cluster.temp_dir}), app and gateway up in {up:.0f} s", flush=True)
        with httpx.Client(base_url=url, timeout=60) as client:
            warm, warm_s = run_batch(client, WARMUP, 300)
            if warm["status"] != "succeeded":
                raise RuntimeError(f"warm-up batch {warm['status']}: {warm['counts']}")
            print(f"  N={workers}: warm-up {warm['files']} files in {warm_s:.1f} s", flush=True)
            cpu = ProcessCpu(cluster, gateway.pid, app.pid)
            before_stats = settled_stats(serve_url)
            before_cpu, before_machine, before_self = cpu.snapshot(), machine_busy(), _self_cpu()
            with Sampler(url, serve_url) as sampler:
                batch, client_s = run_batch(client, STAGE, args.timeout)
            after_cpu, after_machine = cpu.snapshot(), machine_busy()
            used = {**cpu.delta(before_cpu, after_cpu), "bench client": _self_cpu() - before_self}
            after_stats = settled_stats(serve_url)
            jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in batch["jobs"]]
        return figures(workers, args, batch, jobs, client_s, sampler, before_stats, after_stats, used,
                       before_machine, after_machine)  # fmt: skip
    except Exception:
        for log in ("ray-app.log", "gateway.log"):
            if (root / log).exists():
                print(f"--- {log} (tail)\n{(root / log).read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        stopping = time.monotonic()
        if gateway is not None:
            stop_gateway(gateway)
        if app is not None:
            stop_process(app)
        cluster.stop()  # with the raylets' agents, which outlive their raylet
        print(f"  N={workers}: stopped in {time.monotonic() - stopping:.0f} s", flush=True)


def figures(
    workers: int,
    args: argparse.Namespace,
    batch: dict[str, Any],
    jobs: list[dict[str, Any]],
    client_s: float,
    sampler: Sampler,
    before: dict[str, dict],
    after: dict[str, dict],
    cpu: dict[str, float],
    machine_before: tuple[float, float],
    machine_after: tuple[float, float],
) -> dict[str, Any]:
    finished = [_timestamp(j["timings"]["finished_at"]) for j in jobs if j["timings"]["finished_at"]]
    wall = max(finished) - _timestamp(batch["created_at"]) if finished else client_s
    audio = sum(j["audio_seconds"] or 0.0 for j in jobs)
    whisper, decoder = stats_delta(before, after, "Whisper"), stats_delta(before, after, "Decoder")
    fewest, most = sampler.decoders()
    decoders = max(most, decoder["replicas"], 1)
    busy_samples = [n for n, q in zip(sampler.in_flight, sampler.queued) if q > 0]
    short = [j["timings"]["processing_s"] for j in jobs if "_short" in j["source"] and j["timings"]["processing_s"]]
    curve = CURVES[args.gpu]
    full = curve.batch_seconds(args.max_batch_size) * args.time_scale / args.max_batch_size  # s per window, full
    busy, total = (a - b for a, b in zip(machine_after, machine_before))
    # The machine's cores over the client's wall (the /proc/stat readings bracket it), ours over the same.
    machine = busy / total * CORES if total else 0.0
    ours = sum(cpu.values()) / client_s
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    return {
        "workers": workers,
        "files": len(jobs),
        "statuses": statuses,
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 2),
        "client_wall_s": round(client_s, 2),
        "throughput": round(audio / wall, 2),
        # What N stand-in GPUs could give at most: every window in a full batch, back to back.
        "gpu_bound_throughput": round(workers * audio / (whisper["windows"] * full), 2) if whisper["windows"] else None,
        "whisper_busy": round(whisper["busy_s"] / (wall * workers), 3),
        "whisper_replicas_used": whisper["replicas"],
        "windows": whisper["windows"],
        "engine_calls": whisper["batches"],
        "mean_batch": round(whisper["windows"] / whisper["batches"], 2) if whisper["batches"] else None,
        "steady_mean_batch": sampler.steady_batch(client_s),
        "decoders": f"{fewest}-{most}" if fewest != most else str(most),
        "decoder_busy": round(decoder["busy_s"] / (wall * decoders), 3),
        "decoder_process_cpu": round(cpu.get("decoders", 0.0) / (wall * decoders), 3),
        "gateway_cpu": round(cpu.get("gateway", 0.0) / wall, 3),
        "jobs_in_flight_mean": round(statistics.mean(sampler.in_flight), 1) if sampler.in_flight else None,
        # ...while jobs were still queued at the gateway: at job_capacity, the gateway kept the Ray app full.
        "jobs_in_flight_while_queued": round(statistics.mean(busy_samples), 1) if busy_samples else None,
        "job_capacity": max(sampler.capacity) if sampler.capacity else None,
        "machine_cpu": round(machine, 2),  # cores busy on average (of CORES), whoever used them
        "our_cpu": round(ours, 2),  # ...of which the processes of this bench (the rest: anything else running)
        "other_cpu": round(max(machine - ours, 0.0), 2),
        "cpu_cores": f"{machine:.2f} ({ours:.2f})",
        "cpu_s_by_part": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
        "short_processing_p50_s": round(statistics.median(short), 2) if short else None,
    }


# ----------------------------------------------------------------------------------------------- report

COLUMNS = (  # (header, key, format)
    ("N", "workers", "{}"),
    ("audio s", "audio_s", "{:.0f}"),
    ("wall s", "wall_s", "{:.1f}"),
    ("audio s/s", "throughput", "{:.1f}"),
    ("GPU-bound s/s", "gpu_bound_throughput", "{:.1f}"),
    ("efficiency", "efficiency", "{:.3f}"),
    ("Whisper busy", "whisper_busy", "{:.2f}"),
    ("mean batch", "mean_batch", "{:.1f}"),
    ("mean batch 15–85 %", "steady_mean_batch", "{:.1f}"),
    ("decoders", "decoders", "{}"),
    ("Decoder busy", "decoder_busy", "{:.3f}"),
    ("Decoder CPU", "decoder_process_cpu", "{:.3f}"),
    ("gateway CPU", "gateway_cpu", "{:.3f}"),
    ("jobs in flight (queue not empty)", "jobs_in_flight_while_queued", "{:.0f}"),
    ("job capacity", "job_capacity", "{}"),
    ("cores busy (ours)", "cpu_cores", "{}"),
    ("short job p50 s", "short_processing_p50_s", "{:.2f}"),
)


def table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        return "–" if row.get(key) is None else fmt.format(row[key])

    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, k, f) for _, k, f in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4", help="worker node counts (one logical GPU each)")
    parser.add_argument("--files", type=int, default=300, help="files in the stage batch")
    parser.add_argument("--long-share", type=float, default=0.1, help="share of 60–180 s files (rest 4–15 s)")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--gpu", choices=sorted(CURVES), default="a10g", help="the stand-in's timing curve")
    parser.add_argument("--time-scale", type=float, default=1.5, help="STANDIN_TIME_SCALE: multiplies every hold")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--cpus-per-node", type=int, default=2, help="logical CPUs per Ray node")
    parser.add_argument("--decoders-min", type=int, default=1, help="DECODER_MIN_REPLICAS")
    parser.add_argument("--decoders-per-worker", type=int, default=1, help="DECODER_MAX_REPLICAS = this × N")
    parser.add_argument("--timeout", type=float, default=1800, help="longest one batch may take")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (logs, the gateway's store)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does (the `finally` blocks stop every process)

    signal.signal(signal.SIGTERM, interrupted)
    stage, manifest = build_stage(args.files, args.long_share, args.seed)
    idle_before = busy_cores(3.0)
    if idle_before > 0.25:
        print(f"warning: {idle_before:.2f} of {CORES} cores already busy before the bench: figures will be noisy")
    warmup = warmup_stage(8)
    curve = CURVES[args.gpu]
    hold = curve.batch_seconds(args.max_batch_size) * args.time_scale
    rtf = curve.realtime_factor(args.max_batch_size) / args.time_scale
    longs = [f["seconds"] for f in manifest if f["kind"] == "long"]
    shorts = [f["seconds"] for f in manifest if f["kind"] == "short"]
    print(
        f"stage: {len(manifest)} WAV files, {len(shorts)} short ({sum(shorts):.0f} s) + {len(longs)} long "
        f"({sum(longs):.0f} s) = {sum(shorts) + sum(longs):.0f} s of audio, in {stage}\n"
        f"stand-in {curve.gpu} curve × {args.time_scale:g}: a batch of {args.max_batch_size} holds {hold:.2f} s, "
        f"{rtf:.1f}× real time per stand-in GPU with full 30 s windows (ratios, not absolute throughput, are "
        f"the point)",
        flush=True,
    )
    rows = []
    try:
        for workers in counts:
            root = Path(tempfile.mkdtemp(prefix="spcsw-scale-"))
            try:
                row = measure(workers, args, stage, warmup, root)
            finally:
                if args.keep:
                    print(f"  N={workers}: logs and store kept in {root}", flush=True)
                else:
                    shutil.rmtree(root, ignore_errors=True)
            rows.append(row)
            print(f"  N={workers}: {json.dumps(row)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        raise SystemExit(130) from None
    base = next((r["throughput"] for r in rows if r["workers"] == 1), None)
    for row in rows:
        row["efficiency"] = round(row["throughput"] / (row["workers"] * base), 3) if base else None
    print(table(rows), flush=True)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {CORES} cores, {platform.python_version()}",
        "stage": {
            "files": len(manifest),
            "short_files": len(shorts),
            "long_files": len(longs),
            "audio_s": round(sum(shorts) + sum(longs), 1),
            "format": "WAV 16 kHz mono s16",
        },
        "standin": {
            "gpu": args.gpu,
            "curve": {"fixed_s": curve.fixed_s, "per_window_s": curve.per_window_s},
            "time_scale": args.time_scale,
            "max_batch_size": args.max_batch_size,
            "full_batch_hold_s": round(hold, 3),
            "realtime_factor_per_gpu_full_batch": round(rtf, 2),
        },
        "cores_busy_before": round(idle_before, 2),
        "cpus_per_node": args.cpus_per_node,
        "decoder_replicas": f"min {args.decoders_min}, max {args.decoders_per_worker} × N",
        "runs": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"scale-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
