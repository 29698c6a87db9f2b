"""Where a job's audio is: in the store (uploads) or on a stage (read through a mount or Snowpark)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from service.jobs.model import Job
from service.storage.base import JobStore
from service.storage.stages import StageReader, parse_stage_ref


@contextlib.asynccontextmanager
async def job_audio(job: Job, store: JobStore, stages: StageReader) -> AsyncIterator[Path]:
    """A local file holding the job's audio for the duration of the block (StageError when it is gone)."""
    if job.source_kind == "stage":
        async with stages.open(parse_stage_ref(job.source)) as path:
            yield path
    else:
        yield store.audio_path(job.id)
