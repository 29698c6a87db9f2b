"""Uploaded audio on local disk under `DATA_DIR/blobs/`, named by job id only (never by a client's path)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobFiles:
    """The audio files half of a store: both store backends keep uploads here."""

    blob_dir: Path

    def audio_path(self, job_id: str) -> Path:
        return self.blob_dir / job_id

    def incoming_path(self, token: str) -> Path:
        """Where an upload is written before it becomes a job (same filesystem, so rename is atomic)."""
        return self.blob_dir / f".incoming-{token}"

    def sweep_incoming(self) -> int:
        """Remove uploads a previous process left half received (run at open, before any request)."""
        stale = list(self.blob_dir.glob(".incoming-*"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def _place_audio(self, audio: Path, job_id: str) -> None:
        """Move an incoming upload to its job's name, durably (before the job's row is stored)."""
        os.replace(audio, self.audio_path(job_id))
        fsync_dir(self.blob_dir)

    def _return_audio(self, audio: Path, job_id: str) -> None:
        """The job's row was not stored: give the file back to the caller."""
        target = self.audio_path(job_id)
        if target.exists() and not audio.exists():
            os.replace(target, audio)
