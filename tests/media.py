"""Generate small media files with PyAV for tests: tones in many containers, video without audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CODECS = {  # extension -> (container format, audio codec, sample format)
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "ogg": ("ogg", "flac", "s16"),
    "opus": ("ogg", "libopus", "flt"),
    "webm": ("webm", "libopus", "flt"),
    "m4a": ("mp4", "aac", "fltp"),
    "mkv": ("matroska", "aac", "fltp"),
}


def tone(seconds: float, rate: int, channels: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Encode `samples` (channels × n, float32) into the container named by `path`'s extension."""
    fmt, codec, sample_fmt = CODECS[path.suffix.lstrip(".")]
    channels = samples.shape[0]
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        n = int(samples.shape[1] * 48000 / rate)
        x = np.linspace(0, samples.shape[1] - 1, n)
        samples = np.stack([np.interp(x, np.arange(samples.shape[1]), ch) for ch in samples]).astype(np.float32)
        rate = 48000
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        step = 1024
        pts = 0
        for i in range(0, samples.shape[1], step):
            block = samples[:, i : i + step]
            if sample_fmt == "s16":
                data = (block.T.reshape(1, -1) * 32767).astype(np.int16)
            elif sample_fmt == "flt":
                data = block.T.reshape(1, -1).astype(np.float32)
            else:  # planar float
                data = block.astype(np.float32)
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout=stream.layout.name)
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += block.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_video_only(path: Path, seconds: float = 2.0) -> Path:
    """An H.264 MP4 with a moving test pattern and no audio track."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(int(seconds * 10)):
            img = np.full((64, 64, 3), (i * 10) % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
