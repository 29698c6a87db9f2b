"""SDK retries made safe on the OpenAI-compatible routes.

openai-python times out (600 s by default) and retries twice on timeouts, connection errors, 408, 409, 429 and
5xx, sending the same upload again with `X-Stainless-Retry-Count: n` but no idempotency key. Two things keep
such a retry from costing a second transcription:

- An implicit idempotency key, when the request has no `Idempotency-Key` header: a hash of the caller, the
  file's bytes and the job options, in an hour bucket (the current and the previous bucket are looked up), so
  a retried upload finds the job its first try made and waits on it (`idempotent-replayed: true`). A job that
  was cancelled or failed is not reused: the next key of the chain names the new one. A caller's own
  `Idempotency-Key` wins, with the meaning it has on `/v1/jobs`.
- A job whose client went away before its result is cancelled (nobody else would read it), but only after
  `openai_disconnect_grace_s` during which no other request has attached to it: an SDK timeout followed by
  its retry keeps the job. `X-Keep-Job: true` or an explicit `Idempotency-Key` (the client will come back)
  keep a job whatever happens to the connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile

from service.api.intake import JobRequest
from service.jobs.model import InvalidTransition, JobStatus
from service.storage.base import JobStore

if TYPE_CHECKING:
    from service.jobs.dispatcher import Dispatcher

log = logging.getLogger(__name__)
BUCKET_S = 3600  # implicit keys are looked up in this bucket and the previous one: a retry within 1-2 h
KEY_PREFIX = "openai-"
MAX_CHAIN = 8  # jobs per bucket one implicit key may name in turn (each after a cancelled or failed one)
HASH_CHUNK = 1024 * 1024
MAX_KEPT = 4096  # jobs remembered as kept (X-Keep-Job) once their requests are gone
UNUSABLE = frozenset({JobStatus.CANCELLED, JobStatus.FAILED})


def _file_digest(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    upload.file.seek(0)
    while chunk := upload.file.read(HASH_CHUNK):
        digest.update(chunk)
    upload.file.seek(0)
    return digest.hexdigest()


async def file_digest(upload: UploadFile) -> str:
    """sha256 of the uploaded bytes (parsed by now into memory or a spooled file), off the event loop."""
    return await asyncio.to_thread(_file_digest, upload)


def implicit_base(owner: str | None, digest: str, options: JobRequest) -> str:
    """What identifies a request apart from time: who sent it, the bytes, and every option of its job."""
    canonical = options.model_dump(mode="json", exclude={"idempotency_key"})
    material = json.dumps([owner or "", digest, canonical], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


def _key(bucket: int, base: str, index: int) -> str:
    return f"{KEY_PREFIX}{bucket}-{base}" + (f"-{index}" if index else "")


async def implicit_key(
    store: JobStore, owner: str | None, digest: str, options: JobRequest, at: float | None = None
) -> str:
    """The key for this request: that of a live or finished job of the same request (this bucket or the one
    before), else the first unused key of this bucket's chain."""
    base = implicit_base(owner, digest, options)
    bucket = int((time.time() if at is None else at) // BUCKET_S)
    free: str | None = None
    for b in (bucket, bucket - 1):
        for index in range(MAX_CHAIN):
            key = _key(b, base, index)
            job = await store.find_by_idempotency_key(key, owner)
            if job is None:
                if b == bucket:
                    free = key
                break
            if job.status not in UNUSABLE:
                return key
    # A full chain (MAX_CHAIN cancelled or failed jobs this hour): the last key, so the request replays the
    # last of them and answers with its outcome rather than adding jobs without end.
    return free or _key(bucket, base, MAX_CHAIN - 1)


async def cancel_job(store: JobStore, dispatcher: Dispatcher, job_id: str) -> bool:
    """Cancel a job that has not finished, as DELETE /v1/jobs/{id} does; True when this call cancelled it."""
    for _ in range(3):  # the job may move on between the read and the update
        job = await store.get(job_id)
        if job is None or job.status.terminal:
            return False
        try:
            if await store.transition(job, JobStatus.CANCELLED):
                dispatcher.cancel(job_id)
                return True
        except InvalidTransition:
            continue
    return False


class Attachments:
    """Which jobs have an OpenAI-compatible request waiting on them, and the grace timers of those that lost
    their last one before the result."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher, grace_s: float) -> None:
        self.store, self.dispatcher, self.grace_s = store, dispatcher, grace_s
        self._count: dict[str, int] = {}
        self._kept: OrderedDict[str, None] = OrderedDict()
        self._timers: dict[str, asyncio.Task[None]] = {}

    def waiting(self, job_id: str) -> int:
        return self._count.get(job_id, 0)

    def attach(self, job_id: str, keep: bool) -> None:
        """A request waits on the job (a retry: a pending cancellation is called off)."""
        self._count[job_id] = self._count.get(job_id, 0) + 1
        if keep:
            self._kept[job_id] = None
            self._kept.move_to_end(job_id)
            while len(self._kept) > MAX_KEPT:
                self._kept.popitem(last=False)
        if timer := self._timers.pop(job_id, None):
            timer.cancel()
            log.info("job %s: a request attached again; it is not cancelled", job_id)

    def detach(self, job_id: str, abandoned: bool) -> None:
        """The request is done with the job; `abandoned`: its client went away before the result."""
        left = self._count.get(job_id, 0) - 1
        if left > 0:
            self._count[job_id] = left
            return
        self._count.pop(job_id, None)
        if not abandoned or job_id in self._kept:
            return
        log.info("job %s: its client went away; cancelled in %.0f s unless a retry attaches", job_id, self.grace_s)
        self._timers[job_id] = asyncio.create_task(self._expire(job_id), name=f"openai-grace-{job_id}")

    async def _expire(self, job_id: str) -> None:
        try:
            await asyncio.sleep(self.grace_s)
            if self._count.get(job_id) or job_id in self._kept:
                return
            if await cancel_job(self.store, self.dispatcher, job_id):
                log.info("job %s cancelled: no client waited on it for %.0f s", job_id, self.grace_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store, say: the job then runs to its end, which loses nothing
            log.exception("job %s could not be cancelled after its client went away", job_id)
        finally:
            if self._timers.get(job_id) is asyncio.current_task():
                del self._timers[job_id]

    async def close(self) -> None:
        """At shutdown: pending cancellations are dropped (the jobs go on)."""
        timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self._timers.clear()


def keeps_job(headers: Any) -> bool:
    """The request says its client will come back for the job, whatever happens to this connection."""
    return headers.get("x-keep-job", "").strip().lower() in ("1", "true", "yes") or bool(headers.get("idempotency-key"))
