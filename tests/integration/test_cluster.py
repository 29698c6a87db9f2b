"""A Ray head and two worker nodes as separate processes (as the SPCS services would run them), each worker
declaring one logical GPU: the Whisper replicas land one per worker node, jobs are served by both, and the
Decoders spread over the nodes' CPUs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cluster import LocalCluster, running_cluster
from tests.integration.helpers import DATA, MANIFEST_JFK, submit, wait, wer

pytestmark = pytest.mark.integration
JOBS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[tuple[LocalCluster, str]]:
    decoders = {
        "SPCS_WHISPER_DECODER_MIN_REPLICAS": "2",
        "SPCS_WHISPER_DECODER_MAX_REPLICAS": "2",
        "SPCS_WHISPER_DECODERS_PER_NODE": "1",
    }
    with running_cluster(tmp_path_factory.mktemp("cluster"), model_cache, app_env=decoders) as (ray_cluster, url, _):
        yield ray_cluster, url


def alive_replicas(ray_cluster: LocalCluster, deployment: str, count: int) -> list[dict]:
    """The deployment's live replica actors, once `count` of them are up (the app answers once one of each runs;
    the others may still be starting), or as many as there are after two minutes."""
    deadline, replicas = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        replicas = [
            a
            for a in ray_cluster.ray_list("actors")
            if a["state"] == "ALIVE" and a["class_name"] == f"ServeReplica:whisper:{deployment}"
        ]
        if len(replicas) >= count:
            break
        time.sleep(1)
    return replicas


def test_replicas_one_per_worker_node_and_jobs_served_by_both(cluster: tuple[LocalCluster, str]) -> None:
    ray_cluster, url = cluster
    nodes = [n for n in ray_cluster.ray_list("nodes") if n["state"] == "ALIVE"]
    workers = {n["node_id"] for n in nodes if not n["is_head_node"]}
    head = {n["node_id"] for n in nodes if n["is_head_node"]}
    assert len(workers) == 2 and len(head) == 1
    replicas = alive_replicas(ray_cluster, "Whisper", 2)
    assert sorted(a["node_id"] for a in replicas) == sorted(workers), replicas  # one on each worker, none on head
    decoders = alive_replicas(ray_cluster, "Decoder", 2)
    assert len(decoders) == 2 and len({a["node_id"] for a in decoders}) == 2, decoders  # spread, not all on one node

    with httpx.Client(base_url=url, timeout=300) as client:
        with ThreadPoolExecutor(JOBS) as pool:
            created = list(pool.map(lambda _: submit(client, DATA / "en_jfk.flac", language="en"), range(JOBS)))
        assert all(r.status_code == 202 for r in created)
        jobs = [wait(client, r.json()["id"], timeout=600) for r in created]
        assert all(j["status"] == "succeeded" for j in jobs), jobs
        served = {node for j in jobs for node in j["timings"]["whisper_nodes"]}
        assert served == workers, (served, workers)
        text = client.get(f"/v1/jobs/{jobs[0]['id']}/transcript").json()["text"]
        assert wer(MANIFEST_JFK, text) == 0.0
