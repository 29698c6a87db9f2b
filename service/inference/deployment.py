"""The Ray Serve application: a `Decoder` ingress (PyAV decode, VAD cut, fan-out, stitch) and a `Whisper`
deployment that batches 30 s windows from all requests (`batcher.Batcher`).

HTTP (under the app's route prefix, `/whisper` by default):
  POST /transcribe?language=&task=&word_timestamps=&beam_size=&prompt=&temperature=&hotwords=
                   &vad_filter=&vad_threshold=&vad_min_silence_ms=&vad_speech_pad_ms=   body: the file bytes
       -> 4xx JSON error for input refused on opening, else NDJSON: {"event": "progress", "fraction", "segments"}
          ... then {"event": "result", "transcript": {...}} (or {"event": "error", "code", "message", "status"}).
          Progress segments come in audio order: their concatenation is the transcript's `segments`.
  GET  /ready   model, engine and batching facts once the model is loaded

Memory is bounded, not proportional to the audio's length: a body is spooled to a temporary file, decoded and
cut in steps (`stream.py`) while its windows go to Whisper; at most `decode_concurrency` files decode at once per
replica (the others wait, on disk), and at most `decode_windows_in_flight` windows of all jobs together are at
Whisper (decoding waits beyond). A job whose request goes away (the gateway cancelled it, or the client
disconnected) stops decoding.
"""

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from service.audio import SAMPLE_RATE, AudioError, AudioInfo
from service.config import Settings, gpu_present
from service.inference.batcher import Batcher
from service.inference.scaling import decoder_options, job_capacity, whisper_gpus, whisper_options
from service.inference.stats import Reporter, stats_actor
from service.inference.stream import BodyTooLarge, Steps, Tick, WindowSource, spool
from service.inference.types import DecodeOptions, Task, WindowResult
from service.inference.windows import MAX_FOLLOW_UPS, Window, stitch, tail_start, transcript_text, vad_options
from service.languages import normalise_language

log = logging.getLogger("ray.serve")
APP_NAME = "whisper"  # the Serve application's name (service/inference/runner.py deploys under it)
# A Whisper call whose replica went away before answering (its node died, it was restarted, or none is up yet):
# worth sending again. An engine's own exception is not.
REPLICA_LOST = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.ObjectLostError,
    ReplicaUnavailableError,
    DeploymentUnavailableError,
)


def replica_states() -> dict[str, dict[str, int]]:
    """Replicas per deployment of this app and state (RUNNING, STARTING, PENDING_ALLOCATION...), from the Serve
    controller ({} if it cannot say)."""
    try:
        status = serve.status().applications[APP_NAME]
    except Exception:  # noqa: BLE001 - only informative: the caller falls back to one replica
        return {}
    return {name: {str(k): int(v) for k, v in d.replica_states.items()} for name, d in status.deployments.items()}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class _EventStream(StreamingResponse):
    """NDJSON events whose job resources (decode slot, open file, spooled body) are released however the
    response ends: finished, failed, or cancelled because the request went away, even before it started."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="application/x-ndjson")
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await asyncio.shield(self._release())


class _Job:
    """One request's decode: its spooled body, its source and steps, its slot; `release` runs once."""

    def __init__(self, path: Path, steps: Steps, slots: asyncio.Semaphore, cleanups: set[asyncio.Task]) -> None:
        self.path, self.steps, self._slots, self._cleanups = path, steps, slots, cleanups
        self._release: asyncio.Task | None = None

    def release(self) -> asyncio.Task:
        """Close the source (after the step in flight), remove the body, free the slot: in a task of its own,
        so a cancellation of the request cannot interrupt it."""
        if self._release is None:
            self._release = asyncio.ensure_future(self._released())
            self._cleanups.add(self._release)
            self._release.add_done_callback(self._cleanups.discard)
        return self._release

    async def _released(self) -> None:
        try:
            await self.steps.close()
        finally:
            self.path.unlink(missing_ok=True)
            self._slots.release()


