"""Client bytes are opened with an allow-list of demuxers and protocols, and decoded in bounded blocks.

Real PyAV/FFmpeg and the real Silero VAD, no mocks:
- files that name other files or streams (ffconcat, HLS, DASH, SDP, with `subfile:`/`tee:`/`file:` inside) are
  refused by `probe`, `decode` and `AudioReader`, as paths (with and without their usual extension) and as
  bytes, with the same message whether the named file exists or not, and the named file is never opened
  (it is a FIFO here: opening it would be seen);
- the containers the service reads still open;
- `AudioReader.blocks` and `WindowStream` give what the whole-array functions give (`decode`, faster-whisper's
  `get_speech_timestamps` + `collect_chunks` through `cut`), while holding a bounded amount of audio.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from service import audio
from service.inference.windows import WindowStream, cut
from tests.hostile import REFERENCES, jfk, jfk_pcm
from tests.media import tone, write_audio

DATA = Path(__file__).parent.parent / "data"
EXTENSIONS = {"ffconcat": ".ffconcat", "hls": ".m3u8", "dash": ".mpd", "sdp": ".sdp"}
KINDS = [name for name, _ in REFERENCES]


def _payload(kind: str, target: str) -> bytes:
    return dict(REFERENCES)[kind](target)


def _extension(kind: str) -> str:
    return EXTENSIONS[kind.split("-")[0]]


Opener = Callable[[audio.Source], object]
OPENERS: dict[str, Opener] = {
    "probe": lambda source: audio.probe(source, full=True),
    "decode": audio.decode,
    "reader": lambda source: list(audio.AudioReader(source).blocks()),
}


def _refusal(opener: Opener, source: audio.Source) -> str:
    with pytest.raises(audio.UnsupportedMedia) as refused:
        opener(source)
    assert refused.value.status == 415 and refused.value.code == "unsupported_media"
    return refused.value.message


class Fifo:
    """A named pipe whose opening is seen: a writer thread blocks on it until a reader opens it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._opened = threading.Event()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._writer.start()

    def _write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # returns once someone opens the pipe for reading
        self._opened.set()
        os.close(fd)  # the reader sees end of file

    def was_opened(self) -> bool:
        """Whether anyone opened the pipe (then releases the writer thread by opening it ourselves)."""
        seen = self._opened.wait(0.5)
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._writer.join(5)
        os.close(fd)
        return seen


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Work in tmp_path: bytes sources resolve a relative name against the working directory."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.mark.parametrize("opener", OPENERS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["path-with-extension", "path-without-extension", "bytes"])
@pytest.mark.parametrize("where", ["sibling", "absolute"])
def test_a_reference_is_refused_and_reveals_nothing(
    in_tmp: Path, opener: str, kind: str, form: str, where: str
) -> None:
    """The same refusal whether the named file exists (a readable FLAC) or not."""
    shutil.copy(DATA / "en_jfk.flac", in_tmp / "secret.flac")
    messages = []
    for name in ("secret.flac", "missing.flac"):
        target = name if where == "sibling" else str(in_tmp / name)
        payload = _payload(kind, target)
        if form == "bytes":
            source: audio.Source = payload
        else:
            source = in_tmp / ("upload" + (_extension(kind) if form == "path-with-extension" else ""))
            source.write_bytes(payload)
        message = _refusal(OPENERS[opener], source)
        assert "secret" not in message and "missing" not in message and str(in_tmp) not in message
        messages.append(message)
    assert messages[0] == messages[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["path-with-extension", "bytes"])
def test_the_named_file_is_never_opened(in_tmp: Path, kind: str, form: str) -> None:
    """Without the allow-list, FFmpeg opens the FIFO an ffconcat list or an .m3u8 playlist names."""
    fifo = Fifo(in_tmp / "named.flac")
    payload = _payload(kind, str(fifo.path) if "hls" in kind else fifo.path.name)
    if form == "bytes":
        source: audio.Source = payload
    else:
        source = in_tmp / f"upload{_extension(kind)}"
        source.write_bytes(payload)
    _refusal(OPENERS["probe"], source)
    assert not fifo.was_opened()


@pytest.mark.parametrize(
    "payload",
    [b"ffconcat version 1.0\nfile 'secret.flac'\n", b"ffconcat version 1.0\nfile secret.flac\nfile secret.flac\n"],
)
def test_concat_bytes_do_not_decode_a_file_of_the_working_directory(in_tmp: Path, payload: bytes) -> None:
    """The Ray Decoder's case: bytes, with relative names resolved against the process's working directory."""
    shutil.copy(DATA / "en_jfk.flac", in_tmp / "secret.flac")
    assert _refusal(audio.decode, payload) == audio.REFUSED_CONTAINER
    assert _refusal(lambda s: list(audio.AudioReader(s).blocks()), io.BytesIO(payload).getvalue())


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg", "opus", "webm", "m4a", "mkv"])
def test_the_containers_the_service_reads_still_open(tmp_path: Path, ext: str) -> None:
    path = write_audio(tmp_path / f"tone.{ext}", tone(2.0, 48000, 2), 48000)
    for source in (path, path.read_bytes()):
        assert abs(audio.decode(source).shape[0] / audio.SAMPLE_RATE - 2.0) < 0.1
        assert audio.allowed_format(audio.probe(source, full=True).container)


