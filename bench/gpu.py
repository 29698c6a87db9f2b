"""GPU benchmark: both engines with the offline models, batch sizes 1–64, audio seconds per second and GPU
memory. Run on a machine with an NVIDIA GPU: `.venv/bin/python -m bench.gpu [--model base]`.

The transformers engine runs in float16 with SDPA; ctranslate2 in float16. Windows are 30 s cuts of the
long-form file (VAD-packed exactly as the service does), repeated to fill each batch size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
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


def gpu_name_and_used_mb() -> tuple[str, float]:
    line = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.used", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[0]
    name, used = (part.strip() for part in line.split(","))
    return name, float(used)


def run_engine(name: str, model: str, windows: list, runs: int) -> list[dict[str, Any]]:
    import torch

    settings = Settings(
        engine=name,
        model=model,
        device="cuda",
        compute_type="float16",
        cache_dir=Path(tempfile.gettempdir()) / "spcsw-gpu-cache",
    )
    engine = load_engine(settings.inference)
    options = DecodeOptions(language="en", beam_size=5)
    rows = []
    for batch in BATCH_SIZES:
        chunk = [windows[i % len(windows)] for i in range(batch)]
        seconds = sum(w.shape[0] for w in chunk) / SAMPLE_RATE
        engine.transcribe_batch(chunk, options)  # warm-up
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(runs):
            torch.cuda.synchronize()
            started = time.perf_counter()
            engine.transcribe_batch(chunk, options)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        _, used = gpu_name_and_used_mb()
        row = {
            "engine": name,
            "batch": batch,
            "audio_s_per_s": round(seconds / statistics.median(times), 1),
            "median_s": round(statistics.median(times), 3),
            "gpu_used_mb": used,
            "torch_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        }
        print(row, flush=True)
        rows.append(row)
    del engine
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    windows = cut(decode(DATA / "en_ljspeech_longform.wav"), vad=True).audio
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
