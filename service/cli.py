"""`spcs-whisper serve | gateway | ray-app | transcribe | submit | status | wait | batch`: the entry points."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from service import cli_jobs, cli_transcribe
from service.config import Settings, get_settings
from service.logs import configure as configure_logging


def _gateway(settings: Settings) -> None:
    from service.api.app import gateway_server

    server, sockets = gateway_server(settings)
    print(
        f"spcs-whisper gateway on http://{settings.gateway.host}:{settings.gateway.port} "
        f"(service functions: port {settings.gateway.functions_port})",
        flush=True,
    )
    server.run(sockets=sockets)


def _ray_app(settings: Settings) -> None:
    from service.inference import runner

    runner.run(settings)


def _serve(settings: Settings) -> None:
    """Start the Ray Serve app in a child process and the gateway in this one (it never imports torch)."""
    env = {**os.environ, "SPCS_WHISPER_EXIT_WITH_PARENT": "1"}
    child = subprocess.Popen([sys.executable, "-m", "service.cli", "ray-app"], env=env)

    def stop_child(*_: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    try:
        _gateway(settings)
    finally:
        stop_child()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="spcs-whisper", description="Whisper transcription service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="local Ray Serve app + gateway (what `make run` starts)")
    sub.add_parser("gateway", help="the HTTP gateway only (Ray Serve app elsewhere: SPCS_WHISPER_SERVE_URL)")
    sub.add_parser("ray-app", help="the Ray Serve app only (local Ray, or SPCS_WHISPER_RAY_ADDRESS)")
    cli_transcribe.add_parser(sub)
    cli_jobs.add_parsers(sub)
    args = parser.parse_args(argv)
    configure_logging()
    settings = get_settings()
    if args.command == "transcribe":
        sys.exit(cli_transcribe.run(args, settings))
    if args.command in cli_jobs.COMMANDS:
        sys.exit(cli_jobs.run(args, settings))
    settings.gateway.data_dir.mkdir(parents=True, exist_ok=True)
    {"serve": _serve, "gateway": _gateway, "ray-app": _ray_app}[args.command](settings)


if __name__ == "__main__":
    main()
