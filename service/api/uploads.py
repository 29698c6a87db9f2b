"""Turn a multipart upload into a durable, probed file in the store's incoming area."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from starlette.datastructures import UploadFile

from service.api.errors import ApiError
from service.audio import AudioInfo, EmptyAudio, probe
from service.config import Settings

CHUNK = 1024 * 1024


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
    if size > settings.max_upload_bytes:
        raise ApiError(413, "file_too_large", f"{name} exceeds the limit of {settings.max_upload_mb:g} MB")


async def probe_file(path: Path, size: int, settings: Settings) -> AudioInfo:
    """PyAV's check of a file: fully decoded when small enough, else its header and first second."""
    full = size <= settings.probe_full_decode_mb * 1024 * 1024
    return await asyncio.to_thread(probe, path, full=full, max_seconds=settings.max_audio_seconds)


async def probe_stored(target: Path, size: int, settings: Settings) -> AudioInfo:
    """Check a file already written to the incoming area (size limits, then PyAV); remove it on any error."""
    try:
        check_size(size, settings)
        return await probe_file(target, size, settings)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


async def receive_upload(upload: UploadFile, target: Path, settings: Settings) -> tuple[int, AudioInfo]:
    """Write the upload to `target` (a store-generated name), fsync it and probe it; remove it on any error."""
    try:
        size = await asyncio.to_thread(_copy_durably, upload, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, await probe_stored(target, size, settings)
