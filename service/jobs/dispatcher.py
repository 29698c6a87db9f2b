"""Runs queued jobs on the Ray Serve app: claim → call → store, with retries and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from service.config import Settings
from service.errors import ServiceError
from service.inference.client import Inference, InferenceError
from service.inference.types import AppInfo
from service.jobs.model import Job, JobStatus, now
from service.jobs.slots import Slots
from service.jobs.sources import job_audio
from service.jobs.translation import TranslationStep
from service.logs import request_id_var
from service.metrics import Metrics
from service.options import Lane
from service.storage.base import JobStore, StoreUnavailable
from service.storage.stages import StageReader
from service.transcript import Segment
from service.translate.base import Translator
from service.waits import cancel_and_wait, wait_event

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0
# An idle queue is polled less and less often (1, 2, 4 ... 30 s); the queue is local with either store, so a
# poll costs no Snowflake statement. New jobs and due retries wake the loop at once.
MAX_IDLE_POLL_SECONDS = 30.0
WATCH_SECONDS = 5.0
# The Ray app could not be reached or had no replica for the call: not the job's doing, so the attempt is
# given back (a long outage never uses up a job's attempts); any other failure counts.
OUTAGE_STATUSES = frozenset({502, 503, 504})
OUTAGE_CODES = frozenset({"inference_unavailable"})
PROGRESS_STEP = 0.02  # smallest progress change worth a store write
DEFAULT_CONCURRENCY = 16  # jobs in flight before the Ray app has said what it can hold


class Dispatcher:
    """At most `dispatch_concurrency` jobs in flight (unset: the Ray app's `job_capacity`, which grows with its
    Whisper replicas), plus `interactive_reserve` that only interactive jobs may take (fair scheduling: a second
    claim loop, so an analyst's row is never stuck behind a stage batch that fills every slot); wakes on new jobs,
    polls for due retries."""

    def __init__(
        self,
        store: JobStore,
        client: Inference,
        settings: Settings,
        metrics: Metrics,
        stages: StageReader | None = None,
        translator: Translator | None = None,
    ) -> None:
        self.store, self.client, self.settings, self.metrics = store, client, settings, metrics
        self.stages = stages or StageReader(settings.gateway.stage_mounts)
        self.translation = TranslationStep(store, client, translator, self.open_audio, metrics)
        self._slots = Slots(settings.gateway.dispatch_concurrency or DEFAULT_CONCURRENCY)
        reserve = settings.gateway.interactive_reserve if settings.gateway.scheduling == "fair" else 0
        self._reserve = Slots(reserve)
        self._wakes: list[asyncio.Event] = []  # one per claim loop
        self._running: dict[str, asyncio.Task[None]] = {}
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._resume_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.model_info: AppInfo | None = None  # the Ray app's /ready answer; None while it is down
        self._inference_up = asyncio.Event()
        self._claiming = asyncio.Event()  # cleared by drain(): no job is claimed until resume()
        self._claiming.set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._outages: dict[str, int] = {}  # job id -> calls in a row that met a Ray outage (backoff)
        self._retention_task: asyncio.Task[None] | None = None
        # Segments of running jobs decoded so far, in audio order as the Ray app sends them (this process's
        # current attempt only: a retry or a restart starts over).
        self.partial: dict[str, list[Segment]] = {}
        self._progress_waiters: dict[str, list[asyncio.Future[None]]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        recovered = await self.store.requeue_running()
        if recovered:
            log.warning("requeued %d jobs left running by a previous process", recovered)
        self._watch_task = asyncio.create_task(self._watch(), name="inference-watch")
        self._loop_tasks = [asyncio.create_task(self._loop(self._slots), name="dispatcher")]
        if self._reserve.limit:
            reserve = self._loop(self._reserve, only="interactive")
            self._loop_tasks.append(asyncio.create_task(reserve, name="dispatcher-interactive"))
        self._resume_task = asyncio.create_task(self._resume_translations(), name="resume-translations")
        self._retention_task = asyncio.create_task(self._retention(), name="retention")

    def open_audio(self, job: Job) -> contextlib.AbstractAsyncContextManager:
        """The job's audio as a local file while the block runs."""
        return job_audio(job, self.store, self.stages)

    async def _resume_translations(self) -> None:
        """Translations cut short by a restart start over (their transcripts are stored)."""
        await self._inference_up.wait()
        while jobs := await self.store.list(JobStatus.TRANSCRIBED, 100, None):
            log.info("resuming %d translations", len(jobs))
            await asyncio.gather(*(self._track(j.id, self.translation.run(j)) for j in jobs))

    async def _track(self, job_id: str, work: Any) -> None:
        """Run `work` as the job's task, so DELETE can cancel it and shutdown waits for it."""
        task = asyncio.ensure_future(work)
        self._running[job_id] = task
        try:
            await task
        finally:
            self._running.pop(job_id, None)
            self._notify(job_id)

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop taking work, let in-flight jobs finish for up to `drain_s`, then cut the rest short;
        those go back to the queue for the next start."""
        for loop_task in (*self._loop_tasks, self._resume_task, self._retention_task):
            if loop_task:
                await cancel_and_wait(loop_task)
        tasks = list(self._running.values())
        if tasks and drain_s > 0:
            log.info("draining %d running jobs (up to %.0f s)", len(tasks), drain_s)
            await asyncio.wait(tasks, timeout=drain_s)
        if self._watch_task:
            await cancel_and_wait(self._watch_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.requeue_running()

    def wake(self) -> None:
        for wake in self._wakes:
            wake.set()

    async def drain(self, timeout_s: float) -> int:
        """Claim no more jobs and let the running ones finish, for up to `timeout_s`; how many still run. Queued
        jobs stay queued (a later start, or `resume()`, runs them)."""
        self._claiming.clear()
        tasks = list(self._running.values())
        if tasks and timeout_s > 0:
            await asyncio.wait(tasks, timeout=timeout_s)
        return self.in_flight

    def resume(self) -> None:
        self._claiming.set()
        self.wake()

    def cancel(self, job_id: str) -> None:
        """Stop a job's in-flight call (its status is already `cancelled` in the store)."""
        task = self._running.get(job_id)
        if task:
            task.cancel()
        self._notify(job_id)

    async def _watch(self) -> None:
        """Keep `model_info` current; jobs are only claimed while the Ray app answers."""
        while True:
            try:
                self.model_info = await self.client.ready()
                self._inference_up.set()
                capacity = self.model_info.job_capacity
                if self.settings.gateway.dispatch_concurrency is None and capacity is not None and capacity > 0:
                    if capacity != self._slots.limit:
                        log.info("jobs in flight at Ray Serve: %d -> %d", self._slots.limit, capacity)
                    self._slots.resize(capacity)
            except InferenceError:
                if self.model_info is not None:
                    log.warning("Ray Serve app stopped answering")
                self.model_info = None
                self._inference_up.clear()
            await asyncio.sleep(WATCH_SECONDS if self.model_info else POLL_SECONDS / 2)

    async def _loop(self, slots: Slots, only: Lane | None = None) -> None:
        """Claim jobs while `slots` has room (`only`: jobs of that lane) and run each as a task of its own."""
        idle = 0
        wake = asyncio.Event()
        self._wakes.append(wake)
        while True:
            await self._inference_up.wait()
            await self._claiming.wait()
            await slots.acquire()
            job = None
            try:
                job = await self.store.claim_next(self.settings.gateway.scheduling, only)
            except StoreUnavailable as exc:
                log.warning("cannot claim jobs: %s", exc)
            except Exception:
                log.exception("claiming the next job failed")
            if job is None:
                slots.release()
                await wait_event(wake, min(POLL_SECONDS * 2**idle, MAX_IDLE_POLL_SECONDS))
                idle = 0 if wake.is_set() else min(idle + 1, 8)
                wake.clear()
                continue
            idle = 0
            task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            self._running[job.id] = task
            task.add_done_callback(functools.partial(self._finished, job.id, slots))

    def _finished(self, job_id: str, slots: Slots, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self.partial.pop(job_id, None)
        slots.release()
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        for waiter in self._waiters.pop(job_id, []) + self._progress_waiters.pop(job_id, []):
            if not waiter.done():
                waiter.set_result(None)

    def _progressed(self, job_id: str) -> None:
        for waiter in self._progress_waiters.pop(job_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def wait_progress(self, job_id: str, timeout: float) -> None:
        """Until the job's `partial` segments grow, its attempt ends (finished, requeued or cancelled), or
        `timeout` passes; the caller reads what changed."""
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._progress_waiters.setdefault(job_id, [])
        waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            current = self._progress_waiters.get(job_id)
            if current is not None and waiter in current:
                current.remove(waiter)
                if not current:
                    del self._progress_waiters[job_id]

    async def wait_finished(self, job_id: str, timeout: float) -> Job:
        """The job once it is finished (succeeded, failed or cancelled); TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.store.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.status.terminal:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(job_id)
            waiter = loop.create_future()
            self._waiters.setdefault(job_id, []).append(waiter)
            # Woken when the job's task ends; the periodic re-read also covers retries and other processes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, min(remaining, POLL_SECONDS))

    async def _run(self, job: Job) -> None:
        request_id_var.set(job.id)  # this task's log records carry the job's id
        reported = 0.0

        async def progress(fraction: float, segments: list[Segment]) -> None:
            nonlocal reported
            self.partial.setdefault(job.id, []).extend(segments)
            if segments:
                self._progressed(job.id)
            if fraction - reported >= PROGRESS_STEP and fraction < 1.0:
                reported = fraction
                await self.store.set_progress(job, fraction)

        try:
            async with self.open_audio(job) as audio:
                transcript = await self.client.transcribe(audio, job.options, progress, lane=job.lane)
        except asyncio.CancelledError:
            return  # cancelled by DELETE (status already set) or by shutdown (requeued by stop())
        except InferenceError as exc:
            if exc.code in OUTAGE_CODES or exc.status in OUTAGE_STATUSES:
                await self._outage(job, exc.code, exc.message)
            else:
                await self._failed(job, exc.code, exc.message, retryable=exc.retryable)
            return
        except ServiceError as exc:  # the audio is gone, unreadable, a stage refused it...
            await self._failed(job, exc.code, exc.message, retryable=exc.retryable)
            return
        except Exception:  # a bug must fail one job, never the dispatcher
            log.exception("job %s crashed", job.id)
            # The exception's text stays in the log: it may hold internal addresses, paths or values.
            message = f"internal error in job {job.id} (attempt {job.attempts}); the details are in the gateway's log"
            await self._failed(job, "internal_error", message, retryable=True)
            return
        self._outages.pop(job.id, None)
        started = job.started_at or now()
        transcript.timings.wall_s = round((now() - started).total_seconds(), 4)
        translate = bool(job.options.translate_to)
        target = JobStatus.TRANSCRIBED if translate else JobStatus.SUCCEEDED
        try:
            saved = await self.store.save_transcript(job, transcript, target)
        except Exception:  # disk full, a value the store refuses: back to the queue, never left running
            log.exception("the transcript of job %s could not be stored", job.id)
            message = "the transcript could not be stored; the job runs again"
            try:
                await self._failed(job, "result_not_stored", message, retryable=True)
            except Exception:  # the store refuses every write: the next start requeues the job
                log.exception("job %s could not be returned to the queue", job.id)
            return
        if not saved:
            log.info("job %s changed while running (cancelled?); result dropped", job.id)
            return
        self.metrics.audio_seconds.inc(transcript.duration or 0.0)
        self.metrics.job_seconds.observe(transcript.timings.wall_s)
        if not translate or await self.translation.run(replace(job, status=JobStatus.TRANSCRIBED)):
            self.metrics.finished.labels("succeeded").inc()

    async def _outage(self, job: Job, code: str, message: str) -> None:
        """Back to the queue with its attempt given back, retried with a growing delay (capped)."""
        self.metrics.attempts_failed.labels(code).inc()
        count = self._outages[job.id] = self._outages.get(job.id, 0) + 1
        delay = min(self.settings.gateway.retry_backoff_s * 2 ** min(count - 1, 8), MAX_IDLE_POLL_SECONDS)
        log.warning("job %s: Ray app not reachable (%s); retry in %.1f s, attempt not counted", job.id, code, delay)
        await self._requeue(job, code, message, delay, attempts=job.attempts - 1)

    async def _retention(self) -> None:
        """Apply the retention settings every `retention_check_s` (local copies only)."""
        settings = self.settings
        while True:
            stamp = now()
            audio = (
                stamp - timedelta(days=settings.gateway.audio_retention_days)
                if settings.gateway.audio_retention_days
                else None
            )
            rows = (
                stamp - timedelta(days=settings.gateway.job_retention_days)
                if settings.gateway.job_retention_days
                else None
            )
            try:
                files, jobs = await self.store.purge(rows, audio)
                if files or jobs:
                    log.info("retention: removed %d audio files and %d finished jobs", files, jobs)
            except Exception:
                log.exception("retention failed; tried again later")
            await asyncio.sleep(settings.gateway.retention_check_s)

    async def _failed(self, job: Job, code: str, message: str, retryable: bool) -> None:
        """Back to the queue with a growing delay when `retryable` and attempts are left; else failed."""
        self.metrics.attempts_failed.labels(code).inc()
        if not retryable or job.attempts >= self.settings.gateway.max_attempts:
            log.warning("job %s failed: %s %s", job.id, code, message)
            if await self.store.transition(job, JobStatus.FAILED, error_code=code, error_message=message):
                self.metrics.finished.labels("failed").inc()
            return
        delay = self.settings.gateway.retry_backoff_s * 2 ** (job.attempts - 1)
        log.info("job %s attempt %d failed (%s); retry in %.1f s", job.id, job.attempts, code, delay)
        await self._requeue(job, code, message, delay)

    async def _requeue(self, job: Job, code: str, message: str, delay: float, **fields: Any) -> None:
        """Back to the queue, due in `delay` seconds (and woken then, whatever the idle poll interval)."""
        not_before = now() + timedelta(seconds=delay)
        await self.store.transition(
            job, JobStatus.QUEUED, error_code=code, error_message=message, not_before=not_before, **fields
        )
        asyncio.get_running_loop().call_later(delay, self.wake)
