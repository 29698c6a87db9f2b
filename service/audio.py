"""Decode and probe any audio/video container into 16 kHz mono float32 PCM (PyAV).

A leaf module: imported by the gateway (to probe uploads) and by the Ray decoder (to decode them).
Every failure is a typed `AudioError` carrying a machine-readable code and an HTTP status.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from service.audio_integrity import container_problem

SAMPLE_RATE = 16_000
# Packets that fail to decode are skipped; more than this many means the file is broken.
MAX_BAD_PACKETS = 3
# A stream that decodes to less than this share of its declared duration is truncated.
TRUNCATION_RATIO = 0.9

FLOAT_CODECS = frozenset({"pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be"})

Source = str | Path | bytes | BinaryIO


class AudioError(Exception):
    """An input that cannot be turned into audio; `code` and `status` go into the error body."""

    code = "bad_audio"
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyAudio(AudioError):
    code, status = "empty_file", 400


class UnsupportedMedia(AudioError):
    code, status = "unsupported_media", 415


class NoAudioTrack(AudioError):
    code, status = "no_audio_track", 422


class CorruptAudio(AudioError):
    code, status = "corrupt_audio", 422


class AudioTooLong(AudioError):
    code, status = "audio_too_long", 413


@dataclass(frozen=True)
class AudioInfo:
    """What a probe learns about a file without decoding all of it."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None  # declared by the container, seconds; None when unknown


def _open(source: Source) -> av.container.InputContainer:
    if isinstance(source, bytes):
        if not source:
            raise EmptyAudio("the file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        if Path(source).stat().st_size == 0:
            raise EmptyAudio("the file is empty")
        source = str(source)
    try:
        return av.open(source, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnsupportedMedia(f"not a recognised audio or video file ({exc.__class__.__name__})") from exc


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        raise UnsupportedMedia(f"the file is an image ({container.format.name}), not audio or video")
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        if container.streams.video:
            raise NoAudioTrack("the file has a video track but no audio track")
        raise UnsupportedMedia(f"the file has no audio stream (streams: {', '.join(kinds)})")
    stream = container.streams.audio[0]
    if stream.codec_context is None or not stream.codec_context.name:
        raise UnsupportedMedia("the audio codec is not supported")
    channels = stream.codec_context.channels
    if channels is not None and channels > 64:
        raise CorruptAudio(f"implausible channel count {channels}")
    return stream


def _declared_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _info(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> AudioInfo:
    ctx = stream.codec_context
    return AudioInfo(
        container=container.format.name,
        codec=ctx.name,
        sample_rate=ctx.sample_rate or 0,
        channels=ctx.channels or 0,
        duration=_declared_seconds(container, stream),
    )


def _frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> Iterator[av.AudioFrame]:
    """Decoded frames of `stream`; a few undecodable packets are skipped, more mean the file is corrupt."""
    bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad += 1
                if bad > MAX_BAD_PACKETS:
                    raise CorruptAudio("the audio stream is corrupt (undecodable packets)") from None
                continue
            yield from frames
    except av.error.FFmpegError as exc:
        raise CorruptAudio(f"the file could not be decoded ({exc.__class__.__name__})") from exc


def _too_long(max_seconds: float) -> AudioTooLong:
    return AudioTooLong(f"audio is longer than the limit of {max_seconds:.0f} s")


def _decode_stream(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, max_seconds: float | None
) -> np.ndarray:
    """Decode the stream to 16 kHz mono float32, bounded in length while decoding."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    for frame in chain(_frames(container, stream), [None]):
        if frame is not None:
            frame.pts = None  # let the resampler keep its own clock across skipped packets
        for out in resampler.resample(frame):
            pcm = out.to_ndarray().reshape(-1)
            chunks.append(pcm)
            total += pcm.shape[0]
        if limit is not None and total > limit:
            raise _too_long(max_seconds)
    if total == 0:
        raise CorruptAudio("the audio stream holds no decodable samples")
    return np.concatenate(chunks)


def _scan_stream(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, max_seconds: float | None, full: bool
) -> float:
    """Decode the first second (proves the codec works), then, when `full`, demux the rest without decoding
    (packet durations reveal truncation at a fraction of decoding's cost). Returns the seconds seen."""
    check_finite = stream.codec_context.name in FLOAT_CODECS  # only raw float PCM can hold NaN/inf
    seconds = 0.0

    def count(frame: av.AudioFrame) -> None:
        nonlocal seconds
        seconds += frame.samples / (frame.sample_rate or 1)
        if check_finite and not np.isfinite(frame.to_ndarray()).all():
            raise CorruptAudio("the audio holds NaN or infinite samples")
        if max_seconds is not None and seconds > max_seconds:
            raise _too_long(max_seconds)

    for frame in _frames(container, stream):
        count(frame)
        if seconds >= 1.0 and not check_finite:
            break
    if seconds == 0:
        raise CorruptAudio("the audio stream holds no decodable samples")
    if not full or check_finite:
        return seconds
    unit = float(stream.time_base) if stream.time_base is not None else 0.0
    ticks = 0  # packet durations in the stream's time base: integers, summed without Fraction arithmetic
    limit = None if max_seconds is None or not unit else max_seconds / unit
    try:
        for packet in container.demux(stream):
            if packet.duration and unit:
                ticks += packet.duration
                if limit is not None and ticks > limit:
                    raise _too_long(max_seconds)
            elif packet.size:
                for frame in packet.decode():
                    count(frame)
    except av.error.FFmpegError as exc:
        raise CorruptAudio(f"the file could not be read to its end ({exc.__class__.__name__})") from exc
    seconds += ticks * unit
    if max_seconds is not None and seconds > max_seconds:
        raise _too_long(max_seconds)
    return seconds


def probe(source: Source, *, full: bool = False, max_seconds: float | None = None) -> AudioInfo:
    """Check that `source` holds audio: its first second decodes; with `full`, all of it is there."""
    with _open(source) as container:
        stream = _audio_stream(container)
        info = _info(container, stream)
        if info.duration is not None and max_seconds is not None and info.duration > max_seconds:
            raise AudioTooLong(f"audio is {info.duration:.0f} s, longer than the limit of {max_seconds:.0f} s")
        seconds = _scan_stream(container, stream, max_seconds, full)
        if full:
            _check_complete(seconds, info)
    if isinstance(source, bytes | str | Path) and (problem := container_problem(source, info.container)):
        raise CorruptAudio(problem)
    return info


def _check_complete(decoded: float, info: AudioInfo) -> None:
    if info.duration and info.duration > 1.0 and decoded < TRUNCATION_RATIO * info.duration:
        raise CorruptAudio(f"the file is truncated: {decoded:.1f} s decoded of {info.duration:.1f} s declared")


def decode(source: Source, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream of any container to 16 kHz mono float32 in [-1, 1]."""
    with _open(source) as container:
        stream = _audio_stream(container)
        info = _info(container, stream)
        pcm = _decode_stream(container, stream, max_seconds)
    if not np.isfinite(pcm).all():
        raise CorruptAudio("the audio holds NaN or infinite samples")
    _check_complete(pcm.shape[0] / SAMPLE_RATE, info)
    return np.clip(pcm, -1.0, 1.0, out=pcm)
