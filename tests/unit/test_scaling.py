"""How the deployments scale (service/inference/scaling.py): the Whisper policy follows the load, never below its
floor, never above the GPUs present; the options Serve gets come from the settings."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
from ray.serve.config import AutoscalingConfig

from service.config import InferenceSettings
from service.inference import scaling
from service.inference.scaling import FollowGPUs, decoder_options, job_capacity, whisper_options


def context(requests: float, target: float = 16.0, state: dict[str, Any] | None = None) -> SimpleNamespace:
    """What Serve hands a custom policy, as far as FollowGPUs reads it."""
    return SimpleNamespace(
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target),
        total_num_requests=requests,
        policy_state={} if state is None else state,
    )


def policy(floor: int, gpus_per_replica: float, gpus: float) -> FollowGPUs:
    follow = FollowGPUs(floor=floor, gpus_per_replica=gpus_per_replica)
    follow.gpus = lambda: gpus  # type: ignore[method-assign]
    return follow


@pytest.fixture(autouse=True)
def _no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts, not the SPCS_WHISPER_* of the shell running the tests."""
    import os

    for key in os.environ:
        if key.startswith("SPCS_WHISPER_"):
            monkeypatch.delenv(key)


def settings(**values: Any) -> InferenceSettings:
    return InferenceSettings(**values)


@pytest.mark.parametrize(
    ("requests", "expected"),
    [(0, 1.0), (8, 1.0), (16, 1.0), (24, 1.5), (48, 3.0), (64, 4.0)],
)
def test_load_decides_the_count(requests: float, expected: float) -> None:
    """Windows queued and running over the target per replica (Serve rounds a fraction up)."""
    replicas, _ = policy(floor=1, gpus_per_replica=1.0, gpus=8)(context(requests))
    assert replicas == expected


def test_never_below_the_floor_and_never_zero() -> None:
    assert policy(floor=3, gpus_per_replica=1.0, gpus=8)(context(0))[0] == 3
    assert policy(floor=3, gpus_per_replica=1.0, gpus=8)(context(16 * 5))[0] == 5
    assert policy(floor=0, gpus_per_replica=1.0, gpus=8)(context(0))[0] == 1  # one replica stays up
    assert policy(floor=1, gpus_per_replica=1.0, gpus=8)(context(100, target=0))[0] == 1  # no target: the floor


def test_capped_by_the_gpus_present() -> None:
    """A lost node's GPU takes its replica's room away, even below the floor; a joined node gives room back."""
    assert policy(floor=2, gpus_per_replica=1.0, gpus=1)(context(0))[0] == 1  # floor 2, one GPU left
    assert policy(floor=1, gpus_per_replica=1.0, gpus=2)(context(16 * 10))[0] == 2
    assert policy(floor=1, gpus_per_replica=1.0, gpus=3)(context(16 * 10))[0] == 3
    assert policy(floor=1, gpus_per_replica=0.5, gpus=2)(context(16 * 10))[0] == 4  # two replicas share a GPU
    assert policy(floor=1, gpus_per_replica=2.0, gpus=3)(context(16 * 10))[0] == 1  # a replica needs two
    assert policy(floor=1, gpus_per_replica=1 / 3, gpus=1)(context(16 * 10))[0] == 3  # no float slip below 3
    # No GPU at all (every worker gone): one replica is asked for, which waits for the next GPU.
    assert policy(floor=2, gpus_per_replica=1.0, gpus=0)(context(16 * 10))[0] == 1


def test_cpu_replicas_are_not_capped() -> None:
    follow = policy(floor=1, gpus_per_replica=0.0, gpus=0)
    assert follow.room() == math.inf
    assert follow(context(16 * 10))[0] == 10


def test_policy_state_is_passed_through() -> None:
    state = {"kept": 1}
    assert policy(floor=1, gpus_per_replica=1.0, gpus=1)(context(0, state=state))[1] is state


def test_gpus_are_read_from_ray_at_most_every_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    reads: list[float] = []
    resources = iter([{"GPU": 2.0, "CPU": 8.0}, {"CPU": 8.0}])

    def cluster_resources() -> dict[str, float]:
        reads.append(1)
        return next(resources)

    clock = iter([100.0, 100.0, 101.0, 103.0, 103.0])
    monkeypatch.setattr(ray, "cluster_resources", cluster_resources)
    monkeypatch.setattr(scaling.time, "monotonic", lambda: next(clock))
    follow = FollowGPUs(floor=1, gpus_per_replica=1.0, refresh_s=2.0)
    assert follow.gpus() == 2.0  # first read
    assert follow.gpus() == 2.0 and len(reads) == 1  # 1 s later: cached
    assert follow.gpus() == 0.0 and len(reads) == 2  # 3 s later: read again (no GPU key: 0)


