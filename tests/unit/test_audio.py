"""Decoding and probing real files, generated containers and broken inputs (PyAV, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import audio
from tests.media import tone, write_audio, write_video_only

DATA = Path(__file__).parent.parent / "data"


@pytest.mark.parametrize("name", ["en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4"])
def test_real_files_decode_to_16k_mono(name: str) -> None:
    pcm = audio.decode(DATA / name)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(pcm.shape[0] / audio.SAMPLE_RATE - 11.0) < 0.1
    assert 0.05 < np.abs(pcm).max() <= 1.0


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus", "webm", "m4a", "mkv"])
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (48000, 2)])
def test_any_container_rate_and_channels(tmp_path: Path, ext: str, rate: int, channels: int) -> None:
    path = write_audio(tmp_path / f"tone.{ext}", tone(2.0, rate, channels), rate)
    pcm = audio.decode(path)
    assert abs(pcm.shape[0] / audio.SAMPLE_RATE - 2.0) < 0.1
    # The 440 Hz tone survives resampling: its spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(pcm[4000:20000]))
    assert abs(np.argmax(spectrum) * audio.SAMPLE_RATE / 16000 - 440) < 5
    info = audio.probe(path)
    assert info.channels == channels


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(audio.EmptyAudio):
        audio.probe(tmp_path / "empty.wav")
    with pytest.raises(audio.EmptyAudio):
        audio.decode(b"")


@pytest.mark.parametrize(
    "payload", [b"hello, this is text pretending to be audio\n" * 50, bytes(np.random.default_rng(0).bytes(50_000))]
)
def test_not_audio(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(payload)
    with pytest.raises(audio.AudioError) as err:
        audio.probe(path, full=True)
    assert err.value.status in (415, 422)


def test_truncated_flac_is_corrupt(tmp_path: Path) -> None:
    data = (DATA / "en_jfk.flac").read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(audio.CorruptAudio, match="truncated"):
        audio.probe(path, full=True)


def test_truncated_mp4_is_refused(tmp_path: Path) -> None:
    data = (DATA / "en_jfk_video.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(audio.AudioError):
        audio.probe(path, full=True)


def test_video_without_audio(tmp_path: Path) -> None:
    path = write_video_only(tmp_path / "silent.mp4")
    with pytest.raises(audio.NoAudioTrack):
        audio.probe(path)


def test_duration_limit_enforced_while_decoding(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.flac", tone(20.0, 16000, 1), 16000)
    with pytest.raises(audio.AudioTooLong):
        audio.decode(path, max_seconds=5)
    with pytest.raises(audio.AudioTooLong):
        audio.probe(path, max_seconds=5)


def test_quick_probe_reads_only_the_start(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "tone.wav", tone(3.0, 22050, 2), 22050)
    info = audio.probe(path)
    assert info.sample_rate == 22050 and abs((info.duration or 0) - 3.0) < 0.05


def _float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A WAVE_FORMAT_IEEE_FLOAT mono file written by hand (so NaN and inf can be stored)."""
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_nan_and_inf_samples_are_corrupt(tmp_path: Path) -> None:
    samples = tone(2.0, 16000, 1)[0]
    samples[1000] = np.nan
    samples[2000] = np.inf
    path = _float_wav(tmp_path / "nan.wav", samples)
    with pytest.raises(audio.CorruptAudio, match="NaN"):
        audio.probe(path, full=True)
    with pytest.raises(audio.CorruptAudio, match="NaN"):
        audio.decode(path)
    clean = _float_wav(tmp_path / "ok.wav", tone(2.0, 16000, 1)[0])
    assert audio.probe(clean, full=True).codec == "pcm_f32le"
