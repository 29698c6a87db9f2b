"""Who spoke when: speaker turns from embeddings of a job's speech, and the transcript's words labelled with them.

The steps, as the pipeline runs them (`pipeline.WindowPipeline` with a `SpeakerTrack`):
1. speech regions: the VAD spans the window cutter already found; each window Whisper gets is split back into
   its spans, so no embedding straddles a silence the VAD removed;
2. embeddings (`speaker_encoder.py`) over short sliding windows of each piece, computed on a thread while
   Whisper decodes (only the vectors are kept, never the audio: memory grows by 1 KB per hop);
3. clustering once the whole file is embedded: agglomerative, average linkage on cosine distance, with the
   speaker count found where merging would join clusters less alike than `THRESHOLD` (clusters with less than
   `MIN_SPEAKER_S` of speech, or 10 % of a short file's, are not speakers: boundary windows and noise), kept
   within the job's min-max, then refined by assigning every window to its nearest cluster centre;
4. turns: every 0.1 s frame of a piece takes the speaker whose centre the windows covering it are most alike;
5. labels: each word takes the speaker it overlaps most (the nearest turn when none), and segments are split
   where the speaker changes (`label_segments`); `SPEAKER_00`, `SPEAKER_01`, ... in order of first speech.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from service.audio import SAMPLE_RATE
from service.inference.speaker_encoder import SpeakerEncoder
from service.options import SpeakerCount
from service.transcript import Segment, Word

log = logging.getLogger(__name__)

HOP_S = 0.4  # between embedding windows
FRAME_S = 0.1  # resolution of the turns
MIN_PIECE_S = 0.3  # shorter pieces of speech get no embedding of their own (their neighbours' label)
THRESHOLD = 0.49  # cosine distance (average linkage) above which clusters are different speakers
MIN_SPEAKER_S = 2.0  # a cluster with less speech than this (or than 10 % of a short file's) is not a speaker
MIN_SPEAKER_SHARE = 0.1
MAX_POINTS = 1500  # embeddings clustered at once; a longer file's consecutive embeddings are averaged first
REFINE_ROUNDS = 5
MIN_PART_S = 1.0  # the shortest part a window is cut into at a speaker change


def label(index: int) -> str:
    return f"SPEAKER_{index:02d}"


@dataclass
class Turn:
    """A stretch of one speaker's speech, seconds on the file's timeline."""

    start: float
    end: float
    speaker: str


@dataclass
class _Piece:
    """One contiguous stretch of speech on the file's timeline and its embeddings (window spans relative to it)."""

    start: float
    seconds: float
    at: float = 0.0  # where it starts in the window it came in
    vectors: np.ndarray | None = None
    window_start: np.ndarray | None = None
    window_end: np.ndarray | None = None
    speakers: np.ndarray | None = None  # per frame, after clustering


def _pieces(offset: float, seconds: float, speech: list[dict] | None) -> list[tuple[float, float, float]]:
    """(start in the window's audio, start on the file's timeline, length) of each span a window covers.
    `offset`: where the window starts on the VAD-collapsed timeline; `speech`: the VAD spans (samples, on the
    file's timeline), None when the audio was not cut (the timelines are the same)."""
    if not speech:
        return [(0.0, offset, seconds)]
    out, collapsed = [], 0.0
    end = offset + seconds
    for span in speech:
        length = (span["end"] - span["start"]) / SAMPLE_RATE
        lo, hi = max(collapsed, offset), min(collapsed + length, end)
        if hi - lo > 1e-6:
            out.append((lo - offset, span["start"] / SAMPLE_RATE + lo - collapsed, hi - lo))
        collapsed += length
        if collapsed >= end:
            break
    return out


