"""A fake of the Ray Serve app for in-process tests: `FakeInference` implements the gateway's `Inference`
protocol (service/inference/client.py) without Ray, Whisper or HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.inference.client import InferenceError, ProgressCallback
from service.inference.types import AppInfo
from service.options import JobOptions, Lane
from service.transcript import Segment, Transcript, Word, joined_text

TEXT = "the fake transcript"


class FakeInference:
    """A deterministic transcript from the options: `segments` segments of one second each (`seconds` spread
    over them), in the requested language (else `en`), each reported as progress. `fail` makes every call
    raise it (after `fail_after` segments); `failures` maps a job's `prompt` to the error that call raises;
    `down` makes `ready()` fail. `calls` records each call's options, `lanes` each call's lane."""

    def __init__(
        self,
        seconds: float = 0.0,
        segments: int = 2,
        text: str = TEXT,
        fail: InferenceError | None = None,
        fail_after: int = 0,
        failures: dict[str, Exception] | None = None,
        model: str = "base",
        multilingual: bool = True,
        capacity: int = 16,
    ) -> None:
        self.seconds, self.segments, self.text = seconds, segments, text
        self.fail, self.fail_after, self.failures = fail, fail_after, failures or {}
        self.info = AppInfo(engine="fake", model=model, multilingual=multilingual, job_capacity=capacity)
        self.down = False
        self.calls: list[JobOptions] = []
        self.lanes: list[Lane] = []
        self.closed = False

    async def ready(self) -> AppInfo:
        if self.down:
            raise InferenceError("the fake is down", code="inference_unavailable", status=503, retryable=True)
        return self.info.model_copy()

    def transcript(self, options: JobOptions) -> Transcript:
        """What `transcribe` returns for these options."""
        words, count = self.text.split(), max(1, self.segments)
        cuts = [round(i * len(words) / count) for i in range(count + 1)]
        segments = [
            Segment(start=float(i), end=float(i + 1), text=" " + " ".join(words[cuts[i] : cuts[i + 1]]), seek=i * 100)
            for i in range(count)
        ]
        language = options.language or "en"
        text = joined_text(segments)
        return Transcript(
            text=text, language=language, duration=float(self.segments), segments=segments, engine="fake", model="base"
        )

    async def transcribe(
        self,
        audio: Path,
        options: JobOptions,
        on_progress: ProgressCallback | None = None,
        *,
        lane: Lane = "bulk",
    ) -> Transcript:
        self.calls.append(options)
        self.lanes.append(lane)
        if not Path(audio).is_file():
            raise InferenceError(f"no audio at {Path(audio).name}", code="corrupt_audio", status=400, retryable=False)
        if options.prompt in self.failures:
            raise self.failures[options.prompt]
        result = self.transcript(options)
        pause = self.seconds / max(1, len(result.segments))
        for i, segment in enumerate(result.segments):
            if self.fail is not None and i >= self.fail_after:
                raise self.fail
            await asyncio.sleep(pause)
            if on_progress is not None:
                await on_progress((i + 1) / len(result.segments), [segment.model_copy(deep=True)])
        if self.fail is not None:
            raise self.fail
        return result

    async def close(self) -> None:
        self.closed = True


class SpeakingFake(FakeInference):
    """The fake's transcript, its segments labelled SPEAKER_00, SPEAKER_01 in turns of `turn` segments (SPEAKER_00
    only when the job allows one speaker) when the job asks for speakers; words with their segment's speaker when
    it asks for words (or always, `words=True`)."""

    def __init__(self, turn: int = 1, words: bool = False, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.turn, self.words = turn, words

    def transcript(self, options: JobOptions) -> Transcript:
        transcript = super().transcript(options)
        if options.speakers is None:
            return transcript
        for i, segment in enumerate(transcript.segments):
            segment.speaker = f"SPEAKER_{(i // self.turn) % min(2, options.speakers.max):02d}"
            if options.word_timestamps or self.words:
                words = segment.text.split()
                segment.words = [Word(word=f" {w}", start=segment.start, end=segment.end) for w in words]
                for word in segment.words:
                    word.speaker = segment.speaker
        transcript.speakers = list(dict.fromkeys(s.speaker for s in transcript.segments if s.speaker))
        return transcript