@serve.deployment
class Whisper:
    """One model per replica; windows from all requests are batched together per decode options."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from service.inference.engines import load_engine

        self.settings = Settings(**settings)
        self.engine = load_engine(self.settings)
        self.batcher: Batcher[np.ndarray, DecodeOptions, WindowResult] = Batcher(
            self._run_batch,
            self.settings.max_batch_size,
            quiet_s=self.settings.batch_wait_timeout_s,
            max_wait_s=self.settings.batch_max_wait_s,
        )
        self.reporter = Reporter("Whisper")
        self.node = self.reporter.counters.node

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.engine.name,
            "model": self.engine.model_name,
            "multilingual": self.engine.multilingual,
            "max_batch_size": self.settings.max_batch_size,
            "batches": self.batcher.batches,
            "windows": self.batcher.items,
            "mean_batch_size": round(self.batcher.items / self.batcher.batches, 3) if self.batcher.batches else None,
            "queued_windows": self.batcher.pending(),
        }

    async def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return await asyncio.to_thread(self.engine.detect_language, audio)

    async def transcribe_window(self, audio: np.ndarray, options: DecodeOptions) -> WindowResult:
        """One window's result; windows sharing decode options are batched while the engine is busy."""
        return await self.batcher.submit(options, audio)

    def _run_batch(self, options: DecodeOptions, windows: list[np.ndarray]) -> list[WindowResult]:
        started = time.perf_counter()
        try:
            results = self.engine.transcribe_batch(windows, options)
        finally:
            self.reporter.add(time.perf_counter() - started, batches=1, windows=len(windows))
        for result in results:
            result.node = self.node
            if result.temperature is None:
                result.temperature = options.temperature
        return results


api = FastAPI(title="spcs-whisper inference", docs_url=None, redoc_url=None)