@dataclass
class SpeakerTrack:
    """One job's speakers: `add` each window as it is cut (thread-safe, any order), then `turns()`."""

    encoder: SpeakerEncoder
    count: SpeakerCount = field(default_factory=SpeakerCount)
    pieces: list[_Piece] = field(default_factory=list)
    embed_s: float = 0.0  # time spent embedding
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, audio: np.ndarray, offset: float, speech: list[dict] | None) -> list[_Piece]:
        """Embed a window's speech: `audio` starts at `offset` on the collapsed timeline (see `_pieces`). Returns
        the window's pieces (for `turn_cuts`)."""
        started = time.perf_counter()
        new = []
        for at, start, seconds in _pieces(offset, audio.shape[0] / SAMPLE_RATE, speech):
            piece = _Piece(start, seconds, at)
            if seconds >= MIN_PIECE_S:
                chunk = audio[int(at * SAMPLE_RATE) : int((at + seconds) * SAMPLE_RATE)]
                found = self.encoder.embed(chunk, HOP_S)
                piece.vectors, piece.window_start = found.vectors, found.start
                piece.window_end = np.minimum(found.end, seconds)
            new.append(piece)
        with self._lock:
            self.pieces.extend(new)
            self.embed_s += time.perf_counter() - started
        return new

    def turns(self) -> list[Turn]:
        """The speaker turns of the whole file, in time order (empty without speech)."""
        pieces = sorted(self.pieces, key=lambda p: p.start)
        stacked = _stack(pieces)
        if stacked is None:
            return []
        centres = cluster(*stacked, self.count)
        order: dict[int, str] = {}  # cluster -> label, in order of first speech
        turns: list[Turn] = []
        for piece in pieces:
            frames = _frame_speakers(piece, centres) if piece.vectors is not None else None
            if frames is None:  # too short to embed: joins the turn before it (or after, at the start)
                turns.append(Turn(piece.start, piece.start + piece.seconds, ""))
                continue
            run_start = 0
            for i in range(1, len(frames) + 1):
                if i == len(frames) or frames[i] != frames[run_start]:
                    speaker = order.setdefault(int(frames[run_start]), label(len(order)))
                    end = min(i * FRAME_S, piece.seconds)
                    turns.append(Turn(piece.start + run_start * FRAME_S, piece.start + end, speaker))
                    run_start = i
        return _merge(_fill_unlabelled(turns))


def turn_cuts(pieces: list[_Piece], min_part_s: float = MIN_PART_S) -> list[float]:
    """Where one window's speaker changes (seconds into the window), from its own pieces clustered alone: so
    a window can be cut into one part per speaker turn before Whisper decodes it, each part in its own language.
    Parts shorter than `min_part_s` are not cut off."""
    stacked = _stack(pieces)
    if stacked is None:
        return []
    centres = cluster(*stacked, SpeakerCount())
    if len(centres) < 2:
        return []
    cuts: list[float] = []
    previous: int | None = None
    for piece in sorted(pieces, key=lambda p: p.at):
        if piece.vectors is None:
            continue
        frames = _frame_speakers(piece, centres)
        for i, speaker in enumerate(frames):
            if previous is not None and speaker != previous:
                cuts.append(piece.at + (i * FRAME_S if i else 0.0))
            previous = int(speaker)
    end = max(p.at + p.seconds for p in pieces)
    kept: list[float] = []
    for cut in cuts:  # a part shorter than min_part_s stays with the one before it
        if cut - (kept[-1] if kept else 0.0) >= min_part_s and end - cut >= min_part_s:
            kept.append(cut)
    return kept


def _stack(pieces: list[_Piece]) -> tuple[np.ndarray, np.ndarray] | None:
    """The pieces' embeddings one after another, and the seconds of speech each stands for (None: none)."""
    embedded = [(p, p.vectors) for p in pieces if p.vectors is not None]
    if not embedded:
        return None
    vectors = np.concatenate([v for _, v in embedded])
    return vectors, np.concatenate([np.full(len(v), p.seconds / len(v)) for p, v in embedded])


def cluster(vectors: np.ndarray, weights: np.ndarray, count: SpeakerCount) -> np.ndarray:
    """The speakers' centre embeddings (k, dim), k within `count`, from windows' embeddings and their seconds."""
    from scipy.cluster.hierarchy import fcluster, linkage

    points, point_weights = _reduce(vectors, weights)
    if len(points) == 1 or count.max == 1:
        return _normalise(np.average(vectors, axis=0, weights=weights)[None, :])
    tree = linkage(points, method="average", metric="cosine")
    if count.min == count.max:
        k = count.min
    else:
        groups = fcluster(tree, t=THRESHOLD, criterion="distance")
        seconds = np.bincount(groups, weights=point_weights)[1:]
        k = int(np.sum(seconds >= _speaker_floor(seconds.sum())))
        k = max(count.min, min(count.max, k, len(points)))
    centres = _largest_centres(points, point_weights, tree, k)
    for _ in range(REFINE_ROUNDS):  # nearest centre, new centres (spherical k-means on all windows)
        nearest = np.argmax(vectors @ centres.T, axis=1)
        members = [nearest == c for c in range(k) if np.any(nearest == c)]
        kept = [np.average(vectors[m], axis=0, weights=weights[m]) for m in members]
        updated = _normalise(np.array(kept))
        if updated.shape == centres.shape and np.allclose(updated, centres):
            break
        centres = updated
    return centres


def _largest_centres(points: np.ndarray, weights: np.ndarray, tree: np.ndarray, k: int) -> np.ndarray:
    """Centres of the k clusters with most speech, cutting the tree into as few clusters as give k of them that
    are not specks (so outliers do not take a speaker's place)."""
    from scipy.cluster.hierarchy import fcluster

    best = None
    for clusters in range(k, min(len(points), 4 * k + 8) + 1):
        groups = fcluster(tree, t=clusters, criterion="maxclust")
        seconds = np.bincount(groups, weights=weights)
        top = np.argsort(seconds)[::-1][:k]
        best = [g for g in top if seconds[g] > 0]
        if len(best) == k and seconds[top[-1]] >= _speaker_floor(seconds.sum()):
            break
    assert best is not None
    return _normalise(np.array([np.average(points[groups == g], axis=0, weights=weights[groups == g]) for g in best]))


