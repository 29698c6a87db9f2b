"""Gateway side of the Ray Serve app: the `Inference` protocol, and `InferenceClient`, which implements it over
plain HTTP with httpx (no engine or torch imports)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import httpx

from service.errors import ServiceError
from service.inference.types import AppInfo
from service.options import JobOptions, Lane
from service.transcript import Segment, Transcript

CHUNK = 1024 * 1024
log = logging.getLogger(__name__)
# What a job's error says when the Ray app fails: its URL, hosts and tracebacks stay in the gateway's log.
UNREACHABLE = "the inference service could not be reached; the job is retried"
ProgressCallback = Callable[[float, list[Segment]], Awaitable[None]]  # fraction done, newly final segments


class InferenceError(ServiceError):
    """A call to the Ray Serve app failed; `retryable` False: the input's fault (e.g. corrupt audio)."""

    code = "inference_failed"
    status = 500


class Inference(Protocol):
    """What the gateway needs of the Ray Serve app (InferenceClient; tests use a fake)."""

    async def ready(self) -> AppInfo:
        """The model's facts (`model`, `multilingual`, `job_capacity`, ...); InferenceError while it is down."""
        ...

    async def transcribe(
        self,
        audio: Path,
        options: JobOptions,
        on_progress: ProgressCallback | None = None,
        *,
        lane: Lane = "bulk",
    ) -> Transcript:
        """The transcript of `audio`; `on_progress` gets the fraction done and the segments now final. `lane`:
        the job's queue, which the Ray app serves interactive before bulk."""
        ...

    async def close(self) -> None: ...


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _unavailable(message: str = UNREACHABLE) -> InferenceError:
    return InferenceError(message, code="inference_unavailable", status=503, retryable=True)


class InferenceClient:
    """`Inference` over HTTP: `POST {url}/transcribe` (NDJSON events) and `GET {url}/ready`. `transport`: an
    httpx transport to use instead of the network (tests: `httpx.ASGITransport` of a stand-in app)."""

    def __init__(self, url: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def ready(self) -> AppInfo:
        """Model facts when the app answers; raises InferenceError (retryable) otherwise."""
        try:
            response = await self._http.get(f"{self.url}/ready", timeout=5.0)
        except httpx.HTTPError as exc:
            log.info("Ray Serve at %s does not answer: %r", self.url, exc)
            raise _unavailable() from exc
        if response.status_code != 200:
            raise _unavailable(f"Ray Serve answered {response.status_code}")
        try:
            return AppInfo.model_validate(response.json())
        except ValueError as exc:  # not the app's answer (a proxy's page): as good as down
            log.warning("Ray Serve's /ready answer is not its facts: %s", response.text[:500])
            raise _unavailable("Ray Serve answered something else than its facts") from exc

    async def transcribe(
        self,
        audio: Path,
        options: JobOptions,
        on_progress: ProgressCallback | None = None,
        *,
        lane: Lane = "bulk",
    ) -> Transcript:
        """Send the stored file with `options.query()` and the `lane` query parameter; report progress events;
        return the transcript or raise InferenceError."""
        try:
            async with self._http.stream(
                "POST",
                f"{self.url}/transcribe",
                params={**options.query(), "lane": lane},
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
                        segments = [Segment.model_validate(s) for s in event.get("segments") or []]
                        await on_progress(float(event["fraction"]), segments)
                    elif event["event"] == "result":
                        return Transcript.load(event["transcript"])
                    elif event["event"] == "error":
                        raise _stream_error(event)
        except httpx.HTTPError as exc:
            log.warning("Ray Serve call to %s failed: %r", self.url, exc)
            raise _unavailable() from exc
        raise InferenceError("the Ray Serve stream ended without a result", retryable=True)


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
    if isinstance(status, int) and 400 <= status < 500:
        return InferenceError(message, code=code, status=status, retryable=False)
    return InferenceError(message, code=code, status=status if isinstance(status, int) else 500, retryable=True)


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
    retryable = not 400 <= status < 500 or status in (404, 408, 429)
    return InferenceError(message, code=code, status=status, retryable=retryable)
