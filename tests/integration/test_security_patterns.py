"""Issue 14 against the real gateway process: a batch pattern built for catastrophic backtracking cannot freeze
it. (The same attack, the allow-list and the time bound in process: tests/api/test_stage_security.py.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.harness import free_port, start_gateway, stop_gateway
from tests.hostile import HOSTILE_PATTERN, letters_name

FILES = 5000


def test_a_hostile_pattern_never_stalls_the_gateway_process(tmp_path: Path) -> None:
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    for i in range(FILES):
        (bulk / letters_name(i)).touch()
    url, process = start_gateway(
        tmp_path / "data",
        f"http://127.0.0.1:{free_port()}/absent",  # no Ray app: matching happens before any job exists
        tmp_path / "gw.log",
        SPCS_WHISPER_STAGE_MOUNTS=json.dumps({"BULK_STAGE": str(bulk)}),
    )
    out: dict[str, Any] = {}

    def post() -> None:
        start = time.monotonic()
        with httpx.Client(base_url=url, timeout=120) as client:
            out["response"] = client.post("/v1/batches", json={"stage": "@BULK_STAGE", "pattern": HOSTILE_PATTERN})
        out["seconds"] = time.monotonic() - start

    try:
        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        slowest, probes = 0.0, 0
        with httpx.Client(base_url=url, timeout=1.0) as health:  # a read timeout of 1 s fails the test
            deadline = time.monotonic() + 30
            while (thread.is_alive() or probes < 3) and time.monotonic() < deadline:
                start = time.monotonic()
                assert health.get("/healthz").status_code == 200
                slowest, probes = max(slowest, time.monotonic() - start), probes + 1
                time.sleep(0.05)
        thread.join(timeout=1)
        assert not thread.is_alive(), "the hostile batch took longer than 30 s"
        assert slowest < 1.0
        response = out["response"]
        code = response.json()["error"]["code"]
        assert (response.status_code, code) in {(404, "no_matching_files"), (422, "invalid_pattern")}, response.text
        assert out["seconds"] < 10, out["seconds"]
    finally:
        stop_gateway(process)
