"""Conversations for the speaker-label tests: clips of different speakers joined with known turn boundaries,
their reference turns (RTTM), and the diarization error rate of a transcript's speaker segments against them.

`python -m tests.conversations` rebuilds the committed `tests/data/speakers_jfk_lj.wav` (+ `.rttm`) from the
public-domain clips in tests/data: JFK's inaugural address (male) and LJSpeech (female).
The Hindi clips (not committed) make the 3- and 4-speaker conversations at test time from ../shared/audio.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.audio import SAMPLE_RATE, decode
from tests.media import write_wav

DATA = Path(__file__).parent / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "audio"
COMMITTED = DATA / "speakers_jfk_lj.wav"


@dataclass
class Turn:
    start: float
    end: float
    speaker: str


def trim(audio: np.ndarray, floor_db: float = -30.0) -> np.ndarray:
    """The clip from its first to its last 20 ms frame within `floor_db` of its loudest frame."""
    frames = audio[: len(audio) // 320 * 320].reshape(-1, 320)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    loud = np.flatnonzero(level > level.max() + floor_db)
    return audio[loud[0] * 320 : (loud[-1] + 1) * 320]


def join(turns: list[tuple[str, np.ndarray]], gaps: list[float]) -> tuple[np.ndarray, list[Turn]]:
    """The clips one after another with `gaps[i]` seconds of silence before clip i+1 (cycled), and their turns."""
    pieces, reference, at = [], [], 0.0
    for i, (speaker, clip) in enumerate(turns):
        if i:
            gap = np.zeros(int(gaps[(i - 1) % len(gaps)] * SAMPLE_RATE), np.float32)
            pieces.append(gap)
            at += gap.shape[0] / SAMPLE_RATE
        clip = trim(clip)
        reference.append(Turn(round(at, 3), round(at + clip.shape[0] / SAMPLE_RATE, 3), speaker))
        pieces.append(clip)
        at += clip.shape[0] / SAMPLE_RATE
    return np.concatenate(pieces).astype(np.float32), reference


def ljspeech(*ids: str) -> list[np.ndarray]:
    """LJSpeech utterances cut from the long-form file by its segment table."""
    audio = decode(DATA / "en_ljspeech_longform.wav")
    with open(DATA / "en_ljspeech_longform.segments.tsv") as table:
        rows = {row["utterance_id"]: row for row in csv.DictReader(table, delimiter="\t")}
    return [
        audio[int(float(rows[i]["start_s"]) * SAMPLE_RATE) : int(float(rows[i]["end_s"]) * SAMPLE_RATE)] for i in ids
    ]


def jfk() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole JFK clip and its two halves ("And so, my fellow Americans," / "ask not ... your country.")."""
    audio = decode(DATA / "en_jfk.flac")
    return audio, audio[: int(4.6 * SAMPLE_RATE)], audio[int(5.2 * SAMPLE_RATE) :]


def two_speakers() -> tuple[np.ndarray, list[Turn]]:
    """About 70 s, 8 turns of 3.9-10 s: LJSpeech (SPEAKER A) and JFK (SPEAKER B), gaps of 0.2-0.8 s."""
    whole, first, second = jfk()
    lj = ljspeech("LJ001-0001", "LJ001-0003", "LJ001-0004", "LJ001-0005", "LJ001-0006")
    turns = [("A", lj[0]), ("B", whole), ("A", lj[1]), ("B", first), ("A", lj[2]), ("B", second)]
    turns += [("A", lj[3]), ("B", whole)]
    return join(turns, gaps=[0.5, 0.3, 0.8, 0.2])


def hindi(name: str) -> np.ndarray:
    return decode(SHARED / name)


def three_speakers() -> tuple[np.ndarray, list[Turn]]:
    """Mann Ki Baat (M, Hindi), JFK (B) and LJSpeech (A): 7 turns of 3.9-10 s (needs ../shared/audio)."""
    whole, first, second = jfk()
    lj = ljspeech("LJ001-0004", "LJ001-0005", "LJ001-0007")
    m1, m2 = hindi("hi_mannkibaat_00A020.mp3"), hindi("hi_mannkibaat_00C007.mp3")
    turns = [("M", m1), ("A", lj[0]), ("B", first), ("M", m2), ("A", lj[1]), ("B", second), ("A", lj[2])]
    return join(turns, gaps=[0.4, 0.7, 0.3])