def _speaker_floor(total: float) -> float:
    """The least speech a cluster must hold to count as a speaker."""
    return min(MIN_SPEAKER_S, MIN_SPEAKER_SHARE * total)


def _reduce(vectors: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points: consecutive embeddings averaged in groups when there are more."""
    group = math.ceil(len(vectors) / MAX_POINTS)
    if group == 1:
        return vectors, weights
    starts = np.arange(0, len(vectors), group)
    sums = np.add.reduceat(vectors * weights[:, None], starts)
    totals = np.add.reduceat(weights, starts)
    return _normalise(sums / totals[:, None]), totals


def _normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def _frame_speakers(piece: _Piece, centres: np.ndarray) -> np.ndarray:
    """Each FRAME_S frame's cluster: the one its covering windows are, on average, most alike."""
    assert piece.vectors is not None and piece.window_start is not None and piece.window_end is not None
    frames = max(1, math.ceil(piece.seconds / FRAME_S - 1e-9))
    score = np.zeros((frames, len(centres)))
    cover = np.zeros(frames)
    similarity = piece.vectors @ centres.T
    for i in range(len(piece.vectors)):
        lo = int(piece.window_start[i] / FRAME_S)
        hi = max(lo + 1, min(frames, math.ceil(piece.window_end[i] / FRAME_S)))
        score[lo:hi] += similarity[i]
        cover[lo:hi] += 1
    if np.any(cover == 0):  # frames no window covers (cannot happen with hops under the window): nearest window
        covered = np.flatnonzero(cover)
        for f in np.flatnonzero(cover == 0):
            score[f] = score[covered[np.argmin(np.abs(covered - f))]]
    return np.argmax(score, axis=1)


def _fill_unlabelled(turns: list[Turn]) -> list[Turn]:
    """Turns of unembedded pieces take the previous turn's speaker (the next one's at the start)."""
    known = [t.speaker for t in turns if t.speaker]
    if not known:
        return []
    previous = known[0]
    for turn in turns:
        if turn.speaker:
            previous = turn.speaker
        else:
            turn.speaker = previous
    return turns


def _merge(turns: list[Turn]) -> list[Turn]:
    """Adjacent turns of the same speaker joined (across pauses too: a turn lasts until someone else speaks)."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].speaker == turn.speaker:
            merged[-1].end = max(merged[-1].end, turn.end)
        else:
            merged.append(Turn(turn.start, turn.end, turn.speaker))
    return merged


def speaker_at(turns: list[Turn], start: float, end: float) -> str | None:
    """The speaker of the span: the one it overlaps most, else the nearest turn's."""
    if not turns:
        return None
    best, overlap, nearest, distance = None, 0.0, turns[0].speaker, math.inf
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > overlap:
            best, overlap = turn.speaker, shared
        gap = max(turn.start - end, start - turn.end, 0.0)
        if gap < distance:
            nearest, distance = turn.speaker, gap
    return best or nearest


def label_segments(segments: list[Segment], turns: list[Turn], keep_words: bool) -> list[Segment]:
    """The segments with a speaker each (and on each word), split where the speaker changes between words.
    A split segment's pieces keep its window's figures but not its `tokens` (words carry no token ids).
    `keep_words`: False drops the words once used (the job did not ask for word timestamps)."""
    out: list[Segment] = []
    for segment in segments:
        words = segment.words or []
        for word in words:
            word.speaker = speaker_at(turns, word.start, word.end)
        runs: list[list[Word]] = []
        for word in words:
            if runs and runs[-1][-1].speaker == word.speaker:
                runs[-1].append(word)
            else:
                runs.append([word])
        if len(runs) <= 1:
            segment.speaker = runs[0][0].speaker if runs else speaker_at(turns, segment.start, segment.end)
            out.append(segment)
        else:
            for run in runs:
                piece = segment.model_copy(deep=False)
                piece.words, piece.tokens, piece.speaker = run, [], run[0].speaker
                piece.start, piece.end = run[0].start, run[-1].end
                piece.text = "".join(w.word for w in run)
                out.append(piece)
    if not keep_words:
        for segment in out:
            segment.words = None
    return out


def speaker_labels(segments: list[Segment]) -> list[str]:
    """The labels the segments carry, in order of first appearance."""
    seen: dict[str, None] = {}
    for segment in segments:
        if segment.speaker:
            seen.setdefault(segment.speaker, None)
    return list(seen)
