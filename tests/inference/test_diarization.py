"""Speaker labels, piece by piece: the mel front end against librosa's figures, the GE2E encoder on real voices,
the VAD-timeline mapping, clustering with an automatic or bounded count, and words/segments labelled and split.
(The whole path through the real service: tests/integration/test_speakers.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from service.audio import SAMPLE_RATE, decode
from service.inference import diarization
from service.inference.diarization import (
    SpeakerTrack,
    Turn,
    _pieces,
    cluster,
    label_segments,
    speaker_at,
    turn_cuts,
)
from service.inference.pipeline import SpeakerFeed
from service.inference.speaker_encoder import Embeddings, GE2EEncoder, mel_filters, mel_spectrogram
from service.inference.windows import Window
from service.options import JobOptions, SpeakerCount
from service.transcript import Segment, Word
from tests.conversations import DATA, der, ljspeech, read_rttm


@pytest.fixture(scope="module")
def encoder() -> GE2EEncoder:
    return GE2EEncoder(threads=1)


def test_mel_front_end_matches_librosa() -> None:
    """Figures from librosa 0.11 (`librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)` and
    `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, n_mels=40)`), which Resemblyzer's
    encoder was trained on."""
    filters = mel_filters(400, 40)
    assert filters.shape == (40, 201)
    np.testing.assert_allclose(filters[[3, 17, 33], [7, 35, 118]], [0.010954, 0.009177, 0.002676], atol=2e-6)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    mel = mel_spectrogram(tone)
    assert mel.shape == (101, 40)
    np.testing.assert_allclose(mel[50, [5, 4, 6, 25]], [41.078, 5.439, 4.455, 2.036], rtol=1e-3)
    np.testing.assert_allclose(mel[0, [5, 4, 6, 25]], [13.43, 5.357, 4.037, 0.932], rtol=1e-3)


def test_encoder_tells_voices_apart(encoder: GE2EEncoder) -> None:
    jfk = decode(DATA / "en_jfk.flac")
    lj_a, lj_b = ljspeech("LJ001-0001", "LJ001-0003")

    def voice(audio: np.ndarray) -> np.ndarray:
        found = encoder.embed(audio, 0.4)
        assert np.allclose(np.linalg.norm(found.vectors, axis=1), 1.0, atol=1e-5)
        mean = found.vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)

    same, other = float(voice(lj_a) @ voice(lj_b)), float(voice(lj_a) @ voice(jfk))
    assert same > 0.8 and other < 0.7 and same - other > 0.2, (same, other)


def test_encoder_windows_cover_the_audio(encoder: GE2EEncoder) -> None:
    audio = np.random.default_rng(0).standard_normal(int(5.05 * SAMPLE_RATE)).astype(np.float32) * 0.1
    found = encoder.embed(audio, 0.4)
    assert found.start[0] == 0 and found.end[-1] == pytest.approx(5.05, abs=0.011)
    assert np.all(np.diff(found.start) <= 0.4 + 1e-9) and np.all(found.end - found.start == pytest.approx(1.6))
    short = encoder.embed(audio[: int(0.7 * SAMPLE_RATE)], 0.4)  # shorter than a window: one of its own length
    assert len(short.vectors) == 1 and short.end[0] == pytest.approx(0.7, abs=0.011)


def test_pieces_map_a_window_back_to_the_file_timeline() -> None:
    spans = [{"start": 16000, "end": 48000}, {"start": 80000, "end": 96000}, {"start": 160000, "end": 320000}]
    # collapsed timeline: [0, 2) is 1-3 s, [2, 3) is 5-6 s, [3, 13) is 10-20 s; a window from 1.5 s to 4.5 s
    assert _pieces(1.5, 3.0, spans) == [(0.0, 2.5, 0.5), (0.5, 5.0, 1.0), (1.5, 10.0, 1.5)]
    assert _pieces(4.0, 2.0, None) == [(0.0, 4.0, 2.0)]


def _voices(counts: list[int], seed: int = 0, noise: float = 0.65) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings as alike as GE2E windows are: about 0.7 between two windows of one voice, 0.35 between
    voices' centres (a shared direction plus one of each voice's own)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((256, len(counts) + 1)))
    out, truth = [], []
    for speaker, n in enumerate(counts):
        centre = 0.59 * basis[:, 0] + 0.8 * basis[:, speaker + 1]
        points = centre + noise * rng.standard_normal((n, 256)) / np.sqrt(256)
        out.append(points / np.linalg.norm(points, axis=1, keepdims=True))
        truth += [speaker] * n
    return np.concatenate(out), np.array(truth)


@pytest.mark.parametrize("counts", [[60], [40, 30], [30, 25, 20], [20, 20, 20, 20]])
def test_cluster_finds_the_count(counts: list[int]) -> None:
    vectors, truth = _voices(counts)
    centres = cluster(vectors, np.full(len(vectors), 0.4), SpeakerCount())
    assert len(centres) == len(counts)
    nearest = np.argmax(vectors @ centres.T, axis=1)
    for speaker in range(len(counts)):  # each true speaker lands in one cluster
        assert len(set(nearest[truth == speaker])) == 1


def test_cluster_keeps_within_the_asked_count() -> None:
    vectors, _ = _voices([30, 25, 20])
    assert len(cluster(vectors, np.full(len(vectors), 0.4), SpeakerCount(2, 2))) == 2
    assert len(cluster(vectors, np.full(len(vectors), 0.4), SpeakerCount(4, 5))) == 4
    assert len(cluster(vectors, np.full(len(vectors), 0.4), SpeakerCount(1, 1))) == 1


def test_a_speck_is_not_a_speaker() -> None:
    """A few outlying windows (a cough, a boundary) under MIN_SPEAKER_S do not make a speaker of their own."""
    vectors, _ = _voices([50, 3], seed=3)
    assert len(cluster(vectors, np.full(len(vectors), 0.4), SpeakerCount())) == 1


class _ByLoudness:
    """A stand-in encoder for the track's bookkeeping: loud and quiet audio are two 'voices'."""

    name, window_s = "loudness", 1.6

    def embed(self, audio: np.ndarray, hop_s: float) -> Embeddings:
        starts = np.arange(0, max(audio.shape[0] / SAMPLE_RATE - 1.6, 0) + 1e-9, hop_s)
        vectors = []
        for s in starts:
            chunk = audio[int(s * SAMPLE_RATE) : int((s + 1.6) * SAMPLE_RATE)]
            loud = float(np.abs(chunk).mean() > 0.2)
            vectors.append([loud, 1 - loud] + [0.0] * 6)
        return Embeddings(np.array(vectors), starts, starts + 1.6)


