"""Turn a multipart upload into a durable, probed file in the store's incoming area.

The file work of one upload (copy, fsync, size check, PyAV probe) is one call on a small dedicated pool
(`intake_pool()`, made by the app's lifespan): spread over the default pool's many threads, the probes fought
over the GIL and cost twice the CPU."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.audio import AudioError, AudioInfo, EmptyAudio, probe
from service.config import Settings

CHUNK = 1024 * 1024
INTAKE_THREADS = 2
T = TypeVar("T")


def intake_pool() -> ThreadPoolExecutor:
    """The uploads' pool (one per app; its lifespan shuts it down)."""
    return ThreadPoolExecutor(max_workers=INTAKE_THREADS, thread_name_prefix="intake")


async def _on_pool(pool: Executor, fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)


def _copy_durably(upload: UploadFile, target: Path) -> int:
    size = 0
    upload.file.seek(0)
    with target.open("wb") as out:
        while chunk := upload.file.read(CHUNK):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def check_size(size: int, settings: Settings, name: str = "the file") -> None:
    """400 for an empty file, 413 for one over the upload limit."""
    if size == 0:
        raise EmptyAudio(f"{name} is empty")
    if size > settings.inference.max_upload_bytes:
        raise ApiError(413, "file_too_large", f"{name} exceeds the limit of {settings.inference.max_upload_mb:g} MB")


def _probe(path: Path, size: int, settings: Settings) -> AudioInfo:
    """PyAV's check of a file: fully demuxed when small enough, else its header and first second."""
    full = size <= settings.gateway.probe_full_decode_mb * 1024 * 1024
    return probe(path, full=full, max_seconds=settings.inference.max_audio_seconds)


def _checked(target: Path, size: int, settings: Settings) -> AudioInfo:
    """Size limits, then PyAV; the file is removed on any error."""
    try:
        check_size(size, settings)
        return _probe(target, size, settings)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _store_upload(upload: UploadFile, target: Path, settings: Settings) -> tuple[int, AudioInfo]:
    try:
        size = _copy_durably(upload, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, _checked(target, size, settings)


@lru_cache(maxsize=1024)  # a player's Range requests ask again and again; a changed file has a new key
def _container(path: str, _mtime_ns: int, _size: int) -> str | None:
    try:
        return probe(path).container  # the header and the first second: what the file really is
    except AudioError:
        return None


def _container_now(path: Path) -> str | None:
    try:
        stat = path.stat()
        return _container(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:  # removed meanwhile
        return None


async def container_of(path: Path, pool: Executor) -> str | None:
    """PyAV's name for the container of a stored file (e.g. `wav`, `mov,mp4,m4a,3gp,3g2,mj2`), or None when
    PyAV does not take it for audio; a quick look (header, first second) on the intake pool, remembered."""
    return await _on_pool(pool, _container_now, path)


async def probe_file(path: Path, size: int, settings: Settings, pool: Executor) -> AudioInfo:
    """`_probe` off the event loop (for a file the caller keeps, e.g. on a mounted stage)."""
    return await _on_pool(pool, _probe, path, size, settings)


async def _owning(pool: Executor, target: Path, fn: Callable[..., T], *args: object) -> T:
    """Run `fn` on the intake pool; if the request is cancelled meanwhile (the client went away), let the
    thread finish, then remove `target`, so no incoming file outlives its request."""
    work = asyncio.ensure_future(_on_pool(pool, fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        target.unlink(missing_ok=True)
        raise


async def probe_stored(target: Path, size: int, settings: Settings, pool: Executor) -> AudioInfo:
    """Check a file already written to the incoming area (size limits, then PyAV); remove it on any error."""
    return await _owning(pool, target, _checked, target, size, settings)


async def receive_upload(upload: UploadFile, target: Path, settings: Settings, pool: Executor) -> tuple[int, AudioInfo]:
    """Write the upload to `target` (a store-generated name), fsync it and probe it; remove it on any error."""
    return await _owning(pool, target, _store_upload, upload, target, settings)
