"""How the Ray Serve deployments scale: Whisper replicas follow the GPUs, Decoders follow the files in flight.

Whisper: Ray Serve autoscaling with the policy `FollowGPUs` (a class-based custom policy, Ray Serve's
"Advanced autoscaling" guide: https://docs.ray.io/en/latest/serve/advanced-guides/advanced-autoscaling.html).
The load decides the count as in Serve's default policy (windows queued and running per replica against
`target_ongoing_requests`), never below the floor (WHISPER_MIN_REPLICAS: the worker service's MIN_INSTANCES ×
GPUs per instance) and never above the GPUs the cluster has right now: a worker node that joins adds a GPU and
so room for a replica, which the policy fills once windows queue (at once when the floor asks for it); a node
that leaves takes its GPU away, and the replica that Serve would restart for it is dropped after
DOWNSCALE_DELAY_S instead of waiting for a GPU that is not there. WHISPER_MAX_REPLICAS is the worker service's
MAX_INSTANCES × GPUs per instance.

Decoder: Serve's default policy, `target_ongoing_requests` = DECODE_CONCURRENCY (files one replica decodes at
once), between DECODER_MIN_REPLICAS and DECODER_MAX_REPLICAS, one logical CPU each. Serve spreads a
deployment's replicas over the nodes, so Decoders run on the workers' CPUs as well as the head's.
"""

from __future__ import annotations

import math
import time
from typing import Any

from service.config import CPU_BATCH_SIZE, GPU_BATCH_SIZE, InferenceSettings

GPU_REFRESH_S = 2.0
MAX_CPU_REPLICAS = 8  # each holds its own copy of the model


