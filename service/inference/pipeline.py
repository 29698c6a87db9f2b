"""One job's windows through Whisper, and its `Transcript`: the one orchestration the Ray `Decoder`
(`deployment.py`) and the in-process path (`local.py`: the CLI, the benchmarks) share.

`WindowPipeline` takes windows from a `Feed` (the Decoder's decoding steps, or windows cut in advance), sends
each window to `transcribe_window` within a window budget (the first one alone, with the language left to the
engine to detect in the same call, when the job asks for detection; the others once it is known),
decodes a window's tail again where Whisper stopped early (`windows.tail_start`, at most `MAX_FOLLOW_UPS`
times), and yields `Progress` with the newly final segments in audio order. `assemble` builds the transcript.
The engine side is one async callable, `transcribe_window(audio, options, priority)`: the Decoder's calls the
Whisper deployment; `EngineCalls` makes it from an engine in-process (the Whisper deployment uses it too).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from service.audio import SAMPLE_RATE
from service.inference.batcher import Batcher
from service.inference.diarization import SpeakerTrack, label_segments, speaker_labels, turn_cuts
from service.inference.priority import PrioritySemaphore
from service.inference.types import DecodeOptions, Engine, WindowResult
from service.inference.windows import MAX_FOLLOW_UPS, Window, stitch, tail_start
from service.transcript import Segment, Timings, Transcript, joined_text

log = logging.getLogger(__name__)

# Windows a job may hold cut and not yet sent: one more than the one waiting for the budget, so a file whose last
# window waits learns that its audio has ended (and gives its decode slot to the next file) without waiting.
LOOKAHEAD = 2
TranscribeWindow = Callable[[np.ndarray, DecodeOptions, int], Awaitable[WindowResult]]  # audio, options, priority


class Feed(Protocol):
    """Where a job's windows come from: `next()` gives a window, anything else as a sign of progress (a
    `stream.Tick` after each decoded block), None at the end of the audio."""

    @property
    def seconds(self) -> float: ...  # audio read so far

    @property
    def speech_seconds(self) -> float: ...  # audio handed out in windows so far

    @property
    def speech(self) -> list[dict] | None: ...  # the VAD spans found so far (None without VAD)

    async def next(self) -> object | None: ...


class SpeakerFeed:
    """A feed whose every window is embedded for the job's speaker track on the way (on a thread; the feed runs
    ahead of Whisper by `LOOKAHEAD` windows, so this overlaps inference) and, with `cut`, split where the speaker
    changes (`diarization.turn_cuts`), so that each part is decoded alone, in its own language: a conversation
    whose speakers speak different languages is not decoded in the first speaker's."""

    def __init__(self, feed: Feed, track: SpeakerTrack, cut: bool = True) -> None:
        self.feed, self.track, self.cut = feed, track, cut
        self._parts: deque[Window] = deque()

    @property
    def seconds(self) -> float:
        return self.feed.seconds

    @property
    def speech_seconds(self) -> float:
        return self.feed.speech_seconds

    @property
    def speech(self) -> list[dict] | None:
        return self.feed.speech

    async def next(self) -> object | None:
        if self._parts:
            return self._parts.popleft()
        item = await self.feed.next()
        if not isinstance(item, Window):
            return item
        spans = list(self.feed.speech) if self.feed.speech is not None else None
        pieces = await asyncio.to_thread(self.track.add, item.audio, item.offset, spans)
        if not self.cut:
            return item
        bounds = [0, *(round(cut * SAMPLE_RATE) for cut in turn_cuts(pieces)), item.audio.shape[0]]
        for start, end in zip(bounds, bounds[1:]):
            self._parts.append(Window(item.audio[start:end], item.offset + start / SAMPLE_RATE))
        return self._parts.popleft()


@dataclass
class Progress:
    """The fraction of the job done (never less than before) and the segments that became final since the
    previous `Progress`, in audio order: all of them concatenated are the transcript's segments."""

    fraction: float
    segments: list[Segment]