def four_speakers() -> tuple[np.ndarray, list[Turn]]:
    """The three above and a Doordarshan newsreader (D): 8 turns of 3.9-10 s (needs ../shared/audio)."""
    whole, first, second = jfk()
    lj = ljspeech("LJ001-0004", "LJ001-0005", "LJ001-0007")
    m1, m2, d = (hindi(f"hi_{n}.mp3") for n in ("mannkibaat_00A020", "mannkibaat_00C007", "ddnews_00D002"))
    turns = [("M", m1), ("A", lj[0]), ("D", d), ("B", first), ("M", m2), ("A", lj[1]), ("B", second), ("D", d)]
    return join(turns, gaps=[0.4, 0.7, 0.3])


def english_first() -> tuple[np.ndarray, list[Turn]]:
    """The four voices, JFK first: a file whose language is detected as English though half its turns are Hindi
    (each turn must be decoded in its own language, not dropped; needs ../shared/audio)."""
    whole, _, second = jfk()
    lj = ljspeech("LJ001-0001", "LJ001-0003")
    m1, m2, d = (hindi(f"hi_{n}.mp3") for n in ("mannkibaat_00A020", "mannkibaat_00C007", "ddnews_00D002"))
    turns = [("B", whole), ("M", m1), ("A", lj[0]), ("D", d), ("B", second), ("M", m2), ("A", lj[1])]
    return join(turns, gaps=[0.4, 0.6, 0.25])


def write_rttm(path: Path, turns: list[Turn], name: str) -> None:
    with open(path, "w") as out:
        for t in turns:
            out.write(f"SPEAKER {name} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker} <NA> <NA>\n")


def read_rttm(path: Path) -> list[Turn]:
    turns = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        start, length = float(fields[3]), float(fields[4])
        turns.append(Turn(start, start + length, fields[7]))
    return turns


def der(reference: list[Turn], hypothesis: list[Turn], collar: float = 0.25, step: float = 0.01) -> float:
    """Diarization error rate: (missed speech + false alarm + speaker confusion) / reference speech, on 10 ms
    frames, ignoring `collar` seconds either side of every reference turn boundary (as NIST md-eval and
    pyannote.metrics do), with the hypothesis speakers mapped one-to-one onto the reference speakers so as to
    agree most (Hungarian assignment)."""
    from scipy.optimize import linear_sum_assignment

    end = max([t.end for t in reference + hypothesis] + [0.0])
    frames = int(np.ceil(end / step)) + 1
    times = (np.arange(frames) + 0.5) * step

    def activity(turns: list[Turn]) -> tuple[list[str], np.ndarray]:
        names = sorted({t.speaker for t in turns})
        active = np.zeros((len(names), frames), bool)
        for t in turns:
            active[names.index(t.speaker), (times >= t.start) & (times < t.end)] = True
        return names, active

    _, ref = activity(reference)
    _, hyp = activity(hypothesis)
    scored = np.ones(frames, bool)
    for t in reference:
        for edge in (t.start, t.end):
            scored &= np.abs(times - edge) > collar
    ref, hyp = ref[:, scored], hyp[:, scored]
    overlap = ref.astype(float) @ hyp.T.astype(float) if len(hyp) else np.zeros((len(ref), 0))
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    correct = np.zeros(ref.shape[1])
    for r, c in zip(rows, cols):
        correct += ref[r] & hyp[c]
    # per frame: error = max(n_ref, n_hyp) - correct (NIST's scoring of missed + false alarm + confusion)
    errors = np.maximum(n_ref, n_hyp) - correct
    total = n_ref.sum()
    return float(errors.sum() / total) if total else 0.0


def speaker_turns(segments: list) -> list[Turn]:
    """A transcript's segments (Segment or their JSON) as hypothesis turns."""
    out = []
    for s in segments:
        get = s.get if isinstance(s, dict) else lambda k, s=s: getattr(s, k)
        out.append(Turn(float(get("start")), float(get("end")), str(get("speaker"))))
    return out


if __name__ == "__main__":
    audio, turns = two_speakers()
    write_wav(COMMITTED, audio)
    write_rttm(COMMITTED.with_suffix(".rttm"), turns, COMMITTED.stem)
    print(f"{COMMITTED}: {audio.shape[0] / SAMPLE_RATE:.1f} s, {len(turns)} turns")
