"""The Snowflake store under load, with a real account's costs: the real gateway (uvicorn, real HTTP) on the
Snowflake store, Snowflake EMULATED by Snowpark local testing with per-statement latency and table locks
(tests/snowflake/latency.py), and a STAND-IN inference app that answers every file at once (the engine costs
nothing here, so what is measured is the store). Used by tests/snowflake/test_store_at_scale.py and by
`make bench` (bench/store.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from service.api.app import build_backends, create_app, gateway_server
from service.config import Settings
from tests.harness import free_port, wait_ready
from tests.integration.helpers import call_function
from tests.snowflake.latency import AccountCosts, EmulatedAccount, Statement
from tests.snowflake.outage import FlakySessions

STAGE = "AUDIO_FILES_STAGE"


def standin_inference(seconds: float = 0.0) -> FastAPI:
    """STAND-IN for the Ray Serve app (not Whisper): the same HTTP protocol, a fixed transcript after
    `seconds`, with a progress event every 0.1 s meanwhile (as a long file sends them)."""
    app = standin_app()

    @app.post("/whisper/transcribe")
    async def transcribe(request: Request) -> StreamingResponse:
        size = sum([len(chunk) async for chunk in request.stream()])
        segment = {"start": 0.0, "end": 1.0, "text": " stand-in"}
        transcript = {"text": "stand-in", "language": "en", "duration": 1.0, "segments": [segment], "bytes": size}

        async def events() -> AsyncIterator[str]:
            steps = max(1, int(seconds / 0.1))
            for step in range(steps):
                yield json.dumps({"event": "progress", "fraction": step / steps, "segments": [segment]}) + "\n"
                await asyncio.sleep(seconds / steps)
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


def write_stage(folder: Path, files: int, seconds: float = 1.0) -> Path:
    """`files` short WAVs (silence, 16 kHz mono) on a folder that stands for a mounted stage."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = b"\0\0" * int(16000 * seconds)
    for i in range(files):
        with wave.open(str(folder / f"call_{i:05d}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes(frames)
    return folder


@contextmanager
def _running(server: uvicorn.Server, **run: Any) -> Iterator[None]:
    """`server` in a thread until the block ends."""
    thread = threading.Thread(target=server.run, kwargs=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """`app` under uvicorn on `port` (a free one by default), in a thread: real HTTP."""
    port = port or free_port()
    with _running(uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def serving_gateway(config: Settings, sessions: Any = None) -> Iterator[tuple[str, str]]:
    """The gateway in this process, as `spcs-whisper gateway` serves it: one app on two free ports, the public
    one and the service functions' one. Yields (public URL, service-function URL)."""
    doors = config.gateway.model_copy(update={"port": free_port(), "functions_port": free_port()})
    config = config.model_copy(update={"gateway": doors})
    server, sockets = gateway_server(config, create_app(config, build_backends(config, sessions)), log_level="warning")
    with _running(server, sockets=sockets):
        yield f"http://127.0.0.1:{config.gateway.port}", f"http://127.0.0.1:{config.gateway.functions_port}"


def standin_app() -> FastAPI:
    """A STAND-IN Ray Serve app (not Whisper) with its `/ready` route; tests add their `/transcribe`."""
    app = FastAPI()

    @app.get("/whisper/ready")
    async def ready() -> dict[str, Any]:
        return {"status": "ready", "engine": "stand-in", "model": "base", "multilingual": True}

    return app


@dataclass
class Rig:
    url: str
    sessions: FlakySessions
    account: EmulatedAccount
    functions_url: str = ""  # the service functions' port

    def snowflake_rows(self, table: str) -> list[dict[str, Any]]:
        """What the emulated account holds, read behind the service's back (not charged)."""
        with self.account.uncharged():
            return [r.as_dict() for r in self.sessions.session.table(table).collect()]


@contextmanager
def store_rig(
    tmp: Path, files: int, costs: AccountCosts | None = None, inference_s: float = 0.0, **settings: Any
) -> Iterator[Rig]:
    """The gateway on the Snowflake store over the EMULATED account, a stage of `files` short files and the
    STAND-IN inference app (each file takes it `inference_s`)."""
    sessions = FlakySessions()
    account = EmulatedAccount(sessions.session, costs)
    stage = write_stage(tmp / "stage", files)
    with serving(standin_inference(inference_s), free_port()) as inference:
        config = Settings(
            store="snowflake",
            snowflake_local_testing=True,
            translate_method="whisper",
            data_dir=tmp / "data",
            serve_url=f"{inference}/whisper",
            stage_mounts={STAGE: stage},
            **settings,
        )
        with serving_gateway(config, sessions) as (url, functions):
            wait_ready(url, 60)
            try:
                yield Rig(url, sessions, account, functions)
            finally:
                account.close()
    sessions.close()


@contextmanager
def rig_client(files: int, costs: AccountCosts | None = None, tmp: Path | None = None, **kw: Any) -> Iterator[Any]:
    """`store_rig` (in `tmp`, else a temporary folder) and an HTTP client of its gateway: (rig, client)."""
    with contextlib.ExitStack() as stack:
        folder = tmp or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rig = stack.enter_context(store_rig(folder, files, costs, **kw))
        yield rig, stack.enter_context(httpx.Client(base_url=rig.url, timeout=900))


def charged_seconds(statements: list[Statement], costs: AccountCosts) -> float:
    """The account time `statements` cost, one after another: what bounds the store's throughput."""
    per = {"SELECT": costs.select_s, "SHOW": costs.metadata_s, "CREATE TEMP": costs.metadata_s}
    return sum(per.get(s.verb, costs.dml_s) for s in statements)


def wait_landed(rig: Rig, job_ids: set[str], deadline: float) -> None:
    """Until Snowflake's tables hold every job as succeeded, with its transcript."""
    while True:
        done = {r["JOB_ID"] for r in rig.snowflake_rows("TRANSCRIPTION_JOBS") if r["STATUS"] == "succeeded"}
        texts = {r["JOB_ID"] for r in rig.snowflake_rows("TRANSCRIPTIONS")}
        if job_ids <= done and job_ids <= texts:
            return
        assert time.monotonic() < deadline, f"{len(job_ids - done)} of {len(job_ids)} jobs not in the tables"
        time.sleep(0.1)


def counted(rig: Rig, start: float, jobs: int) -> dict[str, Any]:
    statements = rig.account.since(start)
    warehouse = [s for s in statements if s.warehouse]
    return {
        "statements": len(statements),
        "warehouse_statements": len(warehouse),
        "warehouse_statements_per_job": round(len(warehouse) / jobs, 3),
        "charged_s_per_job": round(charged_seconds(statements, rig.account.costs) / jobs, 4),
        "by_kind": rig.account.summary(start),
    }


def run_stage_batch(rig: Rig, client: httpx.Client, files: int, timeout: float = 600) -> dict[str, Any]:
    """POST /v1/batches over the whole stage; wait until every job succeeded and Snowflake's tables hold every
    job as succeeded with its transcript. Returns timings and statement counts."""
    start = time.monotonic()
    response = client.post("/v1/batches", json={"stage": f"@{STAGE}", "pattern": r"call_.*[.]wav", "language": "en"})
    assert response.status_code == 202, response.text
    batch_id = response.json()["id"]
    deadline = start + timeout
    while True:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] != "running":
            break
        assert time.monotonic() < deadline, f"batch not done after {timeout} s: {batch['counts']}"
        time.sleep(0.2)
    served_s = time.monotonic() - start
    assert batch["counts"] == {"succeeded": files}, batch["counts"]
    wait_landed(rig, set(batch["jobs"]), deadline)
    landed_s = time.monotonic() - start
    return {
        "files": files,
        "served_s": round(served_s, 2),
        "landed_s": round(landed_s, 2),
        "jobs_per_s": round(files / landed_s, 2),
        **counted(rig, start, files),
    }


def run_transcribe_function(rig: Rig, client: httpx.Client, rows: int = 8, timeout: float = 600) -> dict[str, Any]:
    """`TRANSCRIBE()` over `rows` stage files as Snowflake sends it; statements from the call until its jobs
    are in Snowflake's tables (the export included)."""
    start = time.monotonic()
    data = [[i, f"@{STAGE}/call_{i:05d}.wav", "en"] for i in range(rows)]
    headers = {"sf-external-function-query-batch-id": f"load-{start}", "sf-context-current-user": "ANALYST"}
    with httpx.Client(base_url=rig.functions_url, timeout=client.timeout) as snowflake:  # Snowflake's own port
        response = call_function(snowflake, "/functions/transcribe", data, headers)
    assert response.status_code == 200, response.text
    answered_s = time.monotonic() - start
    values = [value for _, value in response.json()["data"]]
    assert all(v.get("text") == "stand-in" for v in values), values
    wait_landed(rig, {v["job_id"] for v in values}, start + timeout)
    return {"rows": rows, "answered_s": round(answered_s, 2), **counted(rig, start, rows)}


def idle_statements(rig: Rig, seconds: float) -> dict[str, Any]:
    """Statements that touch a table while the gateway has no work, over `seconds`."""
    start = time.monotonic()
    time.sleep(seconds)
    touched = rig.account.table_statements(start)
    return {
        "idle_s": seconds,
        "table_statements": len(touched),
        "per_hour": round(len(touched) * 3600 / seconds, 1),
        "by_kind": rig.account.summary(start),
    }
