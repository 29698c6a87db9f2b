"""The step after transcription for jobs with `translate_to`: Cortex on the transcript text, or Whisper's
own speech-to-English task on the audio. A failed translation keeps the transcript and says why."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from service.inference.client import Inference, InferenceError
from service.jobs.model import Job, JobStatus
from service.metrics import Metrics
from service.options import JobOptions
from service.storage.base import JobStore
from service.transcript import Transcript
from service.translate.base import TranslationError, Translator

log = logging.getLogger(__name__)
AudioOpener = Callable[[Job], Any]  # job -> async context manager yielding the audio's local path


class TranslationStep:
    """Moves a `transcribed` job through `translating` to `succeeded` (or `failed`, transcript kept)."""

    def __init__(
        self,
        store: JobStore,
        client: Inference,
        translator: Translator | None,
        open_audio: AudioOpener,
        metrics: Metrics,
    ) -> None:
        self.store, self.client, self.translator = store, client, translator
        self.open_audio, self.metrics = open_audio, metrics

    @property
    def method(self) -> str:
        return self.translator.method if self.translator else "whisper"

    async def run(self, job: Job) -> bool:
        """True when the translation was stored (the job succeeded)."""
        if not await self.store.transition(job, JobStatus.TRANSLATING):
            return False  # cancelled, or another process got there first
        job = replace(job, status=JobStatus.TRANSLATING)
        transcript = await self.store.transcript(job.id) or Transcript()
        source_language = transcript.language or job.language
        target = job.options.translate_to or "en"
        method = self.method
        try:
            if source_language == target:
                text, method = transcript.text, "none"
            elif self.translator is not None:
                text = await self.translator.translate(transcript.text, source_language, target)
                method = self.translator.method  # the function it settled on (AI_TRANSLATE or its fallback)
            else:
                text = await self._whisper(job, source_language)
        except (TranslationError, InferenceError) as exc:
            await self._failed(job, method, exc)
            return False
        except Exception as exc:  # a bug must fail one translation, never the dispatcher
            log.exception("translating job %s crashed", job.id)
            await self._failed(job, method, exc)
            return False
        translation = {"text": text, "source_language": source_language, "target_language": target, "method": method}
        if not await self.store.save_translation(job, translation):
            return False
        self.metrics.translations.labels(method, "ok").inc()
        return True

    async def _whisper(self, job: Job, source_language: str | None) -> str:
        """Whisper's translate task on the same audio (English only)."""
        options = JobOptions(language=source_language, task="translate", temperature=job.options.temperature)
        async with self.open_audio(job) as path:
            result = await self.client.transcribe(Path(path), options, lane=job.lane)
        return result.text.strip()

    async def _failed(self, job: Job, method: str, exc: Exception) -> None:
        self.metrics.translations.labels(method, "failed").inc()
        # A TranslationError/InferenceError message is written for callers; anything else is a bug whose details
        # (repr, addresses) belong in the log only.
        message = getattr(exc, "message", None) or "an internal error (details in the gateway's log)"
        log.warning("translation of job %s failed (%s): %r", job.id, method, exc)
        if await self.store.transition(
            job,
            JobStatus.FAILED,
            error_code="translation_failed",
            error_message=f"transcribed, but the {method} translation failed: {message}",
        ):
            self.metrics.finished.labels("failed").inc()
