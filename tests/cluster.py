"""A multi-node Ray cluster on one machine, laid out as in SPCS: a Ray head (no GPU) and worker nodes that
each declare one logical GPU, all separate `ray start` processes; then the Ray Serve app (Whisper
replicas ask for one GPU each, so Ray places one per worker) and the gateway against them.

`make cluster` runs `python -m tests.cluster` (Ctrl-C stops everything); the multi-node test uses
`LocalCluster` directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.harness import free_port, start_gateway, stop_gateway

RAY = str(Path(sys.executable).with_name("ray"))
NODE_IP = "127.0.0.1"


@dataclass
class LocalCluster:
    """`ray start --head` plus `workers` worker nodes, each run as the worker spec runs it: a shell loop around
    `ray start --address=... --block` that joins again whenever its node stops (spec/ray-worker.yaml). Every
    node has its own temp dir under one short root, so one node's processes can be killed alone."""

    workers: int = 2
    gpus_per_worker: int = 1
    cpus_per_node: int = 2
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)  # also Ray's state API (`ray list ...`)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spcsw-rc-", dir="/tmp")))
    env: dict[str, str] = field(default_factory=dict)
    loops: list[subprocess.Popen] = field(default_factory=list)  # one supervising shell loop per worker node
    worker_loops: dict[int, subprocess.Popen] = field(default_factory=dict)  # the current loop of worker `w<i>`
    app: subprocess.Popen | None = None  # the Ray Serve app's process (`spcs-whisper ray-app`), once started

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://{NODE_IP}:{self.dashboard_port}"

    def _env(self) -> dict[str, str]:
        # Ray 2.60 turns token authentication on for a new head; every other process must then use it too. A
        # worker whose head went away gives up after 15 s (default 60) and its loop joins the new head.
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_gcs_rpc_server_reconnect_timeout_s": "15", **self.env}

    def _ray(self, *args: str) -> None:
        result = subprocess.run([RAY, *args], env=self._env(), capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def node_dir(self, node: str) -> Path:
        """`head` or `w0`, `w1`, ...: the node's own temp dir, found in its processes' command lines."""
        return self.temp_dir / node

    def start(self) -> LocalCluster:
        try:
            self.start_head()
            for index in range(self.workers):
                self.add_worker(index)
            self.wait_workers(self.workers)  # the loops join in the background: return once joined, as `ray start`
        except BaseException:
            self.stop()
            raise
        return self

    def start_head(self) -> None:
        """`ray start --head`, also again after `kill_node("head")`. A restarted head container starts with a fresh
        /tmp: without the address its killed GCS left there, `ray start` would take the worker nodes' processes
        (still naming that address while they wait for it, visible here as they share the machine) for a GCS
        already running on the port."""
        (self.node_dir("head") / "ray_current_cluster").unlink(missing_ok=True)
        self._ray(
            "start", "--head", f"--port={self.port}", "--num-gpus=0", "--include-dashboard=true",
            f"--dashboard-host={NODE_IP}", f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.node_dir('head')}", "--node-ip-address", NODE_IP, "--disable-usage-stats",
            f"--num-cpus={self.cpus_per_node}",
        )  # fmt: skip

    def add_worker(self, index: int) -> None:
        """A worker node that joins (and joins again after its node stopped), as the worker spec's loop does."""
        start = (
            f"{RAY} start --address={self.address} --num-gpus={self.gpus_per_worker} --block "
            f"--temp-dir={self.node_dir(f'w{index}')} --node-ip-address {NODE_IP} --disable-usage-stats "
            f"--num-cpus={self.cpus_per_node}"
        )
        loop = f"while true; do {start}; sleep 1; done"
        if index in self.worker_loops and self.worker_loops[index].poll() is None:
            raise RuntimeError(f"worker w{index} is already running")
        log = (self.temp_dir / f"w{index}.log").open("a")
        process = subprocess.Popen(["/bin/sh", "-c", loop], env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        self.loops.append(process)
        self.worker_loops[index] = process

    def kill_node(self, node: str, rejoin: bool = True) -> int:
        """SIGKILL every process of one node (`head`, `w0`, ...), as a lost machine; a worker's loop joins again
        unless `rejoin` is False. How many processes were killed."""
        keep = {loop.pid for loop in self.loops}
        if node.startswith("w") and not rejoin:
            loop = self.worker_loops[int(node[1:])]
            loop.kill()
            loop.wait()
        pids = [pid for pid in _with_descendants(_pids_with(str(self.node_dir(node)))) if pid not in keep]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def node_id(self, node: str) -> str | None:
        """The Ray node id `head`, `w0`, ... runs under now (its raylet's `--node_id`); None while it is down."""
        for pid in _pids_with(str(self.node_dir(node))):
            try:
                args = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if args and Path(args[0]).name == "raylet":
                for arg in args:
                    if arg.startswith("--node_id="):
                        return arg.split("=", 1)[1]
        return None

    def ray_list(self, kind: str) -> list[dict]:
        """Ray's state API (`ray list nodes|actors`), as an operator would ask; [] while the head is down."""
        result = subprocess.run(
            [RAY, "list", kind, "--address", self.dashboard, "--format", "json", "--limit", "1000", "--detail"],
            env=self._env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return json.loads(result.stdout) if result.returncode == 0 else []

    def worker_ids(self) -> set[str]:
        """Node ids of the worker nodes the head counts as alive (none while the head is down)."""
        return {n["node_id"] for n in self.ray_list("nodes") if n["state"] == "ALIVE" and not n["is_head_node"]}

    def alive_workers(self) -> int:
        return len(self.worker_ids())

    def wait_workers(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_workers() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.alive_workers()} worker nodes alive, not {count}")
            time.sleep(1)

    def app_env(self, serve_port: int, **extra: str) -> dict[str, str]:
        """Settings for `spcs-whisper ray-app` joining this cluster: one replica per worker GPU, between one and
        the GPUs of all workers (as deploy/specs.py renders them from the worker service's instance counts)."""
        gpus = self.workers * self.gpus_per_worker
        return {
            "RAY_AUTH_MODE": "token",
            "SPCS_WHISPER_RAY_ADDRESS": self.address,
            "SPCS_WHISPER_SERVE_PORT": str(serve_port),
            "SPCS_WHISPER_WHISPER_NUM_GPUS": "1",
            "SPCS_WHISPER_WHISPER_MIN_REPLICAS": str(gpus),
            "SPCS_WHISPER_WHISPER_MAX_REPLICAS": str(gpus),
            "SPCS_WHISPER_ENGINE": "ctranslate2",
            "SPCS_WHISPER_CPU_THREADS": "1",
            **extra,
        }

    def stop(self) -> None:
        """Stop this cluster's processes only (`ray stop` would stop every Ray instance on the machine)."""
        for loop in self.loops:
            loop.kill()
            loop.wait()
        marker = str(self.temp_dir)
        # With their descendants, collected before anything dies: a raylet's agents (`ray::DashboardAgent`...)
        # lose the marker from their command line and, once the raylet is gone, their parent too.
        every = {pid: _started(pid) for pid in _with_descendants(_pids_with(marker))}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            found = {pid: _started(pid) for pid in _with_descendants(_pids_with(marker))}
            for pid, started in {**every, **found}.items():
                if started is None or _started(pid) != started:  # gone, or its number taken by another process
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while _pids_with(marker) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), telling it from a later process given the same number."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _with_descendants(pids: list[int]) -> list[int]:
    """`pids` and every process below them (a raylet's actor processes rename themselves `ray::...`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return sorted(found)


def _pids_with(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def start_ray_app(
    cluster: LocalCluster, data_dir: Path, cache: Path, log: Path, serve_port: int | None = None, **extra: str
) -> tuple[str, subprocess.Popen]:
    """`spcs-whisper ray-app` against the cluster (settings `extra` on top of `app_env`); returns (serve URL,
    process) once /ready answers. A restarted head passes the same `serve_port`, as the head service keeps its."""
    serve_port = serve_port or free_port()
    env = {
        **os.environ,
        **cluster.app_env(serve_port),
        "SPCS_WHISPER_DATA_DIR": str(data_dir),
        "SPCS_WHISPER_CACHE_DIR": str(cache),
        "SPCS_WHISPER_MODEL": os.environ.get("SPCS_WHISPER_MODEL", "base"),
        **extra,
    }
    out = log.open("a")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "ray-app"], env=env, stdout=out, stderr=subprocess.STDOUT
    )
    url = f"http://{NODE_IP}:{serve_port}/whisper"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray-app exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise RuntimeError(f"ray-app not ready:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


@contextlib.contextmanager
def running_cluster(
    root: Path,
    cache: Path,
    workers: int = 2,
    app_env: dict[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
    cpus_per_node: int = 2,
) -> Iterator[tuple[LocalCluster, str, str]]:
    """The cluster, the Ray Serve app on it and a gateway: (cluster, gateway URL, Serve URL); all stopped after."""
    cluster = LocalCluster(workers=workers, cpus_per_node=cpus_per_node).start()
    app = gateway = None
    try:
        serve_url, app = start_ray_app(cluster, root / "app", cache, root / "ray-app.log", **(app_env or {}))
        url, gateway = start_gateway(root / "gateway", serve_url, root / "gateway.log", **(gateway_env or {}))
        cluster.app = app
        yield cluster, url, serve_url
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        if cluster.app is not None:
            stop_process(cluster.app)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a Ray head + GPU-worker cluster on this machine, app and gateway")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=Path("data/cluster"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    with running_cluster(args.data_dir, args.data_dir / "models", args.workers) as (cluster, url, serve_url):
        print(f"Ray head at {cluster.address}; {args.workers} worker nodes with one logical GPU each", flush=True)
        print(f"gateway on {url} -> Ray Serve at {serve_url}; Ctrl-C stops the cluster", flush=True)
        # Blocked only now, after every child started (children inherit the signal mask).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    main()