def hardware_layout(settings: InferenceSettings, on_gpu: bool, cores: int) -> InferenceSettings:
    """The settings with what was left unset chosen for the hardware (what `build_app` sends to the replicas).

    GPU: one replica per GPU (WHISPER_REPLICAS 1 unless set), batches of 16. CPU: replicas × threads from the
    cores: one single-threaded replica per core (at most 8) unless CPU_THREADS or WHISPER_REPLICAS says
    otherwise; batches of 1 for single-threaded replicas, 16 for others. Measured on 2 cores with CTranslate2
    int8 (docs/benchmarks.md): a single-threaded replica gains nothing from batching (1.9 s per 30 s window at
    batch 1 and at 16), a two-threaded one little (1.2 s per window at 16), so two replicas × one thread beat
    one × two under load, and small batches cost no throughput while a short window never waits behind a long
    batch."""
    if on_gpu:
        batch = settings.max_batch_size or GPU_BATCH_SIZE
        return settings.model_copy(update={"max_batch_size": batch, "whisper_replicas": settings.whisper_replicas or 1})
    replicas = settings.whisper_replicas
    if replicas is None:
        autoscaled = settings.whisper_min_replicas is not None or settings.whisper_max_replicas is not None
        # Each replica claims one Ray CPU: leave the Decoders theirs (the local Ray has max(4, cores) CPUs).
        room = (settings.ray_num_cpus or max(4, cores)) - settings.decoder_min_replicas * settings.decoder_num_cpus
        fits = min(MAX_CPU_REPLICAS, cores // max(settings.cpu_threads, 1), math.floor(room))
        replicas = 1 if autoscaled else max(1, fits)
    laid = settings.model_copy(update={"whisper_replicas": replicas})
    threads = settings.cpu_threads or max(1, cores // laid.whisper_bounds[0])
    # A replica with several threads does gain from batching (1.2 s per window at 16 vs 2.7 alone on 2 threads).
    batch = settings.max_batch_size or (CPU_BATCH_SIZE if threads == 1 else GPU_BATCH_SIZE)
    return laid.model_copy(update={"max_batch_size": batch, "cpu_threads": threads})


class FollowGPUs:
    """Serve autoscaling policy: replicas the load needs, at least `floor`, at most the GPUs present allow."""

    def __init__(self, floor: int, gpus_per_replica: float, refresh_s: float = GPU_REFRESH_S) -> None:
        self.floor, self.gpus_per_replica, self.refresh_s = floor, gpus_per_replica, refresh_s
        self._gpus, self._read_at = 0.0, -math.inf

    def gpus(self) -> float:
        """GPUs of the cluster's live nodes (read at most every `refresh_s`)."""
        if time.monotonic() - self._read_at >= self.refresh_s:
            import ray

            self._gpus, self._read_at = float(ray.cluster_resources().get("GPU", 0.0)), time.monotonic()
        return self._gpus

    def room(self) -> float:
        """Replicas the GPUs present can hold (no limit for CPU replicas)."""
        if self.gpus_per_replica <= 0:
            return math.inf
        return math.floor(self.gpus() / self.gpus_per_replica + 1e-9)

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        target = ctx.config.get_target_ongoing_requests()
        wanted = ctx.total_num_requests / target if target else 0.0
        return max(min(max(wanted, self.floor), self.room()), 1.0), ctx.policy_state


def whisper_gpus(settings: InferenceSettings, on_gpu: bool) -> float:
    """GPUs one Whisper replica claims: WHISPER_NUM_GPUS, else 1 on a GPU node, else 0."""
    if settings.whisper_num_gpus is not None:
        return settings.whisper_num_gpus
    return 1.0 if on_gpu else 0.0


def whisper_options(settings: InferenceSettings, num_gpus: float) -> dict[str, Any]:
    """`Whisper.options(...)`: GPU-following autoscaling, at most two batches per replica in flight (one running,
    one forming), so windows beyond that wait in the caller's router for whichever replica frees up first."""
    floor, ceiling = settings.whisper_bounds
    return {
        "max_ongoing_requests": max(2 * settings.batch_size, 8),
        "ray_actor_options": {"num_cpus": 1, "num_gpus": num_gpus},
        "health_check_period_s": 10,
        "autoscaling_config": {
            "min_replicas": 1,  # the floor lives in the policy, so a lost GPU does not leave a replica pending
            "initial_replicas": floor,
            "max_replicas": ceiling,
            "target_ongoing_requests": settings.whisper_target_windows or settings.batch_size,
            "upscale_delay_s": settings.upscale_delay_s,
            "downscale_delay_s": settings.downscale_delay_s,
            "policy": {
                "policy_function": f"{__name__}:FollowGPUs",
                "policy_kwargs": {"floor": floor, "gpus_per_replica": num_gpus},
            },
        },
    }


def decoder_options(settings: InferenceSettings) -> dict[str, Any]:
    """`Decoder.options(...)`: autoscaled on files in flight per replica."""
    low, high = settings.decoder_min_replicas, max(settings.decoder_min_replicas, settings.decoder_max_replicas)
    options: dict[str, Any] = {
        "max_ongoing_requests": 64,
        "ray_actor_options": {"num_cpus": settings.decoder_num_cpus},
        "autoscaling_config": {
            "min_replicas": low,
            "initial_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": settings.decode_concurrency,
            "upscale_delay_s": settings.upscale_delay_s,
            "downscale_delay_s": settings.downscale_delay_s,
        },
    }
    if settings.decoders_per_node:  # Serve's own spreading is best effort
        options["max_replicas_per_node"] = settings.decoders_per_node
    return options


def windows_in_flight(settings: InferenceSettings) -> int:
    """Windows one Decoder replica keeps at Whisper (DECODE_WINDOWS_IN_FLIGHT when unset): per replica the batch
    running and the batch forming behind it; without batching (a batch of 1, single-threaded CPU replicas) only
    the window running, so every next window is chosen by rank when a replica frees up (`priority.py`): a short
    file's window waits for one window at most, not for a queue granted before it arrived."""
    per_replica = 2 * settings.batch_size if settings.batch_size > 1 else 1
    return per_replica * settings.whisper_bounds[1]


def job_capacity(settings: InferenceSettings, whisper_running: int) -> int:
    """Jobs the gateway may usefully have in flight: two batches of windows per running Whisper replica (a short
    file is one window), at least 16."""
    return max(16, 2 * settings.batch_size * max(whisper_running, 1))
