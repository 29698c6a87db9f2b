"""A STAND-IN for the Ray Serve app (not Whisper) that OpenAI-route tests steer through a job's prompt: six
segments, sent one per progress event in audio order over `seconds=N`, then the result; `fail=K` sends K
segments and then an error event. Each call's query is kept in `seen` under the prompt's `run=` nonce (the
same upload with the same options within the hour is one job, so tests make each prompt unique).

Served in process (httpx.ASGITransport under the real InferenceClient, tests/api/test_openai_rules.py) and
over real HTTP (tests/integration/test_openai_clients.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tests.store_load import standin_app

SEGMENTS = [
    (i * 0.5, i * 0.5 + 0.5, f" Piece {n}.") for i, n in enumerate(["one", "two", "three", "four", "five", "six"])
]
TEXT = "".join(text for _, _, text in SEGMENTS).strip()


def standin_inference(seen: dict[str, dict[str, str]]) -> FastAPI:
    """The stand-in app; `seen` collects each call's query parameters under its prompt's `run=` nonce."""
    app = standin_app()

    @app.post("/whisper/transcribe")
    async def transcribe(request: Request) -> StreamingResponse:
        async for _ in request.stream():
            pass
        query = dict(request.query_params)
        steer = dict(part.split("=", 1) for part in query.get("prompt", "").split() if "=" in part)
        seen[steer.get("run", "")] = query
        seconds = float(steer.get("seconds", 0))
        segments = [
            {
                "start": start,
                "end": end,
                "text": text,
                "tokens": [50364 + i, 400 + i],
                "seek": 0,
                "temperature": 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.2,
                "no_speech_prob": 0.01,
            }
            for i, (start, end, text) in enumerate(SEGMENTS)
        ]
        transcript = {
            "text": TEXT,
            "language": "en",
            "language_probability": 0.97,
            "duration": 3.0,
            "segments": segments,
        }

        async def events() -> AsyncIterator[str]:
            for i, segment in enumerate(segments):
                await asyncio.sleep(seconds / len(segments))
                if "fail" in steer and i == int(steer["fail"]):
                    yield (
                        json.dumps({"event": "error", "code": "corrupt_audio", "message": "stand-in", "status": 422})
                        + "\n"
                    )
                    return
                yield json.dumps({"event": "progress", "fraction": (i + 1) / 7, "segments": [segment]}) + "\n"
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    return app


def fresh(prompt: str = "") -> tuple[str, str]:
    """(the stand-in's steering words with a nonce, the nonce)."""
    run = uuid.uuid4().hex
    return f"{prompt} run={run}".strip(), run
