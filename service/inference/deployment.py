"""The Ray Serve application: a `Decoder` ingress (PyAV decode, VAD cut, fan-out, stitch) and a `Whisper`
deployment that batches 30 s windows from all requests (`batcher.Batcher`).

HTTP (under the app's route prefix, `/whisper` by default):
  POST /transcribe?<JobOptions.query()>&beam_size=   body: the file bytes
       -> 4xx JSON error for input refused on opening, else NDJSON: {"event": "progress", "fraction", "segments"}
          ... then {"event": "result", "transcript": {...}} (or {"event": "error", "code", "message", "status"}).
          Progress segments come in audio order: their concatenation is the transcript's `segments`
          (`Segment.dump()` each); the result is `Transcript.dump()`. The query is validated by `JobOptions`
          (an unknown parameter is a 422) plus `beam_size`.
  GET  /ready   model, engine and batching facts once the model is loaded

Memory is bounded, not proportional to the audio's length: a body is spooled to a temporary file, decoded and
cut in steps (`stream.py`) while its windows go to Whisper; at most `decode_concurrency` files decode at once per
replica (the others wait, on disk), and at most `decode_windows_in_flight` windows of all jobs together are at
Whisper (decoding waits beyond). A job whose request goes away (the gateway cancelled it, or the client
disconnected) stops decoding. The per-job loop is `pipeline.WindowPipeline`, which the in-process path shares.

Who goes first (`priority.py`): the query's `lane` (the gateway's choice: interactive for service-function rows,
the synchronous OpenAI routes and short files) orders the decode slots, the window budget and Whisper's batches;
a job that asks for detection sends its first window alone, and its language is read off that window's own
encoder pass in the batch that decodes it (no separate detection call).
"""

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import ray
from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field
from ray import serve
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from service.audio import SAMPLE_RATE, AudioError
from service.config import InferenceSettings, Settings, gpu_present
from service.inference.diarization import SpeakerTrack
from service.inference.engines import spec
from service.inference.pipeline import EngineCalls, WindowPipeline
from service.inference.priority import LANE_PRIORITY, PrioritySemaphore
from service.inference.scaling import (
    decoder_options,
    hardware_layout,
    job_capacity,
    whisper_gpus,
    whisper_options,
    windows_in_flight,
)
from service.inference.speaker_encoder import SpeakerEncoder, load_encoder
from service.inference.stats import Reporter, stats_actor
from service.inference.stream import BodyTooLarge, Steps, WindowSource, spool
from service.inference.types import AppInfo, DecodeOptions, WindowResult
from service.inference.windows import vad_options
from service.options import JobOptions, Lane, SpeakerCount
from service.transcript import Timings

# Under Serve's own logger: a replica's records go where Ray Serve sends its own (the replica's log file and the
# driver's output); a logger outside "ray.serve" has no handler in a replica and would drop INFO records.
log = logging.getLogger(f"ray.serve.{__name__}")
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


class TranscribeQuery(JobOptions):
    """`POST /transcribe`'s query: the job's options (`JobOptions`, unknown parameters refused), the beam
    size (unset: the service's BEAM_SIZE) and the job's lane (the gateway's scheduling: interactive goes first)."""

    beam_size: int | None = Field(None, ge=1, le=16)
    lane: Lane = "bulk"


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
                # Starlette types body_iterator as an AsyncIterable; ours is the async generator given to __init__.
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            finally:
                await asyncio.shield(self._release())


class _Job:
    """One request's decode: its spooled body, its source and steps, its slot; `release` runs once."""

    def __init__(self, path: Path, steps: Steps, slots: PrioritySemaphore, cleanups: set[asyncio.Task]) -> None:
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
    """One model per replica; windows from all requests are batched together per decode options (an engine
    that batches itself gets them one by one, concurrently)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from service.inference.engines import load_engine

        self.settings = InferenceSettings(**settings)
        self.engine = load_engine(self.settings)
        self.reporter = Reporter("Whisper")
        self.node = self.reporter.counters.node
        self.calls = EngineCalls(
            self.engine,
            self.settings.batch_size,
            quiet_s=self.settings.batch_wait_timeout_s,
            max_wait_s=self.settings.batch_max_wait_s,
            batches_itself=spec(self.settings.effective_engine).batches_itself,
            mixes_languages=spec(self.settings.effective_engine).mixes_languages,
            node=self.node,
            on_batch=lambda seconds, windows: self.reporter.add(seconds, batches=1, windows=windows),
        )

    def info(self) -> AppInfo:
        """This replica's model and batching counters (the Decoder adds the replicas and capacity)."""
        calls = self.calls
        return AppInfo(
            engine=self.engine.name,
            model=self.engine.model_name,
            multilingual=self.engine.multilingual,
            max_batch_size=self.settings.batch_size,
            batches=calls.batches,
            windows=calls.items,
            mean_batch_size=round(calls.items / calls.batches, 3) if calls.batches else None,
            queued_windows=calls.pending(),
        )

    async def transcribe_window(self, audio: np.ndarray, options: DecodeOptions, priority: int = 0) -> WindowResult:
        """One window's result (its language detected when `options.language` is None); windows whose options
        share a batch key are batched while the engine is busy, the most urgent (lowest `priority`) first."""
        return await self.calls.transcribe_window(audio, options, priority)


