"""Run the Ray Serve application: start (or join) Ray, deploy, and stay up until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading

from service.config import Settings

log = logging.getLogger(__name__)
ROUTE_PREFIX = "/whisper"


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Stop when the launching process is gone (even after SIGKILL), so no Ray instance is orphaned."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("parent process %d is gone; shutting down", parent)
            stop.set()


def run(settings: Settings) -> None:
    """Block serving the app; on a signal, shut Serve (and a Ray instance we started) down."""
    import ray
    from ray import serve

    from service.inference.deployment import APP_NAME, build_app

    settings.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.inference.ray_address:
        ray.init(address=settings.inference.ray_address, log_to_driver=False)
    else:
        temp_dir = os.path.join(tempfile.gettempdir(), f"spcsw-ray-{settings.inference.serve_port}")
        num_cpus = settings.inference.ray_num_cpus or max(4, os.cpu_count() or 1)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _temp_dir=temp_dir,
            log_to_driver=True,
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if os.environ.get("SPCS_WHISPER_EXIT_WITH_PARENT") == "1":
        threading.Thread(target=_watch_parent, args=(os.getppid(), stop), daemon=True).start()

    # One HTTP proxy, on the head: several nodes may share a host (a local cluster), and in SPCS the
    # gateway reaches the app through the head service's DNS name.
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": settings.inference.serve_host, "port": settings.inference.serve_port},
    )
    serve.run(build_app(settings), name=APP_NAME, route_prefix=ROUTE_PREFIX, blocking=False)
    log.info(
        "Ray Serve app ready at http://%s:%s%s",
        settings.inference.serve_host,
        settings.inference.serve_port,
        ROUTE_PREFIX,
    )
    print(
        f"ray-serve ready at http://{settings.inference.serve_host}:{settings.inference.serve_port}{ROUTE_PREFIX}",
        flush=True,
    )

    stop.wait()
    log.info("shutting down Ray Serve")
    serve.shutdown()
    ray.shutdown()
