"""Which lane a new job waits in (`Lane`, service/options.py), decided once, when the job is created.

With `SCHEDULING=fair` a job is `interactive` when someone waits for it now: a service-function row (a SQL
query is blocked on it, or polls it), a synchronous OpenAI request, or a file short enough
(`INTERACTIVE_MAX_SECONDS`, its length probed at submit) that its answer is awaited like one. Everything else
is `bulk`: stage batches, and single files whose length is unknown at submit (a stage read through Snowpark)
or longer than the bound. With `SCHEDULING=fifo` every job is `bulk`: one queue, in submission order.

A service function's rows are waited for by the query that called it: Snowflake holds the query while it sends
a batch and, for an asynchronous remote service, polls it until the batch's rows are ready, all within the
function's BATCH_TIMEOUT_SECS (https://docs.snowflake.com/en/sql-reference/external-functions-implementation,
asynchronous remote services).
"""

from __future__ import annotations

from typing import Literal

from service.config import Settings
from service.options import Lane

# Where a job comes from: `upload` (POST /v1/jobs multipart), `url` (a downloaded source), `stage` (one stage
# file), `batch` (a file of POST /v1/batches), `function` (a /functions/* row), `openai` (/v1/audio/*).
Origin = Literal["upload", "url", "stage", "batch", "function", "openai"]
WAITED_FOR: frozenset[str] = frozenset({"function", "openai"})


def lane_of(settings: Settings, *, source: Origin, audio_seconds: float | None) -> Lane:
    """The lane of a job from `source` whose audio lasts `audio_seconds` (None: not known at submit)."""
    if settings.gateway.scheduling == "fifo":
        return "bulk"
    if source in WAITED_FOR:
        return "interactive"
    if source == "batch" or audio_seconds is None:
        return "bulk"
    return "interactive" if audio_seconds <= settings.gateway.interactive_max_seconds else "bulk"
