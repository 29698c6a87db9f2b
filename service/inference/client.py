"""Gateway side of the Ray Serve app: plain HTTP with httpx, no engine or torch imports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1024 * 1024
ProgressCallback = Callable[[float, list[dict[str, Any]]], Awaitable[None]]  # fraction done, new segments


class InferenceError(Exception):
    """A call to the Ray Serve app failed. `permanent` errors are the input's fault: do not retry."""

    def __init__(self, code: str, message: str, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.permanent, self.status = code, message, permanent, status


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class InferenceClient:
    """Calls `POST {url}/transcribe` and `GET {url}/ready` of the Ray Serve application."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))

    async def close(self) -> None:
        await self._http.aclose()

    async def ready(self) -> dict[str, Any]:
        """Model facts when the app answers; raises InferenceError (transient) otherwise."""
        try:
            response = await self._http.get(f"{self.url}/ready", timeout=5.0)
        except httpx.HTTPError as exc:
            raise InferenceError("inference_unavailable", f"Ray Serve does not answer: {exc!r}", False) from exc
        if response.status_code != 200:
            raise InferenceError("inference_unavailable", f"Ray Serve answered {response.status_code}", False)
        return response.json()

    async def transcribe(
        self, audio: Path, params: dict[str, Any], on_progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Send the stored file; report progress events; return the transcript or raise InferenceError."""
        query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items() if v is not None}
        try:
            async with self._http.stream(
                "POST",
                f"{self.url}/transcribe",
                params=query,
                content=_file_chunks(audio),
                headers={"content-type": "application/octet-stream"},
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error(response)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["event"] == "progress" and on_progress is not None:
                        await on_progress(float(event["fraction"]), event.get("segments", []))
                    elif event["event"] == "result":
                        return event["transcript"]
                    elif event["event"] == "error":
                        raise InferenceError(event.get("code", "inference_failed"), event.get("message", ""), False)
        except httpx.HTTPError as exc:
            raise InferenceError("inference_unavailable", f"Ray Serve call failed: {exc!r}", False) from exc
        raise InferenceError("inference_failed", "the Ray Serve stream ended without a result", False)


def _error(response: httpx.Response) -> InferenceError:
    code, message = "inference_failed", response.text[:500]
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        pass
    permanent = 400 <= response.status_code < 500 and response.status_code not in (404, 408, 429)
    return InferenceError(code, message, permanent, response.status_code)
