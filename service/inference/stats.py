"""Per-replica counters the deployments report to one small named actor, so the app can say how busy every
Whisper replica (its GPU) and every Decoder (its CPU) is: `/ready` lists them, `make bench-scale` reads them.

A report is fire-and-forget (one tiny actor call per batch or per file): it never delays the work, and a lost
report only makes the figures a little stale.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import ray

ACTOR_NAME = "spcs-whisper-replica-stats"


@dataclass
class ReplicaCounters:
    """Cumulative since the replica started; `busy_s` is engine time (Whisper) or decode + VAD CPU time (Decoder)."""

    deployment: str
    replica: str
    node: str
    busy_s: float = 0.0
    batches: int = 0  # Whisper: engine calls; Decoder: files finished
    windows: int = 0
    reported_at: float = 0.0


@ray.remote(num_cpus=0)
class ReplicaStats:
    """The latest counters of every replica that reported (replicas gone stay listed, with their last figures)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def report(self, row: dict[str, Any]) -> None:
        self.rows[row["replica"]] = row

    def all(self) -> list[dict[str, Any]]:
        return list(self.rows.values())


def stats_actor() -> Any:
    """The app's stats actor, created by whichever replica asks first: detached (it outlives that replica) and on
    the head node, which the app's life depends on anyway; a worker node's loss cannot take it along, and a
    surviving replica's handle would otherwise point at a dead actor (calls to it fail silently)."""
    # @ray.remote makes the class an ActorClass, which mypy does not see: hence the ignore on `.options`.
    return ReplicaStats.options(  # type: ignore[attr-defined]
        name=ACTOR_NAME,
        namespace="spcs-whisper",
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        resources={"node:__internal_head__": 0.001},
    ).remote()


class Reporter:
    """A replica's counters and their fire-and-forget reports."""

    def __init__(self, deployment: str) -> None:
        from ray import serve

        context = ray.get_runtime_context()
        replica = serve.get_replica_context().replica_id.unique_id
        self.counters = ReplicaCounters(deployment, replica, context.get_node_id())
        self._actor: Any = None

    def add(self, busy_s: float, batches: int = 0, windows: int = 0) -> None:
        c = self.counters
        c.busy_s, c.batches, c.windows = c.busy_s + busy_s, c.batches + batches, c.windows + windows
        c.reported_at = time.time()
        try:
            if self._actor is None:
                self._actor = stats_actor()
            self._actor.report.remote(asdict(c))
        except Exception:  # noqa: BLE001 - figures only: the work goes on without them
            self._actor = None