@pytest.mark.parametrize("name", ["en_jfk.flac", "en_jfk.m4a", "en_jfk_video.mp4", "en_ljspeech_longform.wav"])
def test_real_files_open_under_any_name(tmp_path: Path, name: str) -> None:
    """Content decides, never the name: real media named like a playlist is still read as what it is."""
    disguised = tmp_path / "list.m3u8"
    shutil.copy(DATA / name, disguised)
    assert audio.probe(disguised, full=True).container == audio.probe(DATA / name, full=True).container


@pytest.mark.parametrize("kind", ["mp3", "ogg"])
def test_encoded_in_memory_files_open_from_bytes(kind: str) -> None:
    assert abs(audio.decode(jfk(kind)).shape[0] / audio.SAMPLE_RATE - 11.0) < 0.2


def test_the_allow_list_names_no_reference_demuxer() -> None:
    for name in ("concat", "hls", "dash", "sdp", "rtsp", "rtp", "tee", "image2", "lavfi", "ffmetadata", "data"):
        assert not audio.allowed_format(name)
    assert audio.allowed_format("mov,mp4,m4a,3gp,3g2,mj2") and audio.allowed_format("matroska,webm")


# --- bounded decoding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [audio.SAMPLE_RATE, 12_345, audio.BLOCK_SAMPLES])
def test_blocks_are_the_decoded_audio(size: int) -> None:
    path = DATA / "en_ljspeech_longform.wav"
    whole = audio.decode(path)
    with audio.AudioReader(path) as reader:
        blocks = list(reader.blocks(size))
    assert all(b.shape[0] == size for b in blocks[:-1]) and 0 < blocks[-1].shape[0] <= size
    assert np.array_equal(np.concatenate(blocks), whole)


def test_a_long_file_is_refused_from_its_header_and_while_decoding(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.flac", tone(12.0, 16000, 1), 16000)
    with pytest.raises(audio.AudioTooLong):
        audio.AudioReader(path, max_seconds=5)
    from tests.hostile import undeclared

    bare = tmp_path / "bare.flac"
    bare.write_bytes(undeclared(path.read_bytes()))
    reader = audio.AudioReader(bare, max_seconds=5)
    with pytest.raises(audio.AudioTooLong):
        for _ in reader.blocks(audio.SAMPLE_RATE):
            pass
    assert reader.seconds < 7  # stopped within a block or so of the limit, not at the end
    reader.close()


def _noisy_mix() -> np.ndarray:
    """400 s of faint noise with the JFK clip at several gaps (spans close together, apart, at the start) and the
    171 s LJ Speech reading (continuous speech: spans cut at the 30 s maximum)."""
    rng = np.random.default_rng(1)
    clip, reading = jfk_pcm(), audio.decode(DATA / "en_ljspeech_longform.wav")
    mix = (rng.standard_normal(audio.SAMPLE_RATE * 400) * 0.003).astype(np.float32)
    for second in (0, 50, 63, 75, 200):
        start = second * audio.SAMPLE_RATE
        mix[start : start + clip.shape[0]] += clip
    start = 250 * audio.SAMPLE_RATE
    mix[start:] += reading[: mix.shape[0] - start]
    return mix


@pytest.fixture(scope="module")
def mix() -> np.ndarray:
    return _noisy_mix()


@pytest.mark.parametrize("vad", [True, False])
@pytest.mark.parametrize("size", [audio.BLOCK_SAMPLES, 12_345, 512 * 7])
def test_the_window_stream_cuts_as_cut_does(mix: np.ndarray, vad: bool, size: int) -> None:
    expected = cut(mix, vad)
    stream = WindowStream(vad)
    windows, held = [], 0
    for i in range(0, mix.shape[0], size):
        windows += stream.feed(mix[i : i + size])
        held = max(held, stream.buffered)
    windows += stream.finish()
    assert stream.speech == expected.speech
    assert [w.offset for w in windows] == expected.offsets
    assert len(windows) == len(expected.audio)
    assert all(np.array_equal(w.audio, e) for w, e in zip(windows, expected.audio))
    assert abs(stream.seconds - expected.seconds) < 1e-6
    # What it holds between blocks: at most a window and the speech that may join it, never the whole input.
    assert held <= 40 * audio.SAMPLE_RATE


@pytest.mark.parametrize("audio_array", [np.zeros(audio.SAMPLE_RATE * 90, np.float32), np.zeros(100, np.float32)])
def test_the_window_stream_on_silence_and_scraps(audio_array: np.ndarray) -> None:
    stream = WindowStream(True)
    windows = stream.feed(audio_array) + stream.finish()
    expected = cut(audio_array, True)
    assert windows == [] == expected.audio and stream.speech == expected.speech
