"""Container checks FFmpeg does not make: it quietly shortens a truncated WAV to the bytes present and
reads an Ogg stream cut at a page boundary as a complete, shorter file."""

from __future__ import annotations

import io
import struct
from pathlib import Path

HEAD_BYTES = 1024 * 1024  # RIFF chunks before `data` (LIST, fact, ...) fit in this
TAIL_BYTES = 64 * 1024  # an Ogg page is at most ~65 KB
UNKNOWN_LENGTHS = (0, 0xFFFFFFFF)  # streamed WAVs declare these: "length unknown"
OGG_END_OF_STREAM = 0x04


def _read(source: bytes | str | Path, head: int, tail: int) -> tuple[bytes, bytes, int]:
    if isinstance(source, bytes):
        return source[:head], source[-tail:], len(source)
    with open(source, "rb") as fh:
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        first = fh.read(head)
        fh.seek(max(0, size - tail))
        return first, fh.read(tail), size


def wav_problem(head: bytes, size: int) -> str | None:
    """Why a RIFF/WAVE file is incomplete, or None: its `data` chunk must fit in the file."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(head):
        chunk, length = head[offset : offset + 4], struct.unpack_from("<I", head, offset + 4)[0]
        if chunk == b"data":
            present = size - (offset + 8)
            if length not in UNKNOWN_LENGTHS and length > present + 1:
                return f"the WAV file is truncated: its data chunk declares {length} bytes, {present} are present"
            return None
        offset += 8 + length + (length & 1)
    return None


def ogg_problem(tail: bytes) -> str | None:
    """Why an Ogg file is incomplete, or None: its last page must carry the end-of-stream flag."""
    at = tail.rfind(b"OggS")
    if at < 0 or at + 6 > len(tail):
        return None
    if not tail[at + 5] & OGG_END_OF_STREAM:
        return "the Ogg stream is truncated: it ends without its end-of-stream page"
    return None


def container_problem(source: bytes | str | Path, container: str) -> str | None:
    """A reason the file is incomplete, for the containers FFmpeg is lenient with; None when it looks whole."""
    if container not in ("wav", "ogg"):
        return None
    head, tail, size = _read(source, HEAD_BYTES, TAIL_BYTES)
    return wav_problem(head, size) if container == "wav" else ogg_problem(tail)