def test_track_turns_on_the_file_timeline() -> None:
    """Two windows cut from VAD spans: turns come back on the original timeline, labelled in order of speech."""
    loud, quiet = np.full(3 * SAMPLE_RATE, 0.5, np.float32), np.full(4 * SAMPLE_RATE, 0.05, np.float32)
    spans = [{"start": 1 * SAMPLE_RATE, "end": 4 * SAMPLE_RATE}, {"start": 6 * SAMPLE_RATE, "end": 10 * SAMPLE_RATE}]
    track = SpeakerTrack(_ByLoudness(), SpeakerCount(2, 2))
    track.add(np.concatenate([loud, quiet]), 0.0, spans)
    turns = track.turns()
    assert [t.speaker for t in turns] == ["SPEAKER_00", "SPEAKER_01"]
    assert turns[0].start == pytest.approx(1.0) and turns[0].end == pytest.approx(4.0)
    assert turns[1].start == pytest.approx(6.0) and turns[1].end == pytest.approx(10.0)


def test_window_cut_at_the_speaker_change() -> None:
    """One VAD span holding two voices: the window is cut where the voice changes (within a frame or two), and
    the feed hands its parts out in order with their offsets on the collapsed timeline."""
    audio = np.concatenate([np.full(3 * SAMPLE_RATE, 0.5, np.float32), np.full(4 * SAMPLE_RATE, 0.05, np.float32)])
    track = SpeakerTrack(_ByLoudness(), SpeakerCount())
    (cut,) = turn_cuts(track.add(audio, 10.0, None))
    assert 2.0 <= cut <= 3.2
    assert turn_cuts(SpeakerTrack(_ByLoudness()).add(audio[: 3 * SAMPLE_RATE], 0.0, None)) == []

    class Feed:
        seconds = speech_seconds = 7.0
        speech = None
        items = [Window(audio, 10.0)]

        async def next(self) -> object | None:
            return self.items.pop(0) if self.items else None

    async def parts() -> list[Window]:
        feed, out = SpeakerFeed(Feed(), SpeakerTrack(_ByLoudness())), []
        while (item := await feed.next()) is not None:
            out.append(item)
        return out

    import asyncio

    first, second = asyncio.run(parts())
    assert first.offset == 10.0 and second.offset == pytest.approx(10.0 + first.seconds)
    assert first.seconds + second.seconds == pytest.approx(7.0) and first.seconds == pytest.approx(cut, abs=0.001)


