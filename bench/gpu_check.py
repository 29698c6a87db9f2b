"""`make gpu-check`: on a machine with an NVIDIA GPU, within 8 minutes, both engines across batch sizes 1–64 and
the whole service end to end, into one JSON of figures (bench/results/gpu-check.json).

Stages, each timed (`stage_s`) and written to the JSON as soon as it ends (a run cut short keeps what it had):

1. checks: nvidia-smi is there (else exit 2 before anything else), torch is a CUDA build and sees the GPU,
   ctranslate2 sees it too and can load CUDA 12's cuBLAS (`libcublas.so.12`, which PyPI's ctranslate2 needs
   and PyPI's CUDA 13 torch does not bring: `make gpu-check` installs `nvidia-cublas-cu12`, and this script
   puts its folder on LD_LIBRARY_PATH for everything it starts). GPU name, driver, memory, versions.
2. engines: bench/gpu.py's sweep, each engine in a process of its own (its GPU memory is freed when it ends),
   float16, batch sizes 1–64 of the long-form file's 30 s windows, audio s/s and GPU memory per size. The
   engines share the time left before the service's reserve; a size that would overrun its engine's share is
   skipped with every larger one, and the JSON says which and why (`skipped`, `skip_reason`).
3. service: the whole service (gateway, Ray Serve app) on the GPU with the GPU's default engine
   (`SPCS_WHISPER_DEVICE=cuda`), the 16 files of bench/mixed.py submitted at once, once after a warm-up:
   wall time, audio s/s, the Whisper batches formed (count, mean size, mean size per second of the pass,
   from the app's counters), per-file latency, English WER, and GPU memory (nvidia-smi sampled every 0.25 s:
   before the start, with the model loaded, peak during the pass). The service is stopped afterwards, also on
   Ctrl-C or SIGTERM (`timeout`).

A real run replaces the block between the gpu-check markers of docs/benchmarks.md's "## GPU" section with its
date and figures (`--no-doc`: not). `--cpu-dry-run` runs the same code on the CPU without a GPU (no checks
enforced, batch sizes 1 and 2, one timed run, ctranslate2 for the service) into
bench/results/gpu-check-cpu-dry-run.json, and never touches the docs: the way to try this script here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx

from bench.gpu import BATCH_SIZES, CACHE, GpuMemory, gpu_used_mb, nvidia_smi
from service.inference.engines import speech_engines

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "gpu-check.json"
DRY_OUT = RESULTS / "gpu-check-cpu-dry-run.json"
DOC = Path(__file__).parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
CUBLAS12 = "libcublas.so.12"
ROW, RESULT = "GPU-CHECK-ROW ", "GPU-CHECK-RESULT "
STOP_RESERVE_S = 30.0  # kept at the end of the deadline to stop the service and write the JSON


class Interrupted(BaseException):
    """SIGTERM (e.g. from `timeout`): raised in the main thread so every `finally` runs (the service stops)."""


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(f"stopped by signal {signum}")


# ---------------------------------------------------------------------------------------------------------------
# Worker processes: the checks and each engine's sweep run in a Python of their own, so that this process never
# holds a CUDA context (nvidia-smi's figures are the engine's or the service's alone) and a hung or crashed
# engine is killed at its budget without taking the run along.


def check_worker() -> dict[str, Any]:
    """What torch and ctranslate2 say about CUDA here."""
    import ctypes

    import ctranslate2
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cuda_available": torch.cuda.is_available(),
        "ctranslate2": ctranslate2.__version__,
        "ctranslate2_cuda_devices": ctranslate2.get_cuda_device_count(),
    }
    if info["torch_cuda_available"]:
        info["torch_device"] = torch.cuda.get_device_name(0)
        info["torch_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    if info["ctranslate2_cuda_devices"] > 0:
        info["ctranslate2_cuda_compute_types"] = sorted(ctranslate2.get_supported_compute_types("cuda"))
    try:
        ctypes.CDLL(CUBLAS12)
        info["cublas12"] = True
    except OSError as exc:
        info["cublas12"] = str(exc)
    return info


def engine_worker(args: argparse.Namespace) -> dict[str, Any]:
    from bench.gpu import long_form_windows, sweep

    windows = long_form_windows()
    return sweep(
        args.engine_worker,
        args.model,
        windows,
        args.runs,
        batch_sizes=args.batch_sizes,
        device="cpu" if args.cpu_dry_run else "cuda",
        budget_s=max(1.0, args.until - time.time()),
        on_row=lambda row: print(ROW + json.dumps(row), flush=True),
    )


def run_worker(argv: list[str], timeout_s: float, on_row: Any = None) -> dict[str, Any]:
    """`python -m bench.gpu_check ARGV` as a worker, killed after `timeout_s`. Its result, or an error with the
    end of its output; rows it printed before a kill are kept (`rows`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.gpu_check", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail: deque[str] = deque(maxlen=30)
    rows: list[dict[str, Any]] = []
    found: dict[str, Any] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(ROW):
                rows.append(json.loads(line[len(ROW) :]))
                if on_row is not None:
                    on_row(rows[-1])
            elif line.startswith(RESULT):
                found.update(json.loads(line[len(RESULT) :]))
            else:
                tail.append(line.rstrip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    if found and proc.returncode == 0:
        return found
    why = f"killed after {timeout_s:.0f} s (its time budget)" if timed_out else f"exited with {proc.returncode}"
    return {"error": f"worker {' '.join(argv[:2])} {why}", "rows": rows, "log_tail": list(tail)}


# ---------------------------------------------------------------------------------------------------------------
# The run.


def cublas12_dir() -> str | None:
    """The folder of nvidia-cublas-cu12's libcublas.so.12 in this Python's site-packages, if installed."""
    for entry in sys.path:
        for found in sorted(Path(entry or ".").glob(f"nvidia/*/lib/{CUBLAS12}")):  # nvidia/cublas/lib
            return str(found.parent)
    return None


def gpu_info() -> dict[str, Any] | None:
    values = nvidia_smi("name", "driver_version", "memory.total", "count")
    if values is None:
        return None
    name, driver, total, count = values
    return {"name": name, "driver": driver, "memory_total_mb": float(total), "count": int(count)}


def versions() -> dict[str, str | None]:
    names = ("torch", "ctranslate2", "transformers", "faster-whisper", "ray", "nvidia-cublas-cu12")
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def problems(info: dict[str, Any]) -> list[str]:
    """Why this machine cannot run the GPU check, from check_worker's answer (none: it can)."""
    found = []
    if "error" in info:
        return [f"the checks failed: {info['error']}: {' | '.join(info.get('log_tail', [])[-5:])}"]
    if not info["torch_cuda"]:
        found.append(
            f"torch {info['torch']} is not a CUDA build (torch.version.cuda is None): `make gpu-check` installs "
            "PyPI's CUDA build into .venv-gpu"
        )
    elif not info["torch_cuda_available"]:
        found.append(f"torch {info['torch']} (CUDA {info['torch_cuda']}) sees no GPU: torch.cuda.is_available()")
    if info["ctranslate2_cuda_devices"] < 1:
        found.append(f"ctranslate2 {info['ctranslate2']} sees no CUDA device (get_cuda_device_count() is 0)")
    if info["cublas12"] is not True:
        found.append(f"ctranslate2 needs CUDA 12's cuBLAS: {info['cublas12']} (pip install nvidia-cublas-cu12)")
    return found


class BatchTimeline:
    """The Whisper replica's batch and window counters (`/ready`) read every `interval_s` while in the `with`:
    the mean batch size formed in each interval that ran batches."""

    def __init__(self, serve_url: str, interval_s: float = 1.0) -> None:
        self.serve_url = serve_url
        self.interval_s = interval_s
        self.samples: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            ready = httpx.get(f"{self.serve_url}/ready", timeout=10).json()
            self.samples.append((int(ready["batches"]), int(ready["windows"])))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> BatchTimeline:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def interval_means(self) -> list[float]:
        pairs = zip(self.samples, self.samples[1:])
        return [round((w1 - w0) / (b1 - b0), 2) for (b0, w0), (b1, w1) in pairs if b1 > b0]


def service_stage(args: argparse.Namespace, device: str, until: float, out: dict[str, Any]) -> None:
    """The whole service on `device`, the mixed workload once after a warm-up, stopped afterwards, into `out` as
    it goes (a run cut short keeps what it had); the pass is abandoned (and the service stopped) at `until`
    (time.monotonic)."""
    from bench.mixed import english_wer, service_pass, workload
    from bench.run import running
    from service.config import InferenceSettings

    engine = args.service_engine or ("ctranslate2" if device == "cpu" else InferenceSettings().effective_engine)
    env = {"SPCS_WHISPER_DEVICE": device, "SPCS_WHISPER_ENGINE": engine}
    env.update(dict(item.split("=", 1) for item in args.env))
    out.update(engine=engine, env=env)
    folder = Path(tempfile.mkdtemp(prefix="spcsw-gpu-check-"))
    sid = None
    try:
        files = workload(folder)
        audio_s = sum(f.seconds for f in files)
        out.update(files=len(files), audio_s=round(audio_s, 1), hindi=any(f.language == "hi" for f in files))
        out["gpu_before_mb"] = gpu_used_mb()
        started = time.perf_counter()
        with running(args.model, CACHE, **env) as svc:
            sid = svc.process.pid  # started with start_new_session: its session's id
            out["start_s"] = round(time.perf_counter() - started, 2)
            t0 = time.perf_counter()
            service_pass(svc.url, svc.serve_url, files[-2:-1])  # warm-up: the model's first batch
            out["warmup_s"] = round(time.perf_counter() - t0, 2)
            out["gpu_loaded_mb"] = gpu_used_mb()
            out["max_batch_size"] = httpx.get(f"{svc.serve_url}/ready", timeout=30).json().get("max_batch_size")
            done: dict[str, Any] = {}

            def run() -> None:
                try:
                    done["pass"] = service_pass(svc.url, svc.serve_url, files)
                except Exception as exc:  # noqa: BLE001 - reported in the JSON
                    done["error"] = repr(exc)

            with GpuMemory() as memory, BatchTimeline(svc.serve_url) as timeline:
                worker = threading.Thread(target=run, daemon=True)
                worker.start()
                worker.join(timeout=max(1.0, until - time.monotonic()))
            if worker.is_alive():
                out["error"] = "the pass did not end before the deadline: abandoned, the service stopped"
            elif "error" in done:
                out["error"] = done["error"]
            else:
                result = done["pass"]
                app = result["app"]
                latencies = result["latencies"]
                short = [lat for f, lat in zip(files, latencies) if f.short]
                batches, windows = int(app["whisper_batches"]), int(app["whisper_windows"])  # every replica's
                out.update(
                    wall_s=round(result["wall_s"], 2),
                    audio_s_per_s=round(audio_s / result["wall_s"], 1),
                    batches=batches,
                    windows=windows,
                    mean_batch_size=round(windows / batches, 2) if batches else None,
                    mean_batch_size_per_second=timeline.interval_means(),
                    whisper_busy_s=app.get("whisper_busy_s"),
                    decoder_busy_s=app.get("decoder_busy_s"),
                    short_file_latency_p50_s=round(statistics.median(short), 2) if short else None,
                    latency_max_s=round(max(latencies), 2),
                    wer_en=english_wer(files, result["texts"]),
                )
            out["gpu_peak_mb"] = memory.peak
            out["gpu_samples"] = memory.samples
            stopping = time.perf_counter()
        out["killed_after_stop"] = stop_session(sid)
        out["stop_s"] = round(time.perf_counter() - stopping, 2)
        sid = None
    finally:
        if sid is not None:  # an error or a signal inside: the service's `finally` stopped it; make sure of Ray
            stop_session(sid)
        shutil.rmtree(folder, ignore_errors=True)


def session_pids(sid: int) -> list[int]:
    """The processes of session `sid` (the service runs in a session of its own: its Ray processes too)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z" and fields[3] == str(sid):
                found.append(int(stat.parent.name))
    return found


def stop_session(sid: int, wait_s: float = 60.0) -> list[int]:
    """Waits up to `wait_s` for the stopped service's processes (Ray shuts down after the service's process has
    exited) to end, then kills what is left; returns the pids it had to kill."""
    deadline = time.monotonic() + wait_s
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def stop_children() -> list[int]:
    """Stops any process this one started that is still running (a service whose start was interrupted): SIGTERM,
    then SIGKILL to its process group after 60 s. Returns their pids."""
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                children.append(int(stat.parent.name))
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    for pid in children:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # a service: its own session and process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return children


def save(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def summary(result: dict[str, Any]) -> str:
    """The run in a few lines of Markdown (printed, and the docs' block on a real run)."""
    gpu = result.get("gpu") or {}
    checks = result.get("checks", {})
    card = f"{gpu['name']} (driver {gpu['driver']}, {gpu['memory_total_mb']:.0f} MiB)" if gpu else "no GPU"
    stages = ", ".join(f"{k} {v} s" for k, v in result.get("stage_s", {}).items())
    lines = [
        f"Last run: {result['date']} on {card}, {result['kind']}, torch {checks.get('torch')} "
        f"(CUDA {checks.get('torch_cuda')}), ctranslate2 {checks.get('ctranslate2')}, model {result['model']}; "
        f"{'complete' if result.get('complete') else 'INCOMPLETE'}: {stages}. Figures: `{result['out']}`.",
        "",
        "| engine | batch | audio s/s | median s | GPU peak MB | torch peak MB |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for name, engine in result.get("engines", {}).items():
        for r in engine.get("rows", []):
            lines.append(
                f"| {name} | {r['batch']} | {r['audio_s_per_s']} | {r['median_s']} | {r['gpu_peak_mb']} | "
                f"{r['torch_peak_mb']} |"
            )
        if engine.get("skipped"):
            notes.append(f"{name}: batch sizes {engine['skipped']} skipped ({engine['skip_reason']})")
        if engine.get("error"):
            notes.append(f"{name}: {engine['error']}")
    service = result.get("service")
    if service:
        lines += ["", f"| service ({service.get('engine')}, MAX_BATCH_SIZE {service.get('max_batch_size')}) | |"]
        lines.append("|---|---|")
        for key in (
            "files",
            "audio_s",
            "start_s",
            "wall_s",
            "audio_s_per_s",
            "batches",
            "windows",
            "mean_batch_size",
            "short_file_latency_p50_s",
            "latency_max_s",
            "wer_en",
            "gpu_before_mb",
            "gpu_loaded_mb",
            "gpu_peak_mb",
            "stop_s",
        ):
            if key in service:
                lines.append(f"| {key} | {service[key]} |")
        if service.get("error"):
            notes.append(f"service: {service['error']}")
    if result.get("problems"):
        notes += result["problems"]
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines)


def update_doc(text: str) -> None:
    """Replace the block between the gpu-check markers of docs/benchmarks.md."""
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        print(f"{DOC}: no {START} ... {END} block; the docs are left as they are", file=sys.stderr)
        return
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def run(args: argparse.Namespace) -> int:
    """Every stage; on SIGTERM or Ctrl-C the JSON says where it stopped (`interrupted`)."""
    started = time.monotonic()
    dry = args.cpu_dry_run
    out_path = Path(args.out or (DRY_OUT if dry else OUT))
    result: dict[str, Any] = {
        "kind": "cpu-dry-run" if dry else "gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": False,
        "out": str(out_path.relative_to(Path.cwd()) if out_path.is_relative_to(Path.cwd()) else out_path),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "model": args.model,
        "batch_sizes": list(args.batch_sizes),
        "runs": args.runs,
        "budget": {"deadline_s": args.deadline_s, "service_reserve_s": args.service_reserve_s},
        "stage_s": {},
    }
    try:
        return stages(args, result, out_path, started)
    except (Interrupted, KeyboardInterrupt) as exc:
        result["interrupted"] = str(exc) or "interrupted"
        result["stage_s"]["total"] = round(time.monotonic() - started, 1)
        save(result, out_path)
        raise


def stages(args: argparse.Namespace, result: dict[str, Any], out_path: Path, started: float) -> int:
    deadline = started + args.deadline_s
    dry = args.cpu_dry_run
    device = "cpu" if dry else "cuda"

    def stage_done(name: str, since: float) -> None:
        result["stage_s"][name] = round(time.monotonic() - since, 1)
        save(result, out_path)

    if not dry and shutil.which("nvidia-smi") is None:
        print(
            "gpu-check: nvidia-smi is not here, so there is no NVIDIA GPU (driver) to check: run it on a machine "
            "with one, or try the script on the CPU with `python -m bench.gpu_check --cpu-dry-run`",
            file=sys.stderr,
        )
        return 2

    t = time.monotonic()
    result["gpu"] = gpu_info()
    result["versions"] = versions()
    if not dry and (folder := cublas12_dir()):
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if folder not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([folder, *paths])
            result["ld_library_path_added"] = folder
    result["checks"] = run_worker(["--check-worker"], timeout_s=120)
    result["problems"] = [] if dry else problems(result["checks"])
    stage_done("checks", t)
    print(f"checks: {json.dumps(result['checks'])}", flush=True)
    if result["problems"]:
        print("gpu-check: this machine cannot run it:\n- " + "\n- ".join(result["problems"]), file=sys.stderr)
        return 1

    failed = False
    result["engines"] = {}
    engines = speech_engines()
    for i, name in enumerate(engines):
        t = time.monotonic()
        share = (deadline - args.service_reserve_s - t) / (len(engines) - i)
        if share < 20:
            result["engines"][name] = {"error": f"no time left ({share:.0f} s)", "rows": [], "skipped": []}
            failed = True
            continue
        print(f"engine {name}: batch sizes {args.batch_sizes}, {share:.0f} s", flush=True)
        argv = ["--engine-worker", name, "--until", str(time.time() + share), "--model", args.model]
        argv += ["--runs", str(args.runs), "--batch-sizes", ",".join(map(str, args.batch_sizes))]
        argv += ["--cpu-dry-run"] if dry else []
        engine = run_worker(
            argv,
            timeout_s=share + 20,
            on_row=lambda r: print(
                f"  {r['engine']} batch {r['batch']}: {r['audio_s_per_s']} audio s/s, {r['median_s']} s, "
                f"GPU peak {r['gpu_peak_mb']} MB",
                flush=True,
            ),
        )
        engine["budget_s"] = round(share, 1)
        if "error" in engine:
            failed = True
            print(f"engine {name}: {engine['error']}\n" + "\n".join(engine["log_tail"][-10:]), file=sys.stderr)
        elif engine["skipped"]:
            print(f"engine {name}: skipped {engine['skipped']}: {engine['skip_reason']}", flush=True)
        result["engines"][name] = engine
        stage_done(f"engine.{name}", t)

    t = time.monotonic()
    left = deadline - t
    if left < args.service_min_s:
        result["service"] = {"error": f"skipped: {left:.0f} s left, the service needs {args.service_min_s:.0f} s"}
        failed = True
    else:
        print(f"service: the mixed workload end to end on {device}, {left:.0f} s left", flush=True)
        result["service"] = {}
        try:
            service_stage(args, device, deadline - STOP_RESERVE_S, result["service"])
        except Exception as exc:  # noqa: BLE001 - reported in the JSON
            result["service"].update(error=repr(exc), traceback=traceback.format_exc().splitlines()[-12:])
            traceback.print_exc()
        failed = failed or "error" in result["service"]
    stage_done("service", t)

    result["complete"] = not failed
    result["stage_s"]["total"] = round(time.monotonic() - started, 1)
    save(result, out_path)
    text = summary(result)
    print(f"\n{text}\n\nwrote {out_path}")
    if not dry and not args.no_doc:
        update_doc(text)
    return 1 if failed else 0


def batch_sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same code on the CPU, no GPU needed")
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, help="timed calls per batch size (3; 1 with --cpu-dry-run)")
    parser.add_argument("--batch-sizes", type=batch_sizes, help="1,2,4,8,16,32,64 (1,2 with --cpu-dry-run)")
    parser.add_argument("--deadline-s", type=float, help="the whole run's time (450; 900 with --cpu-dry-run)")
    parser.add_argument("--service-reserve-s", type=float, default=150.0, help="kept for the service stage")
    parser.add_argument("--service-min-s", type=float, default=90.0, help="the service stage needs this much")
    parser.add_argument("--service-engine", help="the service's engine (default: the device's default engine)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service")
    parser.add_argument("--out", help=f"the JSON ({OUT.name}; {DRY_OUT.name} with --cpu-dry-run)")
    parser.add_argument("--no-doc", action="store_true", help="leave docs/benchmarks.md as it is")
    parser.add_argument("--check-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine-worker", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    args.runs = args.runs or (1 if dry else 3)
    args.batch_sizes = args.batch_sizes or ((1, 2) if dry else BATCH_SIZES)
    args.deadline_s = args.deadline_s or (900.0 if dry else 450.0)
    if args.check_worker:
        print(RESULT + json.dumps(check_worker()), flush=True)
        return 0
    if args.engine_worker:
        print(RESULT + json.dumps(engine_worker(args)), flush=True)
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return run(args)
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"gpu-check: {exc or 'interrupted'}; what was measured is in the JSON", file=sys.stderr)
        return 130
    finally:
        if stopped := stop_children():
            print(f"gpu-check: stopped leftover processes {stopped}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
