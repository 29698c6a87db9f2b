"""Gateway side of the Ray Serve app: plain HTTP with httpx, no engine or torch imports."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1024 * 1024
log = logging.getLogger(__name__)
# What a job's error says when the Ray app fails: its URL, hosts and tracebacks stay in the gateway's log.
UNREACHABLE = "the inference service could not be reached; the job is retried"
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
            log.info("Ray Serve at %s does not answer: %r", self.url, exc)
            raise InferenceError("inference_unavailable", UNREACHABLE, False) from exc
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
                        raise _stream_error(event)
        except httpx.HTTPError as exc:
            log.warning("Ray Serve call to %s failed: %r", self.url, exc)
            raise InferenceError("inference_unavailable", UNREACHABLE, False) from exc
        raise InferenceError("inference_failed", "the Ray Serve stream ended without a result", False)


def _stream_error(event: dict[str, Any]) -> InferenceError:
    """An error event of the stream: the input's own errors (e.g. corrupt_audio) keep their message; an
    `inference_failed` carries the Ray app's repr of an exception (actor names, node addresses), which stays in
    the log."""
    code, message = str(event.get("code") or "inference_failed"), str(event.get("message", ""))[:500]
    if code == "inference_failed":
        log.warning("Ray Serve failed while transcribing: %s", str(event.get("message"))[:2000])
        message = "the inference service failed while transcribing"
    # The Decoder finds some input errors only part-way through decoding (a truncated or over-long file): it
    # sends their 4xx status, and a retry would fail the same way.
    status = event.get("status")
    status = status if isinstance(status, int) else None
    return InferenceError(code, message, status is not None and 400 <= status < 500, status)


def _error(response: httpx.Response) -> InferenceError:
    """The Ray app's own error (`{"error": {"code", "message"}}`, e.g. corrupt audio) for a 4xx; anything else
    (Ray Serve's plain-text 500 holds a traceback, a proxy's page its addresses) is logged, and the job's error
    says only the status."""
    status = response.status_code
    code, message = "inference_failed", None
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])[:500]
    except (ValueError, KeyError, TypeError):
        pass
    if message is None or status >= 500:
        log.warning("Ray Serve answered %s: %s", status, response.text[:2000])
        message = f"the inference service answered {status}"
    permanent = 400 <= status < 500 and status not in (404, 408, 429)
    return InferenceError(code, message, permanent, status)
