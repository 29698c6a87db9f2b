"""The Ray Serve application: a `Decoder` ingress (PyAV decode, VAD cut, fan-out, stitch) and a `Whisper`
deployment that batches 30 s windows from all requests (`batcher.Batcher`).

HTTP (under the app's route prefix, `/whisper` by default):
  POST /transcribe?language=&task=&word_timestamps=&beam_size=&prompt=&temperature=   body: the file bytes
       -> 4xx JSON error for bad input, else NDJSON: {"event": "progress", "fraction"}... then
          {"event": "result", "transcript": {...}} (or {"event": "error", ...})
  GET  /ready   model, engine and batching facts once the model is loaded
"""

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import ray
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from service.audio import SAMPLE_RATE, AudioError, decode
from service.config import Settings, gpu_present
from service.inference.batcher import Batcher
from service.inference.types import DecodeOptions, Task, WindowResult
from service.inference.windows import MAX_FOLLOW_UPS, cut, stitch, tail_start
from service.languages import normalise_language


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


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
        self.node = ray.get_runtime_context().get_node_id()

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
        results = self.engine.transcribe_batch(windows, options)
        for result in results:
            result.node = self.node
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

    async def _model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.whisper.info.remote()
        return self._info

    async def _window(
        self, audio: np.ndarray, offset: float, options: DecodeOptions, depth: int = 0
    ) -> list[tuple[float, WindowResult]]:
        """One window through the batched Whisper deployment, plus its undecoded tail if Whisper stopped early."""
        result = await self.whisper.transcribe_window.remote(audio, options)
        pieces = [(offset, result)]
        start = tail_start(audio, result)
        if start is not None and depth < MAX_FOLLOW_UPS:
            tail = audio[int(start * SAMPLE_RATE) :]
            pieces += await self._window(tail, offset + start, options, depth + 1)
        return pieces

    @api.get("/ready")
    async def ready(self) -> dict[str, Any]:
        return {"status": "ready", **await self.whisper.info.remote()}

    @api.post("/transcribe")
    async def transcribe(
        self,
        request: Request,
        language: str | None = Query(None),
        task: Task = Query("transcribe"),
        word_timestamps: bool = Query(False),
        beam_size: int | None = Query(None, ge=1, le=16),
        prompt: str | None = Query(None, max_length=2000),
        temperature: float = Query(0.0, ge=0.0, le=1.0),
    ) -> Response:
        """Errors about the input answer at once (4xx JSON); then the work streams as NDJSON events."""
        started = time.perf_counter()
        try:
            lang = normalise_language(language)
        except ValueError as exc:
            return _error(422, "unsupported_language", str(exc))
        info = await self._model_info()
        if not info["multilingual"] and (lang not in (None, "en") or task == "translate"):
            return _error(422, "unsupported_language", f"model {info['model']} is English-only")
        body = await request.body()
        try:
            audio = await asyncio.to_thread(decode, body, max_seconds=self.settings.max_audio_seconds)
        except AudioError as exc:
            return _error(exc.status, exc.code, exc.message)
        decoded = time.perf_counter()
        windows = await asyncio.to_thread(cut, audio, self.settings.vad)
        cut_done = time.perf_counter()
        probability = None
        if lang is None and windows.audio:
            lang, probability = await self.whisper.detect_language.remote(windows.audio[0])
        options = DecodeOptions(
            language=lang or "en",
            task=task,
            word_timestamps=word_timestamps,
            beam_size=beam_size or self.settings.beam_size,
            initial_prompt=prompt or None,
            temperature=temperature,
        )
        duration = audio.shape[0] / SAMPLE_RATE

        async def events() -> AsyncIterator[str]:
            """NDJSON: a `progress` line as each window (with its tails) is done, then the `result`."""
            pieces: list[tuple[float, WindowResult]] = []
            done_speech = 0.0
            try:
                jobs = [self._timed_window(a, o, options) for a, o in zip(windows.audio, windows.offsets)]
                for finished in asyncio.as_completed(jobs):
                    seconds, window_pieces = await finished
                    pieces += window_pieces
                    done_speech += seconds
                    fraction = done_speech / windows.seconds if windows.seconds else 1.0
                    # This window's text on the original timeline (stitch shifts in place: give it copies).
                    partial = [
                        {"start": s["start"], "end": s["end"], "text": s["text"]}
                        for s in stitch(copy.deepcopy(window_pieces), windows.speech)
                    ]
                    event = {"event": "progress", "fraction": round(min(fraction, 1.0), 4), "segments": partial}
                    yield json.dumps(event) + "\n"
                segments = stitch(pieces, windows.speech)
            except Exception as exc:  # a replica died mid-way: the gateway retries the whole job
                yield json.dumps({"event": "error", "code": "inference_failed", "message": repr(exc)}) + "\n"
                return
            done = time.perf_counter()
            transcript = {
                "text": " ".join(s["text"] for s in segments),
                "language": lang,  # None when auto-detection found no speech to detect from
                "language_probability": probability,
                "duration": round(duration, 3),
                "speech_seconds": round(windows.seconds, 3),
                "segments": segments,
                "engine": info["engine"],
                "model": info["model"],
                "timings": {
                    "decode_s": round(decoded - started, 4),
                    "vad_s": round(cut_done - decoded, 4),
                    "inference_s": round(done - cut_done, 4),
                    "total_s": round(done - started, 4),
                    "whisper_nodes": sorted({r.node for _, r in pieces if r.node}),  # Ray nodes that decoded it
                },
            }
            yield json.dumps({"event": "result", "transcript": transcript}) + "\n"

        return StreamingResponse(events(), media_type="application/x-ndjson")

    async def _timed_window(
        self, audio: np.ndarray, offset: float, options: DecodeOptions
    ) -> tuple[float, list[tuple[float, WindowResult]]]:
        return audio.shape[0] / SAMPLE_RATE, await self._window(audio, offset, options)


def build_app(settings: Settings) -> serve.Application:
    """Bind both deployments with resources and batching limits taken from `settings`."""
    config = settings.model_dump(mode="json")
    on_gpu = settings.device == "cuda" or (settings.device == "auto" and gpu_present())
    # On a cluster the driver (Ray head) has no GPU while the workers do: set WHISPER_NUM_GPUS=1 there, so
    # each replica claims a worker's GPU and Ray places one replica per GPU node.
    num_gpus = settings.whisper_num_gpus if settings.whisper_num_gpus is not None else (1 if on_gpu else 0)
    whisper = Whisper.options(
        num_replicas=settings.whisper_replicas,
        max_ongoing_requests=max(4 * settings.max_batch_size, 16),
        ray_actor_options={"num_cpus": 1, "num_gpus": num_gpus},
        health_check_period_s=10,
    ).bind(config)
    return Decoder.options(
        num_replicas=1,
        max_ongoing_requests=64,
        ray_actor_options={"num_cpus": 0.5},
    ).bind(whisper, config)


def app_builder(args: dict[str, str]) -> serve.Application:
    """Entry point for `serve run service.inference.deployment:app_builder` (settings from the env)."""
    return build_app(Settings(**args))
