"""GPU benchmark: both engines with the offline models, batch sizes 1–64, audio seconds per second and GPU
memory. Run on a machine with an NVIDIA GPU: `.venv/bin/python -m bench.gpu [--model base]`; `make gpu-check`
(bench/gpu_check.py) runs the same sweep, each engine in a process of its own under a time budget.

The transformers engine runs in float16 with SDPA; ctranslate2 in float16. Windows are 30 s cuts of the
long-form file (VAD-packed exactly as the service does), repeated to fill each batch size. GPU memory is what
nvidia-smi reports for the whole card: after the timed runs (`gpu_used_mb`) and the highest it read while they
ran (`gpu_peak_mb`, sampled every 0.25 s), plus torch's own peak (`torch_peak_mb`: the transformers engine's
tensors; ctranslate2 allocates outside torch).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from service.audio import SAMPLE_RATE, decode
from service.config import Settings
from service.inference.engines import load_engine, speech_engines
from service.inference.types import DecodeOptions
from service.inference.windows import cut
from tests.integration.helpers import DATA

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
OUT = Path(__file__).parent / "results" / "gpu.json"
CACHE = Path(tempfile.gettempdir()) / "spcsw-gpu-cache"


def nvidia_smi(*fields: str) -> list[str] | None:
    """The first GPU's `fields` as nvidia-smi reports them (`--query-gpu`), or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    line = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.splitlines()[0]
    return [part.strip() for part in line.split(",")]


def gpu_name_and_used_mb() -> tuple[str, float]:
    name, used = nvidia_smi("name", "memory.used") or ("no nvidia-smi", "nan")
    return name, float(used)


def gpu_used_mb() -> float | None:
    """Memory in use on the first GPU (MiB, all processes), or None without nvidia-smi."""
    values = nvidia_smi("memory.used")
    return float(values[0]) if values else None


class GpuMemory:
    """Samples the first GPU's used memory (nvidia-smi) every `interval_s` in a thread while in the `with`; `peak`
    is the highest reading since the start or the last `reset()` (None without nvidia-smi)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.available = shutil.which("nvidia-smi") is not None
        self.peak: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        try:
            used = gpu_used_mb()
        except (subprocess.SubprocessError, OSError, ValueError, IndexError):
            return
        if used is not None:
            self.peak = used if self.peak is None else max(self.peak, used)
            self.samples += 1

    def reset(self) -> None:
        self.peak = None
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> GpuMemory:
        if self.available:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.available:
            self.sample()


def long_form_windows() -> list:
    """The long-form file's VAD-packed windows of at most 30 s, as the service cuts them."""
    return cut(decode(DATA / "en_ljspeech_longform.wav"), vad=True).audio


def _predicted_s(rows: list[dict[str, Any]], batch: int, calls: int) -> float:
    """Seconds `calls` calls of `batch` (a warm-up and the timed runs) should take, from the last two sizes measured:
    the time grows as batch^e, e fitted on them and kept within [0, 1] (1, linear, with a single size measured)."""
    last = rows[-1]
    exponent = 1.0
    if len(rows) >= 2 and rows[-2]["batch"] != last["batch"] and rows[-2]["median_s"] > 0:
        ratio = last["median_s"] / rows[-2]["median_s"]
        exponent = min(1.0, max(0.0, math.log(max(ratio, 1e-9)) / math.log(last["batch"] / rows[-2]["batch"])))
    return calls * last["median_s"] * (batch / last["batch"]) ** exponent


def sweep(
    name: str,
    model: str,
    windows: list,
    runs: int,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    device: str = "cuda",
    budget_s: float | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    cache: Path = CACHE,
) -> dict[str, Any]:
    """One engine across `batch_sizes`: a warm-up call, then `runs` timed calls per size. With `budget_s`, a size
    whose predicted time would end the sweep past the budget (counted from the start, model load included) is
    skipped with every larger one, and the result says so (`skipped`, `skip_reason`)."""
    started = time.perf_counter()
    cuda = device == "cuda"
    settings = Settings(
        engine=name,
        model=model,
        device=device,
        compute_type="float16" if cuda else "auto",
        cache_dir=cache,
    )
    engine = load_engine(settings.inference)
    load_s = time.perf_counter() - started
    options = DecodeOptions(language="en", beam_size=5)
    torch: Any = None
    if cuda:
        import torch

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rows: list[dict[str, Any]] = []
    skipped: list[int] = []
    reason = None
    with GpuMemory() as memory:
        for batch in batch_sizes:
            if skipped:
                skipped.append(batch)
                continue
            elapsed = time.perf_counter() - started
            predicted = _predicted_s(rows, batch, runs + cuda) if rows else 0.0
            if budget_s is not None and elapsed + predicted > budget_s:
                skipped.append(batch)
                reason = (
                    f"time budget: {elapsed:.0f} s of {budget_s:.0f} s spent, batch {batch} would take about "
                    f"{predicted:.0f} s more"
                )
                continue
            chunk = [windows[i % len(windows)] for i in range(batch)]
            seconds = sum(w.shape[0] for w in chunk) / SAMPLE_RATE
            if cuda or not rows:
                engine.transcribe_batch(chunk, options)  # warm-up: per size on the GPU (kernels, cuBLAS plans)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            memory.reset()
            times = []
            for _ in range(runs):
                sync()
                t0 = time.perf_counter()
                engine.transcribe_batch(chunk, options)
                sync()
                times.append(time.perf_counter() - t0)
            memory.sample()
            row = {
                "engine": name,
                "batch": batch,
                "audio_s": round(seconds, 1),
                "audio_s_per_s": round(seconds / statistics.median(times), 1),
                "median_s": round(statistics.median(times), 3),
                "runs": runs,
                "gpu_used_mb": gpu_used_mb() if memory.available else None,
                "gpu_peak_mb": memory.peak,
                "torch_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
            }
            if on_row is not None:
                on_row(row)
            rows.append(row)
    del engine
    if cuda:
        torch.cuda.empty_cache()
    return {
        "engine": name,
        "device": device,
        "compute_type": settings.inference.compute_type,
        "load_s": round(load_s, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "rows": rows,
        "skipped": skipped,
        "skip_reason": reason,
    }


def run_engine(name: str, model: str, windows: list, runs: int) -> list[dict[str, Any]]:
    """Every batch size of BATCH_SIZES on the GPU, no time budget."""
    return sweep(name, model, windows, runs, on_row=lambda row: print(row, flush=True))["rows"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    windows = long_form_windows()
    card, _ = gpu_name_and_used_mb()
    rows = [row for engine in speech_engines() for row in run_engine(engine, args.model, windows, args.runs)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"card": card, "model": args.model, "rows": rows}, indent=2) + "\n")
    print(f"\n{card}, model {args.model}\n| engine | batch | audio s/s | median s | GPU used MB | torch peak MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['engine']} | {r['batch']} | {r['audio_s_per_s']} | {r['median_s']} | {r['gpu_used_mb']} | "
            f"{r['torch_peak_mb']} |"
        )


if __name__ == "__main__":
    main()