class WindowPipeline:
    """One job: `run()` yields `Progress` until every window is transcribed; then `language`,
    `language_probability`, `segments`, `results` and `transcript()` hold the outcome.

    A window goes to `transcribe_window` once the `budget` (shared by the jobs of a Decoder replica) grants it a
    unit, asked for at rank (priority, windows this job sent so far, the audio's length): the lane first, then
    round robin between jobs, the shortest file first in each round. The feed is asked for more only while
    fewer than `LOOKAHEAD` windows wait: decoding keeps pace with Whisper. Windows finish in any order; a
    finished window's segments wait until every window before it has been released."""

    def __init__(
        self,
        feed: Feed,
        transcribe_window: TranscribeWindow,
        options: DecodeOptions,
        *,
        detect: bool,
        duration: float | None,
        budget: PrioritySemaphore,
        priority: int = 0,
        on_cut: Callable[[], object] | None = None,
        speakers: SpeakerTrack | None = None,
        keep_words: bool = True,
        split_turns: bool = False,
        log: logging.Logger = log,
    ) -> None:
        """`detect`: find the language on the first window (`options.language` else); `duration`: the audio's
        declared length (for the fraction while decoding); `priority`: the job's lane (`priority.LANE_PRIORITY`);
        `on_cut`: called once the feed has ended; `speakers`: label who spoke when (each window is embedded on a
        thread as it is cut; the segments are labelled and split at the end, so `Progress` segments carry no
        speaker); `keep_words`: False drops the words after labelling (decoded only to place speaker changes);
        `split_turns` (with `speakers`): cut windows at speaker changes (`SpeakerFeed`) and, when detecting,
        detect each part's language (the transcript's is the first part's). The callers ask for it whenever the
        language is detected (a short turn decoded alone can loop: the transformers engine ends such loops and
        decodes the part again warmer, `loops.py`);
        `log`: the logger of the caller (a Ray replica logs through Serve's)."""
        self.feed, self.transcribe_window = feed, transcribe_window
        self.options, self.detect, self.duration, self.budget = options, detect, duration, budget
        self.priority = priority
        self.on_cut, self.log = on_cut, log
        self.speakers, self.keep_words = speakers, keep_words
        self.split_turns = split_turns and speakers is not None
        self.speakers_s = 0.0  # clustering and labelling, after the last window
        self.language: str | None = None if detect else options.language
        self.language_probability: float | None = None
        self.segments: list[Segment] = []  # released so far, in audio order
        self.results: list[WindowResult] = []  # every window's and tail's result
        self.first_sent: float | None = None
        self.last_done: float | None = None
        self.decoding = True  # the feed has not ended
        self.finished = False  # run() went through to its end

    def inference_s(self, now: float) -> float:
        """From the first window sent to the last one answered."""
        return (self.last_done or now) - (self.first_sent or now)

    def nodes(self) -> list[str]:
        """The Ray nodes whose replicas decoded the job's windows."""
        return sorted({r.node for r in self.results if r.node})

    async def _window(self, window: Window, options: DecodeOptions) -> tuple[float, list[tuple[float, WindowResult]]]:
        """A window's seconds and results: its own, and its undecoded tails' where Whisper stopped early."""
        audio, offset = window.audio, window.offset
        pieces: list[tuple[float, WindowResult]] = []
        for depth in range(MAX_FOLLOW_UPS + 1):
            result = await self.transcribe_window(audio, options, self.priority)
            if options.language is None:  # detected on this window: its tails are decoded in that language
                options = replace(options, language=result.language or "en")
            pieces.append((offset, result))
            start = tail_start(audio, result)
            if start is None or depth == MAX_FOLLOW_UPS:
                break
            audio, offset = audio[int(start * SAMPLE_RATE) :], offset + start
        return window.seconds, pieces

    async def run(self) -> AsyncIterator[Progress]:  # noqa: C901 - one event loop, its states side by side
        budget, options = self.budget, self.options
        feed = self.feed if self.speakers is None else SpeakerFeed(self.feed, self.speakers, cut=self.split_turns)
        held: dict[int, list[tuple[float, WindowResult]]] = {}  # finished windows not yet released, by number
        numbers: dict[asyncio.Task, int] = {}  # each window's number, in the order they were cut
        sent = released = 0  # windows sent; windows whose segments have been released
        ready: deque[Window] = deque()  # windows cut and not yet sent (waiting for the language, or room)
        running: set[asyncio.Task] = set()
        step: asyncio.Task | None = None
        grant: asyncio.Task | None = None  # a unit of the window budget, asked for the next ready window
        detect_each = self.detect and self.split_turns  # every part detects its own language
        detect = self.detect and not detect_each  # not known yet: only the first window may go, to detect it
        probe: asyncio.Task | None = None  # that first window's task
        done_speech = reported = 0.0

        def fraction() -> float:
            total = feed.speech_seconds
            if self.decoding:  # the speech still to come, estimated from the share of the audio decoded so far
                declared = self.duration
                share = feed.seconds / declared if declared else 0.0
                total = total / share if share > 0 else float("inf") if declared else total
                return min(done_speech / total if total else 0.0, 0.99)
            return done_speech / total if total else 1.0

        def progress(new: list[Segment]) -> Progress | None:
            nonlocal reported
            value = round(min(max(fraction(), reported), 1.0), 4)
            if not new and value <= reported:
                return None
            reported = value
            return Progress(value, new)

        def release() -> list[Segment]:
            """The segments of the finished windows that now follow on from those released, in audio order."""
            nonlocal released
            new: list[Segment] = []
            while released in held:
                new += stitch(held.pop(released), feed.speech)
                released += 1
            self.segments.extend(new)
            return new

        try:
            while True:
                if ready and grant is None and not (detect and sent):
                    grant = asyncio.ensure_future(budget.acquire((self.priority, sent, self.duration or math.inf)))
                if step is None and self.decoding and len(ready) < LOOKAHEAD:
                    step = asyncio.ensure_future(feed.next())
                waiting = running | {t for t in (step, grant) if t is not None}
                if not waiting:
                    break
                finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                out: list[Progress | None] = []
                if grant is not None and grant in finished:
                    grant, window = None, ready.popleft()
                    self.first_sent = self.first_sent or time.perf_counter()
                    task = asyncio.ensure_future(
                        self._window(window, replace(options, language=None) if detect or detect_each else options)
                    )
                    probe = task if detect else probe
                    task.add_done_callback(lambda _: budget.release())  # finished, failed or cancelled
                    running.add(task)
                    numbers[task], sent = sent, sent + 1
                if step is not None and step in finished:
                    item, step = step.result(), None  # AudioError: the file broke part-way
                    if item is None:
                        self.decoding = False
                        if self.on_cut is not None:
                            self.on_cut()  # e.g. the decode slot goes to the next file
                    elif isinstance(item, Window):
                        ready.append(item)
                    else:
                        out.append(progress([]))
                done_windows = finished & running
                for task in done_windows:
                    running.discard(task)
                    seconds, pieces = task.result()
                    if task is probe:  # the language, detected on the first window by the engine
                        first = pieces[0][1]
                        self.language, self.language_probability = first.language, first.language_probability
                        options = self.options = replace(options, language=self.language or "en")
                        detect, probe = False, None
                    self.last_done = time.perf_counter()
                    self.results += [result for _, result in pieces]
                    done_speech += seconds
                    number = numbers.pop(task)
                    if detect_each and number == 0:  # the file's language: its first part's
                        self.language, self.language_probability = (
                            pieces[0][1].language,
                            pieces[0][1].language_probability,
                        )
                    held[number] = pieces
                if done_windows:
                    out.append(progress(release()))
                for item in out:
                    if item is not None:
                        yield item
            assert not held and released == sent, "a window finished without its segments being sent"
            if self.speakers is not None:
                await asyncio.to_thread(self._label_speakers)
            self.finished = True
        finally:
            if grant is not None:  # a budget unit asked for and not used
                if grant.done() and not grant.cancelled():
                    budget.release()
                else:
                    grant.cancel()
            for task in running | ({step} if step is not None else set()):
                task.cancel()
            if self.decoding or running:  # cancelled (the request went away) or failed part-way
                declared = f"{self.duration:.0f} s" if self.duration else "unknown"
                self.log.info(
                    "transcription stopped before its end: decoded %.0f s of %s, %d windows cancelled",
                    feed.seconds,
                    declared,
                    len(running),
                )

    def _label_speakers(self) -> None:
        assert self.speakers is not None
        started = time.perf_counter()
        turns = self.speakers.turns()
        self.segments = label_segments(self.segments, turns, self.keep_words)
        self.speakers_s = time.perf_counter() - started

    def transcript(self, engine: str | None, model: str | None, timings: Timings) -> Transcript:
        """The job's transcript (after `run()`), see `assemble`."""
        if self.speakers is not None:
            timings.speakers_s = round(self.speakers.embed_s + self.speakers_s, 4)
        return assemble(
            self.segments,
            language=self.language,
            language_probability=self.language_probability,
            duration=self.feed.seconds,
            speech_seconds=self.feed.speech_seconds,
            engine=engine,
            model=model,
            timings=timings,
            speakers=speaker_labels(self.segments) if self.speakers is not None else None,
        )


