"""A multi-node Ray cluster on one machine, laid out as in SPCS: a Ray head (no GPU) and worker nodes that
each declare one logical GPU, all separate `ray start` processes; then the Ray Serve app (Whisper
replicas ask for one GPU each, so Ray places one per worker) and the gateway against them.

`make cluster` runs `python -m tests.cluster` (Ctrl-C stops everything); the multi-node test uses
`LocalCluster` directly.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """`ray start --head` plus `workers` × `ray start --address=...` sharing one short temp dir."""

    workers: int = 2
    gpus_per_worker: int = 1
    cpus_per_node: int = 2
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)  # also Ray's state API (`ray list ...`)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spcsw-rc-", dir="/tmp")))
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://{NODE_IP}:{self.dashboard_port}"

    def _ray(self, *args: str) -> None:
        # Ray 2.60 turns token authentication on for a new head; every other process must then use it too.
        env = {**os.environ, "RAY_AUTH_MODE": "token", **self.env}
        result = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self) -> LocalCluster:
        common = ["--node-ip-address", NODE_IP, "--disable-usage-stats", f"--num-cpus={self.cpus_per_node}"]
        self._ray(
            "start", "--head", f"--port={self.port}", "--num-gpus=0", "--include-dashboard=true",
            f"--dashboard-host={NODE_IP}", f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.temp_dir}", *common,
        )  # fmt: skip
        for _ in range(self.workers):
            self._ray("start", f"--address={self.address}", f"--num-gpus={self.gpus_per_worker}", *common)
        return self

    def app_env(self, serve_port: int, **extra: str) -> dict[str, str]:
        """Settings for `spcs-whisper ray-app` joining this cluster: one replica per worker GPU."""
        return {
            "RAY_AUTH_MODE": "token",
            "SPCS_WHISPER_RAY_ADDRESS": self.address,
            "SPCS_WHISPER_SERVE_PORT": str(serve_port),
            "SPCS_WHISPER_WHISPER_NUM_GPUS": "1",
            "SPCS_WHISPER_WHISPER_REPLICAS": str(self.workers * self.gpus_per_worker),
            "SPCS_WHISPER_ENGINE": "ctranslate2",
            "SPCS_WHISPER_CPU_THREADS": "1",
            **extra,
        }

    def stop(self) -> None:
        """Stop this cluster's processes only (`ray stop` would stop every Ray instance on the machine)."""
        marker = str(self.temp_dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _pids_with(marker)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while _pids_with(marker) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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


def start_ray_app(cluster: LocalCluster, data_dir: Path, cache: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """`spcs-whisper ray-app` against the cluster; returns (serve URL, process) once /ready answers."""
    serve_port = free_port()
    env = {
        **os.environ,
        **cluster.app_env(serve_port),
        "SPCS_WHISPER_DATA_DIR": str(data_dir),
        "SPCS_WHISPER_CACHE_DIR": str(cache),
        "SPCS_WHISPER_MODEL": os.environ.get("SPCS_WHISPER_MODEL", "base"),
    }
    out = log.open("w")
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
def running_cluster(root: Path, cache: Path, workers: int = 2) -> Iterator[tuple[LocalCluster, str, str]]:
    """The cluster, the Ray Serve app on it and a gateway: (cluster, gateway URL, Serve URL); all stopped after."""
    cluster = LocalCluster(workers=workers).start()
    app = gateway = None
    try:
        serve_url, app = start_ray_app(cluster, root / "app", cache, root / "ray-app.log")
        url, gateway = start_gateway(root / "gateway", serve_url, root / "gateway.log")
        yield cluster, url, serve_url
    finally:
        if gateway is not None:
            stop_gateway(gateway)
        if app is not None:
            stop_process(app)
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