def _words(*spans: tuple[str, float, float]) -> list[Word]:
    return [Word(word=w, start=s, end=e, probability=0.9) for w, s, e in spans]


def test_segments_split_where_the_speaker_changes() -> None:
    turns = [Turn(0.0, 2.0, "SPEAKER_00"), Turn(2.2, 5.0, "SPEAKER_01")]
    words = _words((" Hello", 0.1, 0.5), (" there.", 0.6, 1.9), (" Hi,", 2.3, 2.6), (" you.", 2.7, 3.0))
    segment = Segment(
        start=0.1, end=3.0, text=" Hello there. Hi, you.", tokens=[1, 2, 3], avg_logprob=-0.2, words=words
    )
    out = label_segments([segment], turns, keep_words=True)
    assert [(s.speaker, s.text, s.start, s.end) for s in out] == [
        ("SPEAKER_00", " Hello there.", 0.1, 1.9),
        ("SPEAKER_01", " Hi, you.", 2.3, 3.0),
    ]
    assert all(s.tokens == [] and s.avg_logprob == -0.2 for s in out)  # the window's figures, not its tokens
    assert [w.speaker for w in out[1].words or []] == ["SPEAKER_01", "SPEAKER_01"]
    kept = label_segments([Segment(start=2.3, end=3.0, text=" Hi", tokens=[5], words=words[2:])], turns, False)
    assert kept[0].speaker == "SPEAKER_01" and kept[0].words is None and kept[0].tokens == [5]


def test_speaker_of_a_span_in_a_pause_is_the_nearest() -> None:
    turns = [Turn(0.0, 2.0, "SPEAKER_00"), Turn(5.0, 6.0, "SPEAKER_01")]
    assert speaker_at(turns, 2.5, 2.9) == "SPEAKER_00" and speaker_at(turns, 4.5, 4.8) == "SPEAKER_01"
    assert speaker_at(turns, 1.5, 5.2) == "SPEAKER_00" and speaker_at([], 0, 1) is None


def test_der_scoring() -> None:
    reference = read_rttm(DATA / "speakers_jfk_lj.rttm")
    assert der(reference, reference) == 0.0
    swapped = [Turn(t.start, t.end, {"A": "x", "B": "y"}[t.speaker]) for t in reference]
    assert der(reference, swapped) == 0.0  # labels are mapped, not compared by name
    one = [Turn(t.start, t.end, "x") for t in reference]
    assert 0.4 < der(reference, one) < 0.6  # one speaker for two: the other's speech is confusion
    assert der(reference, []) == 1.0


@pytest.mark.parametrize(
    ("value", "text"), [(True, "auto"), ("true", "auto"), (3, "3"), ("2-4", "2-4"), ({"min": 2, "max": 3}, "2-3")]
)
def test_speakers_option(value: object, text: str) -> None:
    options = JobOptions(speakers=value)
    assert str(options.speakers) == text and options.query() == {"speakers": text}
    assert JobOptions.model_validate(options.stored()) == options
    assert JobOptions(speakers=False).speakers is None and "speakers" not in JobOptions().query()


@pytest.mark.parametrize("value", ["9", "0-2", "3-2", "many", 1.5])
def test_bad_speakers_option(value: object) -> None:
    with pytest.raises(ValueError, match="speakers"):
        JobOptions(speakers=value)


def test_threshold_between_voices() -> None:
    """The module's constants the README quotes."""
    assert diarization.THRESHOLD == 0.49 and diarization.HOP_S == 0.4


def test_speaker_model_errors_say_what_is_missing() -> None:
    from service.inference.speaker_encoder import load_encoder

    with pytest.raises(RuntimeError, match="SPEAKER_MODEL_PATH"):
        load_encoder("pyannote")
    with pytest.raises(ValueError, match="unknown SPEAKER_MODEL"):
        load_encoder("xvector")
    with pytest.raises(OSError):
        load_encoder("resemblyzer", "/nonexistent/ge2e.pt")
