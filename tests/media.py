"""Generate small media files with PyAV for tests: tones in many containers, video without audio."""

from __future__ import annotations

import wave
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


def write_wav(path: Path, audio: np.ndarray, rate: int = 16_000) -> Path:
    """16-bit mono WAV of float samples in [-1, 1] (clipped), with the standard library's writer (fast)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path


def write_audio(path: Path, samples: np.ndarray, rate: int, bitrate: int | None = None) -> Path:
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
        if bitrate:
            stream.bit_rate = bitrate
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


def write_long_opus(
    path: Path, seconds: float, speech: np.ndarray, every: float = 600.0, at: float = 100.0, bitrate: int = 8000
) -> Path:
    """`seconds` of faint noise with `speech` (16 kHz mono float32) starting `at` seconds into every `every`-second
    stretch, as low-bitrate Ogg/Opus (16 kHz mono). One stretch is encoded, and its packets are written again and
    again with shifted timestamps, so a 2-hour file takes seconds to make; a decoder sees one long Opus stream."""
    rate = 16_000
    unit = (np.random.default_rng(0).standard_normal(int(every * rate)) * 0.002).astype(np.float32)
    start = int(at * rate)
    unit[start : start + speech.shape[0]] += speech[: unit.shape[0] - start]
    encoded = path.with_suffix(".unit.opus")
    write_audio(encoded, unit.reshape(1, -1), rate, bitrate=bitrate)
    with av.open(str(encoded)) as source:
        packets = [(bytes(p), p.pts, p.duration) for p in source.demux(source.streams.audio[0]) if p.size]
        template = source.streams.audio[0]
        step = int(round(every / template.time_base))
        with av.open(str(path), "w", format="ogg") as out:
            stream = out.add_stream_from_template(template)
            for rep in range(int(np.ceil(seconds / every))):
                for data, pts, duration in packets:
                    packet = av.Packet(data)
                    packet.pts = packet.dts = pts + rep * step
                    packet.duration, packet.time_base, packet.stream = duration, template.time_base, stream
                    out.mux(packet)
    encoded.unlink()
    return path