def test_whisper_options_from_settings() -> None:
    s = settings(whisper_min_replicas=2, whisper_max_replicas=6, max_batch_size=8, downscale_delay_s=7)
    options = whisper_options(s, num_gpus=1.0)
    auto = options["autoscaling_config"]
    # The floor lives in the policy: Serve's own minimum is one, so a lost GPU leaves no replica pending.
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"]) == (1, 2, 6)
    assert auto["target_ongoing_requests"] == 8  # MAX_BATCH_SIZE unless WHISPER_TARGET_WINDOWS
    assert auto["downscale_delay_s"] == 7 and auto["upscale_delay_s"] == s.upscale_delay_s
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1.0}
    assert options["max_ongoing_requests"] == 16  # two batches per replica
    assert auto["policy"]["policy_kwargs"] == {"floor": 2, "gpus_per_replica": 1.0}
    targeted = whisper_options(settings(whisper_target_windows=5), 0.0)["autoscaling_config"]
    assert targeted["target_ongoing_requests"] == 5
    assert whisper_options(settings(max_batch_size=2), 0.0)["max_ongoing_requests"] == 8  # at least 8


def test_whisper_bounds_default_to_whisper_replicas() -> None:
    auto = whisper_options(settings(whisper_replicas=3), 1.0)["autoscaling_config"]
    assert (auto["initial_replicas"], auto["max_replicas"], auto["policy"]["policy_kwargs"]["floor"]) == (3, 3, 3)
    auto = whisper_options(settings(whisper_min_replicas=5, whisper_max_replicas=2), 1.0)["autoscaling_config"]
    assert (auto["initial_replicas"], auto["max_replicas"]) == (2, 2)  # the floor never above the ceiling


def test_policy_import_path_is_what_serve_resolves() -> None:
    """Serve validates the config and imports the policy by its path; the class takes the kwargs it is given."""
    auto = whisper_options(settings(whisper_min_replicas=2, whisper_max_replicas=4), 1.0)["autoscaling_config"]
    config = AutoscalingConfig(**auto)
    assert not config.policy.is_default_policy_function()
    cls = config.policy.get_policy()
    assert cls is FollowGPUs
    instance = cls(**config.policy.policy_kwargs)
    assert (instance.floor, instance.gpus_per_replica) == (2, 1.0)
    assert config.get_target_ongoing_requests() == 16


def test_decoder_options_from_settings() -> None:
    s = settings(decoder_min_replicas=2, decoder_max_replicas=5, decoder_num_cpus=0.5, decode_concurrency=3)
    options = decoder_options(s)
    auto = options["autoscaling_config"]
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"]) == (2, 2, 5)
    assert auto["target_ongoing_requests"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 0.5}
    assert "policy" not in auto  # Serve's default policy
    AutoscalingConfig(**auto)
    # A ceiling below the floor is lifted to it.
    auto = decoder_options(settings(decoder_min_replicas=3, decoder_max_replicas=1))["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (3, 3)


def test_job_capacity_follows_running_replicas() -> None:
    s = settings(max_batch_size=16)
    assert job_capacity(s, 1) == 32
    assert job_capacity(s, 3) == 96
    assert job_capacity(s, 0) == 32  # none running yet: as for one
    assert job_capacity(settings(max_batch_size=2), 1) == 16  # at least 16


@pytest.mark.parametrize(
    ("fields", "on_gpu", "cores", "expected"),
    [
        ({}, False, 2, (2, 1, 1)),  # CPU: one single-threaded replica per core, small batches
        ({}, False, 32, (8, 4, 16)),  # ...at most 8 copies of the model, the cores shared out
        ({}, False, 6, (5, 1, 1)),  # ...leaving the Decoder its Ray CPU (the local Ray has max(4, cores))
        ({"cpu_threads": 2}, False, 2, (1, 2, 16)),  # threads set: cores / threads replicas, batches that pay
        ({"whisper_replicas": 2}, False, 8, (2, 4, 16)),  # replicas set: the cores shared out
        ({"max_batch_size": 8}, False, 2, (2, 1, 8)),
        ({}, True, 2, (1, 0, 16)),  # GPU: one replica per GPU, batches of 16
        ({"whisper_min_replicas": 1, "whisper_max_replicas": 4}, True, 2, (1, 0, 16)),
    ],
)
def test_the_hardware_layout_fills_in_what_was_left_unset(
    fields: dict[str, Any], on_gpu: bool, cores: int, expected: tuple[int, int, int]
) -> None:
    laid = scaling.hardware_layout(InferenceSettings(**fields), on_gpu=on_gpu, cores=cores)
    assert (laid.whisper_replicas, laid.cpu_threads, laid.max_batch_size) == expected
    assert laid.batch_size == expected[2]
