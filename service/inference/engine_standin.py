"""A stand-in engine for scale tests only, never the default: it loads no model and returns no speech. Each batch
of B windows holds its replica for the time a GPU running Whisper large-v3 (float16, batched) takes for B 30 s
windows, from published figures (`CURVES`), so the orchestration around the GPUs (decoders, routing, batching,
autoscaling, the gateway and store) can be measured on machines without one.

The hold is `time.sleep` in the batcher's thread: no CPU is used, so one machine can stand in for several GPU
nodes. STANDIN_TIME_SCALE multiplies every hold: > 1 models a slower GPU, which lets a machine whose few cores
must also decode the audio keep up with N stand-in GPUs; throughput ratios (scaling efficiency) do not depend on
it as long as the GPUs, not the CPUs, are the bottleneck.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.audio import SAMPLE_RATE
from service.inference.types import DecodeOptions, WindowResult, per_window
from service.transcript import Segment

if TYPE_CHECKING:
    from service.config import InferenceSettings


@dataclass(frozen=True)
class GpuCurve:
    """Seconds one batch of B 30 s windows takes: `fixed_s + per_window_s × B` (B ≤ 64)."""

    gpu: str
    fixed_s: float  # a batch's own cost: the decoder's sequential steps, set by the longest window, not B
    per_window_s: float  # what each more window adds once the GPU is busy (the saturated cost per window)
    source: str

    def batch_seconds(self, windows: int) -> float:
        return self.fixed_s + self.per_window_s * windows

    def realtime_factor(self, windows: int) -> float:
        """Audio seconds per second at batch size `windows` (30 s each)."""
        return 30.0 * windows / self.batch_seconds(windows)


# No batched large-v3 timing on an A10G or an H100 is published; the curves are fitted to the nearest published
# figures (large-v3/-v2 share the architecture), ±50 %:
#   A100 80GB, large-v3 fp16 + FlashAttention 2, batch 24: 150 min of audio in 98 s (insanely-fast-whisper README,
#     github.com/Vaibhavs10/insanely-fast-whisper); batch 96: 300 min in 98 s (its issue #44, by the maintainer);
#     large-v2 unbatched (faster-whisper fp16): 1.88 s per 30 s. A line through them: t_A100(B) ≈ 1.8 + 0.098·B.
#   RTX 3070 Ti, large-v2 fp16 beam 5: 13 min in 63 s unbatched, 17 s at batch 8 (faster-whisper README,
#     github.com/SYSTRAN/faster-whisper); RTX 3090 unbatched 1.41 s per 30 s (speaches issue #169).
#   A10G: t(1) = 2.0 s, between the unbatched figures above; t(64) = t_A100(64) × 3.4, the memory bandwidth ratio
#     (2.04 vs 0.6 TB/s): 1.6 + 0.40·B, i.e. 0.60 s/window at B = 8 (3070 Ti, measured: 0.65) and ~70× real
#     time at B = 64.
#   H100: t(64) = t_A100(64) / 1.6 (3.35 vs 2.04 TB/s), t(1) ≈ 1.3 s (one window is bound by the decoder's
#     per-token steps, which a faster chip barely shortens): 1.25 + 0.060·B, ~375× real time at B = 64.
CURVES: dict[str, GpuCurve] = {
    "a10g": GpuCurve("NVIDIA A10G 24 GB", fixed_s=1.6, per_window_s=0.40, source="fitted: see the comment above"),
    "h100": GpuCurve("NVIDIA H100 80 GB", fixed_s=1.25, per_window_s=0.060, source="fitted: see the comment above"),
}


class StandInEngine:
    """Holds each batch for `CURVES[gpu]`'s time × `time_scale`; one segment per window saying what it stood for."""

    name = "standin"
    multilingual = True

    def __init__(self, gpu: str = "a10g", time_scale: float = 1.0) -> None:
        self.curve, self.time_scale = CURVES[gpu], time_scale
        self.model_name = f"standin-large-v3-{gpu}"

    @classmethod
    def load(cls, settings: InferenceSettings, files: Any = None) -> StandInEngine:
        """The registry's constructor (`engines.load_engine`): no model files."""
        return cls(settings.standin_gpu, settings.standin_time_scale)

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """One encoder pass and one decoder step: a batch of one's fixed cost. Always English."""
        time.sleep(self.curve.fixed_s * self.time_scale)
        return "en", 1.0

    def transcribe_batch(
        self, windows: list[np.ndarray], options: DecodeOptions | Sequence[DecodeOptions]
    ) -> list[WindowResult]:
        """Holds the batch; a row to detect is English, detected in the same call (as CTranslate2 does)."""
        rows = per_window(options, len(windows))
        time.sleep(self.curve.batch_seconds(len(windows)) * self.time_scale)
        results = []
        for window, row in zip(windows, rows):
            seconds = round(window.shape[0] / SAMPLE_RATE, 3)
            text = f" stand-in {seconds:.1f} s"
            segment = Segment(start=0.0, end=seconds, text=text)
            result = WindowResult([segment], avg_logprob=0.0, no_speech_prob=0.0)
            if row.language is None:
                result.language, result.language_probability = "en", 1.0
            results.append(result)
        return results