def assemble(
    segments: list[Segment],
    *,
    language: str | None,
    language_probability: float | None,
    duration: float,
    speech_seconds: float,
    engine: str | None,
    model: str | None,
    timings: Timings | None = None,
    speakers: list[str] | None = None,
) -> Transcript:
    """A transcript from its stitched segments (`windows.stitch`, in audio order): their joined text, the
    language (None when auto-detection found no speech to detect from), lengths rounded to milliseconds."""
    return Transcript(
        text=joined_text(segments),
        language=language,
        language_probability=language_probability,
        duration=round(duration, 3),
        speech_seconds=round(speech_seconds, 3),
        segments=segments,
        engine=engine,
        model=model,
        timings=timings or Timings(),
        speakers=speakers,
    )


class EngineCalls:
    """An engine's async calls for the pipeline: windows batched by a `Batcher` when their decode options'
    `batch_key`s match (all options, or, for an engine that mixes languages, the search and prompt only), most
    urgent first (`priority`); for an engine that batches itself (`batches_itself`): one call per window,
    concurrently, on threads. Results get the decode temperature when the engine does not say, and `node`."""

    def __init__(
        self,
        engine: Engine,
        max_batch_size: int,
        *,
        quiet_s: float,
        max_wait_s: float,
        batches_itself: bool = False,
        mixes_languages: bool = False,
        node: str | None = None,
        on_batch: Callable[[float, int], None] | None = None,
    ) -> None:
        """`on_batch(seconds, windows)` is told of every engine call."""
        self.engine, self.node, self.on_batch, self.mixes_languages = engine, node, on_batch, mixes_languages
        self.batcher: Batcher[tuple[np.ndarray, DecodeOptions], Hashable, WindowResult] | None = None
        if not batches_itself:
            self.batcher = Batcher(self.run_batch, max_batch_size, quiet_s=quiet_s, max_wait_s=max_wait_s)
        self._calls = self._windows = self._waiting = 0  # without a batcher

    @property
    def batches(self) -> int:
        """Engine calls made."""
        return self.batcher.batches if self.batcher is not None else self._calls

    @property
    def items(self) -> int:
        """Windows those calls held."""
        return self.batcher.items if self.batcher is not None else self._windows

    def pending(self) -> int:
        """Windows waiting for the engine."""
        return self.batcher.pending() if self.batcher is not None else self._waiting

    async def transcribe_window(self, audio: np.ndarray, options: DecodeOptions, priority: int = 0) -> WindowResult:
        """One window's result; batched with other windows of the same batch key while the engine is busy."""
        if self.batcher is not None:
            return await self.batcher.submit(options.batch_key(self.mixes_languages), (audio, options), priority)
        self._waiting += 1
        try:
            self._calls, self._windows = self._calls + 1, self._windows + 1
            (result,) = await asyncio.to_thread(self.run_batch, None, [(audio, options)])
        finally:
            self._waiting -= 1
        return result

    def run_batch(self, _key: Hashable, rows: list[tuple[np.ndarray, DecodeOptions]]) -> list[WindowResult]:
        started = time.perf_counter()
        options = [row for _, row in rows]
        try:
            results = self.engine.transcribe_batch([audio for audio, _ in rows], options)
        finally:
            if self.on_batch is not None:
                self.on_batch(time.perf_counter() - started, len(rows))
        for result, row in zip(results, options):
            result.node = self.node
            if result.temperature is None:
                result.temperature = row.temperature
        return results
