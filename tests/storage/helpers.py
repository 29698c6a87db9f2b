"""Helpers the store tests share (no Snowpark here: the SQLite half of the suite runs without it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from service.jobs.model import Job, new_job_id
from service.options import JobOptions
from service.transcript import Transcript

HINDI = "नमस्ते, आप कैसे हैं? यह एक परीक्षण है।"


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def job_of(**kw: Any) -> Job:
    """A job; option keywords (prompt=, translate_to=, ...) make its `options` (`language` goes to both) unless
    `options` is given."""
    options = {name: kw.pop(name) for name in list(kw) if name in JobOptions.model_fields and name != "language"}
    kw.setdefault("id", new_job_id())
    kw.setdefault("source", "a.wav")
    kw.setdefault("options", JobOptions(**options, language=kw.get("language")))
    return Job(**kw)


async def add_job(store: Any, key: str | None = None, **kw: Any) -> Job:
    """An upload job with 5 bytes of audio, added to `store`."""
    incoming = store.incoming_path(new_job_id())
    incoming.write_bytes(b"audio")
    return await store.add(job_of(bytes=5, idempotency_key=key, **kw), incoming)


def transcript_of(text: str = "hi", language: str = "en") -> Transcript:
    return Transcript.load(
        {"text": text, "language": language, "duration": 1.5, "segments": [{"start": 0, "end": 1.5, "text": text}]}
    )