api = FastAPI(title="spcs-whisper inference", docs_url=None, redoc_url=None)


@api.exception_handler(RequestValidationError)
async def _invalid_query(request: Request, exc: RequestValidationError) -> Response:
    """An unknown language is `unsupported_language` (the error JSON); any other invalid option FastAPI's 422."""
    for error in exc.errors():
        if tuple(error.get("loc", ()))[-1:] == ("language",) and error.get("type") == "value_error":
            message = str(error.get("ctx", {}).get("error") or error.get("msg"))
            return _error(422, "unsupported_language", message)
    return await request_validation_exception_handler(request, exc)


@serve.deployment
@serve.ingress(api)
class Decoder:
    """HTTP ingress: decodes any container, cuts windows, fans them out to Whisper, stitches the result."""

    def __init__(self, whisper: DeploymentHandle, settings: dict[str, Any]) -> None:
        self.whisper = whisper
        self.settings = InferenceSettings(**settings)
        self._info: AppInfo | None = None
        self._slots = PrioritySemaphore(self.settings.decode_concurrency)
        self._interactive_slots = PrioritySemaphore(self.settings.decode_interactive_reserve)
        self._cleanups: set[asyncio.Task] = set()
        inference = self.settings
        self.in_flight_limit = inference.decode_windows_in_flight or windows_in_flight(inference)
        self._window_budget = PrioritySemaphore(self.in_flight_limit)
        self.windows_retried = 0
        self.reporter = Reporter("Decoder")
        self._speaker_encoder: SpeakerEncoder | None = None  # loaded by the first job that asks for speakers
        self._speaker_lock = asyncio.Lock()

    async def _speakers(self, count: SpeakerCount | None) -> SpeakerTrack | None:
        """A job's speaker track (None when it did not ask): the replica's encoder on one thread (it runs beside
        decoding on this replica's CPU), loaded once."""
        if count is None:
            return None
        async with self._speaker_lock:
            if self._speaker_encoder is None:
                model, path = self.settings.speaker_model, self.settings.speaker_model_path
                self._speaker_encoder = await asyncio.to_thread(load_encoder, model, path, "cpu", 1)
        return SpeakerTrack(self._speaker_encoder, count)

    async def _model_info(self) -> AppInfo:
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

    async def _decode_slot(self, priority: int) -> PrioritySemaphore:
        """A decode slot (the semaphore it came from, to give it back to): an interactive job takes one of the
        reserve at once when every shared slot is held (long bulk files hold theirs while Whisper paces them);
        otherwise it waits for a shared slot, ahead of every bulk job."""
        interactive = priority == LANE_PRIORITY["interactive"]
        if interactive and self._slots.locked() and self._interactive_slots.try_acquire():
            return self._interactive_slots
        await self._slots.acquire(priority)
        return self._slots

    @api.get("/ready")
    async def ready(self) -> AppInfo:
        """Model facts, the replicas running now and the jobs the gateway may usefully send at once."""
        info: AppInfo = await self._whisper("info")
        states = await asyncio.to_thread(replica_states)
        running = {name: counts.get("RUNNING", 0) for name, counts in states.items()}
        return info.model_copy(
            update={
                "replicas": running,
                "replica_states": states,
                "job_capacity": job_capacity(self.settings, running.get("Whisper", 1)),
                "windows_retried": self.windows_retried,
            }
        )

    @api.get("/stats")
    async def stats(self) -> dict[str, Any]:
        """Every replica's counters (busy seconds, batches or files, windows), as each last reported them."""
        try:
            rows = await stats_actor().all.remote()
        except Exception as exc:  # noqa: BLE001
            return {"replicas": [], "error": repr(exc)}
        return {"replicas": sorted(rows, key=lambda r: (r["deployment"], r["node"], r["replica"]))}

    @api.post("/transcribe")
    async def transcribe(self, request: Request, options: Annotated[TranscribeQuery, Query()]) -> Response:
        """Errors about the input answer at once (4xx JSON); then the work streams as NDJSON events.

        `prompt` is previous text (the engines keep its last 223 tokens), `hotwords` words or phrases to bias
        decoding (put before it, as faster-whisper does); `vad_filter` turns the Silero VAD cut on or off for
        this file (unset: the service's setting) and `vad_threshold`, `vad_min_silence_ms`, `vad_speech_pad_ms`
        set its threshold, min_silence_duration_ms and speech_pad_ms."""
        started = time.perf_counter()
        lang, priority = options.language, LANE_PRIORITY[options.lane]
        info = await self._model_info()
        if not info.multilingual and (problem := options.english_only_problem(str(info.model))):
            return _error(422, "unsupported_language", problem)
        try:
            speakers = await self._speakers(options.speakers)
        except (RuntimeError, OSError, ValueError) as exc:  # the speaker model is missing or misconfigured
            log.error("speaker model unavailable: %s", exc)
            return _error(503, "speaker_model_unavailable", str(exc))
        try:
            path = await spool(request.stream(), self.settings.max_upload_bytes)
        except BodyTooLarge as exc:
            return _error(413, "file_too_large", str(exc))
        vad = self.settings.vad if options.vad_filter is None else options.vad_filter
        source = WindowSource(
            path,
            vad=vad,
            max_seconds=self.settings.max_audio_seconds,
            vad_options=vad_options(options.vad_threshold, options.vad_min_silence_ms, options.vad_speech_pad_ms),
        )
        waited = time.perf_counter()
        try:
            slots = await self._decode_slot(priority)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job = _Job(path, Steps(source), slots, self._cleanups)
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
        pipeline = WindowPipeline(
            job.steps,
            lambda audio, decode, rank: self._whisper("transcribe_window", audio, decode, rank),
            DecodeOptions.of(options, lang, options.beam_size or self.settings.beam_size),
            detect=lang is None,
            duration=audio_info.duration,
            budget=self._window_budget,
            priority=priority,
            on_cut=job.release,  # the slot goes to the next file once this job's windows are all cut
            speakers=speakers,
            keep_words=options.word_timestamps,  # with speakers, words are decoded to place the turns
            # speakers of one file may speak different languages: each turn detects its own (see WindowPipeline)
            split_turns=lang is None,
            log=log,
        )
        return _EventStream(self._events(job, source, pipeline, info, started, waited), job.release)

    async def _events(
        self,
        job: _Job,
        source: WindowSource,
        pipeline: WindowPipeline,
        info: AppInfo,
        started: float,
        waited: float,
    ) -> AsyncIterator[str]:
        """NDJSON: a `progress` line as each window (with its tails) is done and as decoding moves on, then the
        `result` (`pipeline.WindowPipeline.run`: window budget, decoding at Whisper's pace, audio order). The
        decode slot is given back as soon as the last window is cut."""
        try:
            async for step in pipeline.run():
                segments = [segment.dump() for segment in step.segments]
                yield json.dumps({"event": "progress", "fraction": step.fraction, "segments": segments}) + "\n"
        except AudioError as exc:  # found while decoding: the input's fault, not worth a retry
            yield json.dumps({"event": "error", "code": exc.code, "message": exc.message, "status": exc.status}) + "\n"
            return
        except Exception as exc:  # a replica died mid-way: the gateway retries the whole job
            yield json.dumps({"event": "error", "code": "inference_failed", "message": repr(exc)}) + "\n"
            return
        finally:
            await asyncio.shield(job.release())
            self.reporter.add(source.decode_s + source.vad_s, batches=1, windows=len(pipeline.results))
        done = time.perf_counter()
        timings = Timings(
            slot_wait_s=round(waited, 4),  # waiting for one of the replica's decode slots
            decode_s=round(source.decode_s, 4),  # decoding and VAD overlap inference: CPU time of each
            vad_s=round(source.vad_s, 4),
            inference_s=round(pipeline.inference_s(done), 4),
            total_s=round(done - started, 4),
            peak_buffered_s=round(source.peak_buffered / SAMPLE_RATE, 3),
            whisper_nodes=pipeline.nodes(),  # Ray nodes that decoded it
        )
        transcript = pipeline.transcript(info.engine, info.model, timings)
        yield json.dumps({"event": "result", "transcript": transcript.dump()}) + "\n"


def build_app(settings: Settings) -> serve.Application:
    """Bind both deployments with resources, autoscaling and batching limits taken from `settings.inference`,
    the only part of the settings sent to Ray."""
    on_gpu = settings.inference.device == "cuda" or (settings.inference.device == "auto" and gpu_present())
    gpu_replicas = on_gpu or bool(settings.inference.whisper_num_gpus)  # e.g. a cluster whose workers have them
    inference = hardware_layout(settings.inference, gpu_replicas, os.cpu_count() or 1)
    config = inference.model_dump(mode="json")
    # On a cluster the driver (Ray head) has no GPU while the workers do: set WHISPER_NUM_GPUS=1 there, so
    # each replica claims a worker's GPU and Ray places one replica per GPU.
    # @serve.deployment makes the classes Deployments, which mypy does not see: hence the ignores on `.options`.
    whisper = Whisper.options(**whisper_options(inference, whisper_gpus(inference, on_gpu))).bind(config)  # type: ignore[attr-defined]
    return Decoder.options(**decoder_options(inference)).bind(whisper, config)  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]) -> serve.Application:
    """Entry point for `serve run service.inference.deployment:app_builder` (settings from the env)."""
    return build_app(Settings(**args))
