"""Decode and probe any audio/video container into 16 kHz mono float32 PCM (PyAV).

A leaf module: imported by the gateway (to probe uploads) and by the Ray decoder (to decode them).
Every failure is a typed `AudioError` carrying a machine-readable code and an HTTP status.

Everything is opened with an allow-list of demuxers (`ALLOWED_FORMATS`) and of protocols: FFmpeg would
otherwise pick the `concat`, `hls` or `sdp` demuxer from a file's first bytes and follow the paths and URLs
inside it (other uploads, local files, network streams). A refused container is refused before anything it
names is opened, with one message whatever it names.
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
from service.errors import ServiceError

SAMPLE_RATE = 16_000
# Packets that fail to decode are skipped; more than this many means the file is broken.
MAX_BAD_PACKETS = 3
# A stream that decodes to less than this share of its declared duration is truncated.
TRUNCATION_RATIO = 0.9

FLOAT_CODECS = frozenset({"pcm_f32le", "pcm_f32be", "pcm_f64le", "pcm_f64be"})

# Demuxers a client's bytes may be read with: audio and video containers that hold their media themselves.
# FFmpeg matches any name of a demuxer ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm") against this list. Never
# add a playlist, manifest, concat, session-description or image demuxer (hls, dash, concat, sdp, rtsp, tee,
# image2, lavfi, ...): they open the files or URLs named inside the input.
ALLOWED_FORMATS = (
    "wav,w64,aiff,caf,au,mp3,flac,ogg,mov,mp4,m4a,3gp,matroska,webm,aac,loas,ac3,eac3,dts,amr,amrnb,amrwb,"
    "asf,avi,mpegts,mpeg,flv,wv,ape,tta"
)
_ALLOWED = frozenset(ALLOWED_FORMATS.split(","))
# Protocols: a path is read with `file` only; bytes and file objects need none (PyAV reads them itself), and a
# whitelist that names no protocol keeps any nested open from happening at all.
_PATH_PROTOCOLS = "file"
_NO_PROTOCOLS = "none"
REFUSED_CONTAINER = (
    "not a recognised audio or video file (the container is not one the service reads: playlists, "
    "concat lists, manifests and stream descriptions are refused)"
)
# Decoded samples handed out at a time by `AudioReader.blocks` when the caller does not say.
BLOCK_SAMPLES = 60 * SAMPLE_RATE

Source = str | Path | bytes | BinaryIO


class AudioError(ServiceError):
    """An input that cannot be turned into audio; `code` and `status` go into the error body. Never retryable:
    the same bytes fail the same way."""

    code = "bad_audio"
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


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


def allowed_format(name: str) -> bool:
    """True when a demuxer name (as PyAV reports it, e.g. "mov,mp4,m4a,3gp,3g2,mj2") is on the allow-list."""
    return any(part in _ALLOWED for part in name.split(","))


def _open(source: Source) -> av.container.InputContainer:
    protocols = _NO_PROTOCOLS
    if isinstance(source, bytes):
        if not source:
            raise EmptyAudio("the file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        if Path(source).stat().st_size == 0:
            raise EmptyAudio("the file is empty")
        source, protocols = str(source), _PATH_PROTOCOLS
    options = {"format_whitelist": ALLOWED_FORMATS, "protocol_whitelist": protocols}
    try:
        container = av.open(source, mode="r", metadata_errors="ignore", container_options=options)
    except av.error.ArgumentError as exc:  # EINVAL: FFmpeg found a demuxer that is not on the allow-list
        raise UnsupportedMedia(REFUSED_CONTAINER) from exc
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise UnsupportedMedia(f"not a recognised audio or video file ({exc.__class__.__name__})") from exc
    if not allowed_format(container.format.name):  # the whitelist already refused it; never rely on one check
        container.close()
        raise UnsupportedMedia(REFUSED_CONTAINER)
    return container


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        raise UnsupportedMedia(f"the file is an image ({container.format.name}), not audio or video")
    if not container.streams.audio:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        if container.streams.video:
            raise NoAudioTrack("the file has a video track but no audio track")
        raise UnsupportedMedia(f"the file has no audio stream (streams: {kinds})")
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
                    assert max_seconds is not None  # limit is None without it
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


class AudioReader:
    """The first audio stream of an opened file, decoded a block at a time to 16 kHz mono float32 in [-1, 1].

    Memory stays at one block (plus FFmpeg's own buffers) whatever the file's length, so a long file can be cut
    and transcribed while it decodes. Opening checks what the container declares (an audio track, a length
    within `max_seconds`); the blocks check the decoded length, NaN/inf samples and, at the end, truncation."""

    def __init__(self, source: Source, *, max_seconds: float | None = None) -> None:
        self.max_seconds = max_seconds
        self.samples = 0  # decoded so far, at 16 kHz
        self._container = _open(source)
        try:
            self._stream = _audio_stream(self._container)
            self.info = _info(self._container, self._stream)
            declared = self.info.duration
            if declared is not None and max_seconds is not None and declared > max_seconds:
                raise AudioTooLong(f"audio is {declared:.0f} s, longer than the limit of {max_seconds:.0f} s")
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def blocks(self, size: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """Blocks of `size` samples (the last one shorter), each a new array the caller may keep."""
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        limit = None if self.max_seconds is None else int(self.max_seconds * SAMPLE_RATE)
        pending: list[np.ndarray] = []
        held = 0
        for frame in chain(_frames(self._container, self._stream), [None]):
            if frame is not None:
                frame.pts = None  # let the resampler keep its own clock across skipped packets
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1)
                pending.append(pcm)
                held += pcm.shape[0]
                self.samples += pcm.shape[0]
            if limit is not None and self.samples > limit:
                assert self.max_seconds is not None  # limit is None without it
                raise _too_long(self.max_seconds)
            while held >= size:
                joined = np.concatenate(pending)
                pending = [joined[size:]] if held > size else []
                held -= size
                yield _finite(joined[:size])
        if held:
            yield _finite(np.concatenate(pending))
        if self.samples == 0:
            raise CorruptAudio("the audio stream holds no decodable samples")
        _check_complete(self.seconds, self.info)


def _finite(pcm: np.ndarray) -> np.ndarray:
    if not np.isfinite(pcm).all():
        raise CorruptAudio("the audio holds NaN or infinite samples")
    return np.clip(pcm, -1.0, 1.0, out=pcm)


def decode(source: Source, *, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream of any container to 16 kHz mono float32 in [-1, 1], all of it at once
    (the CLI and benchmarks; the service decodes with `AudioReader.blocks`)."""
    with AudioReader(source, max_seconds=max_seconds) as reader:
        blocks = list(reader.blocks())
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
