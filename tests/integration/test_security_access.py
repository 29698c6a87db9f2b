"""Nobody holds the real gateway process (`spcs-whisper gateway`, SQLite store, real HTTP and raw sockets) for
ever, and its readiness names no internals (issue 14): what needs a process and its sockets. The access rules
(two doors, admin role, idempotency-key scoping, error texts, metric labels) are tested in process, in
tests/api/test_access.py.

The Ray app is a STAND-IN (tests/api/test_access.py's `misbehaving_inference`), and so is the store fault of the
readiness test (a sitecustomize that makes the store's ping fail with an error naming internal paths and hosts).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.test_access import ADMIN_ROLE_ENV, INTERNAL, TOKEN, misbehaving_inference
from tests.harness import free_port, start_gateway, stop_gateway
from tests.store_load import serving, write_stage

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
READ_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.5


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stage(tmp_path_factory.mktemp("stage"), 2)


@pytest.fixture(scope="module")
def inference() -> Iterator[str]:
    with serving(misbehaving_inference(), free_port()) as url:
        yield f"{url}/whisper"


def _start(root: Path, inference: str, stage: Path, **env: str) -> tuple[str, Any]:
    url, process = start_gateway(
        root / "data",
        inference,
        root / "gateway.log",
        SPCS_WHISPER_API_TOKEN=TOKEN,
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"AUDIO_FILES_STAGE": str(stage)}),
        SPCS_WHISPER_ADMIN_ROLE=ADMIN_ROLE_ENV,
        SPCS_WHISPER_MAX_ATTEMPTS="1",
        SPCS_WHISPER_RETRY_BACKOFF_S="0.1",
        **env,
    )
    return url, process


def test_readiness_names_no_store_internals(tmp_path: Path, inference: str, stage: Path) -> None:
    """A store that fails its ping with an error naming paths and hosts (STAND-IN fault, injected through a
    sitecustomize): /readyz, open to anyone, says `unavailable` and the request id; the log has the rest."""
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(
        "# STAND-IN fault (tests/integration/test_security_access.py): the store's ping fails.\n"
        "import os\n"
        "if os.environ.get('STANDIN_STORE_FAULT'):\n"
        "    import sqlite3\n"
        "    from service.storage.sqlite import SQLiteStore\n"
        "    async def ping(self):\n"
        "        raise sqlite3.OperationalError(os.environ['STANDIN_STORE_FAULT'])\n"
        "    SQLiteStore.ping = ping\n"
    )
    secret = f"disk I/O error on /data/jobs.sqlite3 (nfs://{INTERNAL}/volumes/whisper)"
    pythonpath = os.pathsep.join([str(fault), str(ROOT), os.environ.get("PYTHONPATH", "")])
    url, process = _start(tmp_path, inference, stage, PYTHONPATH=pythonpath, STANDIN_STORE_FAULT=secret)
    try:
        deadline = time.monotonic() + 30
        while True:  # the dispatcher has seen the stand-in: what is left is the store
            response = httpx.get(f"{url}/readyz", headers={"x-request-id": "probe-1"}, timeout=10)
            if "inference: ok" in response.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "not_ready" and error["request_id"] == "probe-1"
        assert "store: unavailable" in error["message"], error
        for leak in (INTERNAL, "/data/jobs.sqlite3", "OperationalError", "disk I/O"):
            assert leak not in response.text, leak
    finally:
        stop_gateway(process)
    assert INTERNAL in (tmp_path / "gateway.log").read_text()  # the operator still learns what happened


# Nothing holds a connection for ever ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, inference: str, stage: Path) -> Iterator[int]:
    """A gateway with short read timeouts, for raw-socket clients only; yields its public port."""
    url, process = _start(
        tmp_path_factory.mktemp("strict"),
        inference,
        stage,
        SPCS_WHISPER_REQUEST_READ_TIMEOUT_S=str(READ_TIMEOUT_S),
        SPCS_WHISPER_KEEP_ALIVE_S=str(KEEP_ALIVE_S),
    )
    try:
        yield urlsplit(url).port or 0
    finally:
        stop_gateway(process)


def _raw(port: int, data: bytes, wait: float) -> tuple[bytes, float | None]:
    """Send `data` and stop sending; read until the gateway closes the connection: (what came back, seconds
    until it closed), or seconds None when it was still open after `wait`."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        begun, got = time.monotonic(), b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            return got, None
        except ConnectionResetError:
            pass
        return got, time.monotonic() - begun


def test_a_stalled_body_is_cut_off(strict: int) -> None:
    """Headers, a first piece of the body, then nothing: 408 after REQUEST_READ_TIMEOUT_S, connection closed.
    Before, uvicorn waited for the rest for ever, and so did the request's handler."""
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"X-Api-Key: {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
    )
    got, closed = _raw(strict, head.encode() + b'{"source": "@AUDIO', wait=READ_TIMEOUT_S + 10)
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b'"request_timeout"' in got and closed is not None and closed < READ_TIMEOUT_S + 5


@pytest.mark.parametrize("sent", [b"", b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow"])
def test_an_idle_connection_or_a_half_sent_head_is_closed(strict: int, sent: bytes) -> None:
    """Before, uvicorn's keep-alive timer started only after a first response: a connection that sent nothing,
    or half a request head (slowloris), stayed open for ever."""
    got, closed = _raw(strict, sent, wait=KEEP_ALIVE_S + 10)
    assert closed is not None and closed < KEEP_ALIVE_S + 5 and got == b"", got


def test_an_oversized_request_head_is_refused(strict: int) -> None:
    """Headers past MAX_HEADER_KB (32 KiB): refused before the app sees them. A head that arrived whole gets 431;
    one still arriving is cut off by h11's buffer limit (400, connection closed) instead of being buffered on."""
    filler = "a" * 40_000
    whole = f"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Filler: {filler}\r\n\r\n"
    got, _ = _raw(strict, whole.encode(), wait=10)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    assert b'"headers_too_large"' in got
    unfinished = f"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Filler: {filler}"
    got, closed = _raw(strict, unfinished.encode(), wait=10)
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    assert closed is not None