@serve.deployment
@serve.ingress(api)
class Decoder:
    """HTTP ingress: decodes any container, cuts windows, fans them out to Whisper, stitches the result."""

    def __init__(self, whisper: DeploymentHandle, settings: dict[str, Any]) -> None:
        self.whisper = whisper
        self.settings = Settings(**settings)
        self._info: dict[str, Any] | None = None
        self._slots = asyncio.Semaphore(self.settings.decode_concurrency)
        self._cleanups: set[asyncio.Task] = set()
        settings = self.settings
        self.in_flight_limit = settings.decode_windows_in_flight or (
            2 * settings.max_batch_size * settings.whisper_bounds[1]
        )
        self._window_budget = asyncio.Semaphore(self.in_flight_limit)
        self.windows_retried = 0
        self.reporter = Reporter("Decoder")

    async def _model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self._whisper("info")
        return self._info

    async def _whisper(self, method: str, *args: Any) -> Any:
        """A call to any Whisper replica; sent again (to whichever replica is alive and free) when the one that
        had it died first, e.g. with its worker node: the job goes on instead of failing."""
        for attempt in range(self.settings.window_retries + 1):
            try:
                return await getattr(self.whisper, method).remote(*args)
            except REPLICA_LOST as exc:
                if attempt == self.settings.window_retries:
                    raise
                self.windows_retried += 1
                log.warning("Whisper replica lost during %s (%s); sending it again", method, type(exc).__name__)
                await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    async def _window(
        self, audio: np.ndarray, offset: float, options: DecodeOptions, depth: int = 0
    ) -> list[tuple[float, WindowResult]]:
        """One window through the batched Whisper deployment, plus its undecoded tail if Whisper stopped early."""
        result = await self._whisper("transcribe_window", audio, options)
        pieces = [(offset, result)]
        start = tail_start(audio, result)
        if start is not None and depth < MAX_FOLLOW_UPS:
            tail = audio[int(start * SAMPLE_RATE) :]
            pieces += await self._window(tail, offset + start, options, depth + 1)
        return pieces

    @api.get("/ready")
    async def ready(self) -> dict[str, Any]:
        """Model facts, the replicas running now and the jobs the gateway may usefully send at once."""
        info = await self._whisper("info")
        states = await asyncio.to_thread(replica_states)
        running = {name: counts.get("RUNNING", 0) for name, counts in states.items()}
        return {
            "status": "ready",
            **info,
            "replicas": running,
            "replica_states": states,
            "job_capacity": job_capacity(self.settings, running.get("Whisper", 1)),
            "windows_retried": self.windows_retried,
        }

    @api.get("/stats")
    async def stats(self) -> dict[str, Any]:
        """Every replica's counters (busy seconds, batches or files, windows), as each last reported them."""
        try:
            rows = await stats_actor().all.remote()
        except Exception as exc:  # noqa: BLE001
            return {"replicas": [], "error": repr(exc)}
        return {"replicas": sorted(rows, key=lambda r: (r["deployment"], r["node"], r["replica"]))}

    @api.post("/transcribe")
    async def transcribe(
        self,
        request: Request,
        language: str | None = Query(None),
        task: Task = Query("transcribe"),
        word_timestamps: bool = Query(False),
        beam_size: int | None = Query(None, ge=1, le=16),
        prompt: str | None = Query(None, max_length=16_000),
        temperature: float = Query(0.0, ge=0.0, le=1.0),
        hotwords: str | None = Query(None, max_length=1000),
        vad_filter: bool | None = Query(None),
        vad_threshold: float | None = Query(None, ge=0.0, le=1.0),
        vad_min_silence_ms: int | None = Query(None, ge=0, le=10_000),
        vad_speech_pad_ms: int | None = Query(None, ge=0, le=2000),
    ) -> Response:
        """Errors about the input answer at once (4xx JSON); then the work streams as NDJSON events.

        `prompt` is previous text (the engines keep its last 223 tokens), `hotwords` words or phrases to bias
        decoding (put before it, as faster-whisper does); `vad_filter` turns the Silero VAD cut on or off for
        this file (unset: the service's setting) and `vad_threshold`, `vad_min_silence_ms`, `vad_speech_pad_ms`
        set its threshold, min_silence_duration_ms and speech_pad_ms."""
        started = time.perf_counter()
        try:
            lang = normalise_language(language)
        except ValueError as exc:
            return _error(422, "unsupported_language", str(exc))
        info = await self._model_info()
        if not info["multilingual"] and (lang not in (None, "en") or task == "translate"):
            return _error(422, "unsupported_language", f"model {info['model']} is English-only")
        try:
            path = await spool(request.stream(), self.settings.max_upload_bytes)
        except BodyTooLarge as exc:
            return _error(413, "file_too_large", str(exc))
        vad = self.settings.vad if vad_filter is None else vad_filter
        source = WindowSource(
            path,
            vad=vad,
            max_seconds=self.settings.max_audio_seconds,
            vad_options=vad_options(vad_threshold, vad_min_silence_ms, vad_speech_pad_ms),
        )
        job = _Job(path, Steps(source), self._slots, self._cleanups)
        try:
            waited = time.perf_counter()
            await self._slots.acquire()
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        try:
            waited = time.perf_counter() - waited
            log.info("decode slot after %.2fs (%d per replica)", waited, self.settings.decode_concurrency)
            audio_info = await job.steps.open()
        except AudioError as exc:
            await asyncio.shield(job.release())
            return _error(exc.status, exc.code, exc.message)
        except BaseException:
            await asyncio.shield(job.release())
            raise
        options = DecodeOptions(
            language=lang or "en",
            task=task,
            word_timestamps=word_timestamps,
            beam_size=beam_size or self.settings.beam_size,
            initial_prompt=prompt or None,
            temperature=temperature,
            hotwords=hotwords.strip() if hotwords and hotwords.strip() else None,
        )
        events = self._events(job, source, audio_info, options, lang, info, started, waited)
        return _EventStream(events, job.release)

    async def _events(
        self,
        job: _Job,
        source: WindowSource,
        audio_info: AudioInfo,
        options: DecodeOptions,
        lang: str | None,
        info: dict[str, Any],
        started: float,
        waited: float,
    ) -> AsyncIterator[str]:
        """NDJSON: a `progress` line as each window (with its tails) is done and as decoding moves on, then the
        `result`. A window goes to Whisper once the replica's window budget (`in_flight_limit` windows, all jobs
        together) has room, and the job decodes on only while it has no window waiting: decoding keeps pace
        with Whisper. The decode slot is given back as soon as the last window is cut.

        Windows finish in any order; their segments are sent in audio order: a finished window's wait until
        every window before it has been sent, so the progress segments, concatenated, are the transcript's."""
        pieces: list[tuple[float, WindowResult]] = []
        segments: list[dict] = []  # the segments sent so far, in audio order
        held: dict[int, list[tuple[float, WindowResult]]] = {}  # finished windows not yet sent, by number
        numbers: dict[asyncio.Task, int] = {}  # each window's number, in the order they were cut
        sent = released = 0  # windows sent to Whisper; windows whose segments have been sent on
        ready: deque[Window] = deque()  # decoded windows not yet sent (waiting for the language, or room)
        running: set[asyncio.Task] = set()
        step: asyncio.Task | None = None
        grant: asyncio.Task | None = None  # a unit of the window budget, asked for the next ready window
        budget = self._window_budget
        decoding, detect = True, lang is None
        probability = None
        done_speech = reported = 0.0
        first_sent = last_done = None

        def fraction() -> float:
            total = source.windows.seconds
            if decoding:  # the speech still to come, estimated from the share of the audio decoded so far
                declared = audio_info.duration
                share = source.seconds / declared if declared else 0.0
                total = total / share if share > 0 else float("inf") if declared else total
                return min(done_speech / total if total else 0.0, 0.99)
            return done_speech / total if total else 1.0

        def progress(new: list[dict]) -> str | None:
            nonlocal reported
            value = round(min(max(fraction(), reported), 1.0), 4)
            if not new and value <= reported:
                return None
            reported = value
            return json.dumps({"event": "progress", "fraction": value, "segments": new}) + "\n"

        def release() -> list[dict]:
            """The segments of the finished windows that now follow on from those sent, in audio order."""
            nonlocal released
            new: list[dict] = []
            while released in held:
                new += stitch(held.pop(released), source.windows.speech)
                released += 1
            segments.extend(new)
            return new

        try:
            while True:
                if detect and (ready or not decoding):
                    if ready:
                        lang, probability = await self._whisper("detect_language", ready[0].audio)
                        options = replace(options, language=lang or "en")
                    detect = False
                if not detect and ready and grant is None:
                    grant = asyncio.ensure_future(budget.acquire())
                if step is None and decoding and not ready:
                    step = asyncio.ensure_future(job.steps.next())
                waiting = running | {t for t in (step, grant) if t is not None}
                if not waiting:
                    break
                finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                lines: list[str | None] = []
                if grant is not None and grant in finished:
                    grant, window = None, ready.popleft()
                    first_sent = first_sent or time.perf_counter()
                    task = asyncio.ensure_future(self._timed_window(window.audio, window.offset, options))
                    task.add_done_callback(lambda _: budget.release())  # finished, failed or cancelled
                    running.add(task)
                    numbers[task], sent = sent, sent + 1
                if step is not None and step in finished:
                    item, step = step.result(), None  # AudioError: the file broke part-way
                    if item is None:
                        decoding = False
                        job.release()  # the slot goes to the next file; this job's windows are all cut
                    elif isinstance(item, Tick):
                        lines.append(progress([]))
                    else:
                        ready.append(item)
                done_windows = finished & running
                for task in done_windows:
                    running.discard(task)
                    seconds, window_pieces = task.result()
                    last_done = time.perf_counter()
                    pieces += window_pieces
                    done_speech += seconds
                    held[numbers.pop(task)] = window_pieces
                if done_windows:
                    lines.append(progress(release()))
                for line in lines:
                    if line is not None:
                        yield line
            assert not held and released == sent, "a window finished without its segments being sent"
        except AudioError as exc:  # found while decoding: the input's fault, not worth a retry
            yield json.dumps({"event": "error", "code": exc.code, "message": exc.message, "status": exc.status}) + "\n"
            return
        except Exception as exc:  # a replica died mid-way: the gateway retries the whole job
            yield json.dumps({"event": "error", "code": "inference_failed", "message": repr(exc)}) + "\n"
            return
        finally:
            if grant is not None:  # a budget unit asked for and not used
                if grant.done() and not grant.cancelled():
                    budget.release()
                else:
                    grant.cancel()
            for task in running | ({step} if step is not None else set()):
                task.cancel()
            if decoding or running:  # cancelled (the request went away) or failed part-way
                declared = f"{audio_info.duration:.0f} s" if audio_info.duration else "unknown"
                log.info(
                    "transcription stopped before its end: decoded %.0f s of %s, %d windows cancelled",
                    source.seconds,
                    declared,
                    len(running),
                )
            await asyncio.shield(job.release())
            self.reporter.add(source.decode_s + source.vad_s, batches=1, windows=len(pieces))
        done = time.perf_counter()
        transcript = {
            "text": transcript_text(segments),
            "language": lang,  # None when auto-detection found no speech to detect from
            "language_probability": probability,
            "duration": round(source.seconds, 3),
            "speech_seconds": round(source.windows.seconds, 3),
            "segments": segments,
            "engine": info["engine"],
            "model": info["model"],
            "timings": {
                "slot_wait_s": round(waited, 4),  # waiting for one of the replica's decode slots
                "decode_s": round(source.decode_s, 4),  # decoding and VAD overlap inference: CPU time of each
                "vad_s": round(source.vad_s, 4),
                "inference_s": round((last_done or done) - (first_sent or done), 4),
                "total_s": round(done - started, 4),
                "peak_buffered_s": round(source.peak_buffered / SAMPLE_RATE, 3),
                "whisper_nodes": sorted({r.node for _, r in pieces if r.node}),  # Ray nodes that decoded it
            },
        }
        yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

    async def _timed_window(
        self, audio: np.ndarray, offset: float, options: DecodeOptions
    ) -> tuple[float, list[tuple[float, WindowResult]]]:
        return audio.shape[0] / SAMPLE_RATE, await self._window(audio, offset, options)


def build_app(settings: Settings) -> serve.Application:
    """Bind both deployments with resources, autoscaling and batching limits taken from `settings`."""
    config = settings.model_dump(mode="json")
    on_gpu = settings.device == "cuda" or (settings.device == "auto" and gpu_present())
    # On a cluster the driver (Ray head) has no GPU while the workers do: set WHISPER_NUM_GPUS=1 there, so
    # each replica claims a worker's GPU and Ray places one replica per GPU.
    whisper = Whisper.options(**whisper_options(settings, whisper_gpus(settings, on_gpu))).bind(config)
    return Decoder.options(**decoder_options(settings)).bind(whisper, config)


def app_builder(args: dict[str, str]) -> serve.Application:
    """Entry point for `serve run service.inference.deployment:app_builder` (settings from the env)."""
    return build_app(Settings(**args))
