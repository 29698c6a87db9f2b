"""Start and stop the real service (`spcs-whisper serve`: local Ray + Ray Serve app + uvicorn gateway).

Used by the integration tests and by the benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.inference.engines import speech_engines

ENGINES = speech_engines()  # the engines that transcribe speech: the registry's, without the stand-in
READY_TIMEOUT_S = 300
# The gateway's second door: its service-function port, by the URL of its public port (start_gateway).
FUNCTION_URLS: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    url: str
    serve_url: str
    engine: str
    process: subprocess.Popen
    data_dir: Path
    log: Path
    functions_url: str = ""  # the service-function port (/functions/* answer there only)

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_service(engine: str, data_dir: Path, cache: Path, log: Path, **env: str) -> Service:
    port, serve_port, functions_port = free_port(), free_port(), free_port()
    environ = {
        **os.environ,
        "SPCS_WHISPER_ENGINE": engine,
        "SPCS_WHISPER_MODEL": "base",
        "SPCS_WHISPER_PORT": str(port),
        "SPCS_WHISPER_FUNCTIONS_PORT": str(functions_port),
        "SPCS_WHISPER_SERVE_PORT": str(serve_port),
        "SPCS_WHISPER_DATA_DIR": str(data_dir),
        "SPCS_WHISPER_CACHE_DIR": str(cache),
        "SPCS_WHISPER_CPU_THREADS": "2",
        "SPCS_WHISPER_RETRY_BACKOFF_S": "0.2",
        "RAY_DEDUP_LOGS": "0",
        **env,
    }
    out = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=environ,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    service = Service(
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{serve_port}/whisper",
        engine,
        process,
        data_dir,
        log,
        f"http://127.0.0.1:{functions_port}",
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}:\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(1)
    stop_service(service)
    raise RuntimeError(f"service not ready after {READY_TIMEOUT_S} s:\n{service.log_tail()}")


def stop_service(service: Service) -> None:
    if service.process.poll() is None:
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()


def start_gateway(data_dir: Path, serve_url: str, log: Path, **env: str) -> tuple[str, subprocess.Popen]:
    """`spcs-whisper gateway` alone against `serve_url`; returns (url, process) once /healthz answers. The URL
    is the public port's; `functions_url(url)` is its service-function port's."""
    port = free_port()
    environ = {
        **os.environ,
        "SPCS_WHISPER_PORT": str(port),
        "SPCS_WHISPER_FUNCTIONS_PORT": str(free_port()),
        "SPCS_WHISPER_DATA_DIR": str(data_dir),
        "SPCS_WHISPER_SERVE_URL": serve_url,
        **env,
    }
    out = log.open("w")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "gateway"], env=environ, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    FUNCTION_URLS[url] = f"http://127.0.0.1:{environ['SPCS_WHISPER_FUNCTIONS_PORT']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"gateway did not start:\n{log.read_text()[-3000:]}")


def functions_url(url: str) -> str:
    """The service-function port of the gateway whose public port is `url` (started by start_gateway)."""
    return FUNCTION_URLS[url]


def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Until the gateway's /readyz says 200 (it has seen the Ray app and its store answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def stop_gateway(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def rss_mb(pid: int) -> float:
    """Resident memory of a live process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"no VmRSS for pid {pid} (exited?)")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
