"""The typed inference core without a model: `stitch` gives the segments (and JSON) it always gave, `assemble`
the transcript, `DecodeOptions.of` the engine's options from a job's, the Ray app's query model refuses what
it should, and the in-process path runs the shared pipeline (detection, batching, tails, progress)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import pytest
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from service.audio import SAMPLE_RATE
from service.inference import deployment
from service.inference.local import transcribe_audio
from service.inference.pipeline import assemble
from service.inference.types import DecodeOptions, WindowResult, per_window
from service.inference.windows import stitch
from service.options import JobOptions
from service.transcript import Segment, Timings, Transcript, Word

# ---------------------------------------------------------------------------------------------- stitch golden

# What `stitch` returned (as dicts) before segments were typed, for `_pieces()`: with and without VAD.
GOLDEN_VAD = [
    {"start": 0.2, "end": 1.23, "text": " Hello there.", "tokens": [1, 2], "seek": 0, "temperature": 0.0,
     "avg_logprob": -0.1235, "compression_ratio": 1.2346, "no_speech_prob": 0.0123,
     "words": [{"word": " Hello", "start": 0.2, "end": 0.61, "probability": 0.9123},
               {"word": " there.", "start": 0.61, "end": 1.23, "probability": 0.5}]},
    {"start": 1.3, "end": 1.35, "text": " again", "tokens": [3], "seek": 0, "temperature": 0.0,
     "avg_logprob": -0.1235, "compression_ratio": 1.2346, "no_speech_prob": 0.0123,
     "words": [{"word": " again", "start": 1.3, "end": 1.35, "probability": 0.7778}]},
    {"start": 5.0, "end": 11.5, "text": " no temperature", "tokens": [4], "seek": 500, "avg_logprob": -0.5},
    {"start": 16.85, "end": 19.35, "text": "你好", "tokens": [6], "seek": 1635, "temperature": 0.2,
     "avg_logprob": -0.3, "compression_ratio": 1.1, "no_speech_prob": 0.1},
]  # fmt: skip
GOLDEN_PLAIN = [
    {"start": 0.2, "end": 1.235, "text": " Hello there.", "tokens": [1, 2], "seek": 0, "temperature": 0.0,
     "avg_logprob": -0.1235, "compression_ratio": 1.2346, "no_speech_prob": 0.0123,
     "words": [{"word": " Hello", "start": 0.2, "end": 0.612, "probability": 0.9123},
               {"word": " there.", "start": 0.612, "end": 1.235, "probability": 0.5}]},
    {"start": 1.3, "end": 1.3, "text": " again", "tokens": [3], "seek": 0, "temperature": 0.0,
     "avg_logprob": -0.1235, "compression_ratio": 1.2346, "no_speech_prob": 0.0123,
     "words": [{"word": " again", "start": 1.3, "end": 1.35, "probability": 0.7778}]},
    {"start": 5.0, "end": 7.5, "text": " no temperature", "tokens": [4], "seek": 500, "avg_logprob": -0.5},
    {"start": 12.846, "end": 15.346, "text": "你好", "tokens": [6], "seek": 1235, "temperature": 0.2,
     "avg_logprob": -0.3, "compression_ratio": 1.1, "no_speech_prob": 0.1},
]  # fmt: skip
SPEECH = [{"start": 0, "end": 6 * SAMPLE_RATE}, {"start": 10 * SAMPLE_RATE, "end": 30 * SAMPLE_RATE}]


def _pieces() -> list[tuple[float, WindowResult]]:
    """Words, an end before its start, a window of unknown temperature and figures, a silent window (dropped),
    a CJK text and a blank segment (dropped)."""
    hello = Segment(
        start=0.2,
        end=1.23456,
        text=" Hello there.",
        tokens=[1, 2],
        words=[
            Word(word=" Hello", start=0.2, end=0.61234, probability=0.912345),
            Word(word=" there.", start=0.61234, end=1.23456, probability=0.5),
        ],
    )
    again = Segment(
        start=1.3,
        end=1.2,
        text="again",
        tokens=[3],
        words=[Word(word=" again", start=1.3, end=1.35, probability=0.77777)],
    )
    a = WindowResult(
        [hello, again], avg_logprob=-0.123456, no_speech_prob=0.0123456, compression_ratio=1.234567, temperature=0.0
    )
    b = WindowResult([Segment(start=0.0, end=2.5, text=" no temperature", tokens=[4])], avg_logprob=-0.5)
    c = WindowResult([Segment(start=0.0, end=1.0, text=" silent", tokens=[5])], -2.0, 0.9, 1.0, 0.0)
    d = WindowResult(
        [Segment(start=0.5, end=3.0, text="你好", tokens=[6]), Segment(start=3.0, end=3.5, text="   ", tokens=[7])],
        -0.3,
        0.1,
        1.1,
        0.2,
    )
    return [(0.0, a), (5.0, b), (8.0, c), (12.3456, d)]


@pytest.mark.parametrize(("speech", "golden"), [(SPEECH, GOLDEN_VAD), (None, GOLDEN_PLAIN)])
def test_stitch_dumps_byte_for_byte_what_it_returned_before(speech: list[dict] | None, golden: list[dict]) -> None:
    segments = stitch(_pieces(), speech)
    assert all(isinstance(s, Segment) for s in segments)
    dumped = [s.dump() for s in segments]
    assert dumped == golden
    assert json.dumps(dumped, ensure_ascii=False) == json.dumps(golden, ensure_ascii=False)  # key order too


def test_assemble_builds_the_ray_apps_transcript() -> None:
    segments = stitch(_pieces(), None)
    timings = Timings(
        slot_wait_s=0.0,
        decode_s=0.1,
        vad_s=0.01,
        inference_s=1.5,
        total_s=2.0,
        peak_buffered_s=60.0,
        whisper_nodes=["n1"],
    )
    transcript = assemble(
        segments,
        language="en",
        language_probability=0.98,
        duration=20.12345,
        speech_seconds=15.0004,
        engine="ctranslate2",
        model="base",
        timings=timings,
    )
    assert isinstance(transcript, Transcript)
    assert transcript.dump() == {
        "text": "Hello there. again no temperature你好",
        "language": "en",
        "language_probability": 0.98,
        "duration": 20.123,
        "speech_seconds": 15.0,
        "segments": GOLDEN_PLAIN,
        "engine": "ctranslate2",
        "model": "base",
        "timings": {
            "slot_wait_s": 0.0,
            "decode_s": 0.1,
            "vad_s": 0.01,
            "inference_s": 1.5,
            "total_s": 2.0,
            "peak_buffered_s": 60.0,
            "whisper_nodes": ["n1"],
        },
    }
    nothing = assemble(
        [], language=None, language_probability=None, duration=0.0, speech_seconds=0.0, engine="e", model="m"
    )
    assert nothing.dump()["language"] is None and nothing.dump()["language_probability"] is None
    assert nothing.text == "" and nothing.segments == []


def test_restore_speech_timestamps_assigns_model_attributes() -> None:
    """faster-whisper's restore_speech_timestamps sets segment and word times by attribute: pydantic allows it."""
    from faster_whisper.transcribe import restore_speech_timestamps

    segment = Segment(start=6.5, end=7.0, text=" x", words=[Word(word=" x", start=6.5, end=7.0)])
    (restored,) = restore_speech_timestamps([segment], SPEECH, SAMPLE_RATE)
    assert restored is segment and (segment.start, segment.end) == (10.5, 11.0)
    assert (segment.words[0].start, segment.words[0].end) == (10.5, 11.0)
    assert set(segment.dump()) == {"start", "end", "text", "tokens", "words"}  # no attribute added


# ---------------------------------------------------------------------------------------------- options


def test_decode_options_of_job_options() -> None:
    job = JobOptions(
        language="HI", task="translate", word_timestamps=True, prompt="previous", temperature=0.2, hotwords="  kw  "
    )
    assert DecodeOptions.of(job, beam_size=3) == DecodeOptions(
        language="hi",
        task="translate",
        word_timestamps=True,
        beam_size=3,
        initial_prompt="previous",
        temperature=0.2,
        hotwords="kw",
    )
    assert DecodeOptions.of(job, "de").language == "de"  # detected beats... the job's own, when given
    blank = DecodeOptions.of(JobOptions(prompt="  ", hotwords=" "))
    assert blank == DecodeOptions(language="en")  # auto, nothing detected yet: English


def _query_app() -> FastAPI:
    """An app whose one route takes the Ray app's query model, with its error handler."""
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, deployment._invalid_query)

    @app.post("/transcribe")
    async def transcribe(options: Annotated[deployment.TranscribeQuery, Query()]) -> dict[str, Any]:
        return options.model_dump()

    return app


def test_the_ray_apps_query_is_job_options_plus_beam_size_and_lane() -> None:
    client = TestClient(_query_app())
    sent = JobOptions(
        language="hi",
        task="translate",
        word_timestamps=True,
        prompt="p",
        temperature=0.3,
        hotwords="h",
        vad_filter=False,
        vad_threshold=0.6,
        vad_min_silence_ms=300,
        vad_speech_pad_ms=100,
    )
    answer = client.post("/transcribe", params={**sent.query(), "beam_size": "2", "lane": "interactive"})
    assert answer.status_code == 200, answer.text
    assert JobOptions(**{k: v for k, v in answer.json().items() if k not in ("beam_size", "lane")}) == sent
    assert answer.json()["beam_size"] == 2 and answer.json()["lane"] == "interactive"
    assert client.post("/transcribe").json()["language"] is None
    assert client.post("/transcribe").json()["lane"] == "bulk"
    unknown = client.post("/transcribe", params={"bogus": "1"})
    assert unknown.status_code == 422 and "detail" in unknown.json()
    for bad in ({"vad_threshold": "1.5"}, {"beam_size": "17"}, {"prompt": "a" * 16_001}, {"lane": "vip"}):
        assert client.post("/transcribe", params=bad).status_code == 422, bad
    language = client.post("/transcribe", params={"language": "xx"})
    assert language.status_code == 422
    assert language.json()["error"]["code"] == "unsupported_language"
    assert "unknown language 'xx'" in language.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------- in-process


class _Engine:
    """Says each window's length; its first window stops half-way (its tail is decoded again). Records batches."""

    name, model_name, multilingual = "fake", "fake-model", True

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.detected = 0
        self._lock = threading.Lock()

    def transcribe_batch(
        self, windows: list[np.ndarray], options: DecodeOptions | Sequence[DecodeOptions]
    ) -> list[WindowResult]:
        """A row to detect is German (0.75), detected in the call as CTranslate2 does."""
        with self._lock:
            first = not self.batches
            self.batches.append(len(windows))
        out = []
        for i, (window, row) in enumerate(zip(windows, per_window(options, len(windows)))):
            seconds = window.shape[0] / SAMPLE_RATE
            end = seconds / 2 if first and i == 0 else seconds
            language = row.language or "de"
            result = WindowResult([Segment(start=0.0, end=end, text=f" {language} {seconds:.1f}")], -0.1, 0.0, 1.0)
            if row.language is None:
                self.detected += 1
                result.language, result.language_probability = "de", 0.75
            out.append(result)
        return out


def test_in_process_runs_the_shared_pipeline() -> None:
    engine = _Engine()
    audio = np.zeros(100 * SAMPLE_RATE, np.float32)  # 4 fixed windows without VAD
    done: list[float] = []
    transcript = transcribe_audio(engine, audio, batch_size=2, vad=False, progress=done.append)
    assert isinstance(transcript, Transcript)
    assert engine.detected == 1 and transcript.language == "de" and transcript.language_probability == 0.75
    assert max(engine.batches) <= 2 and sum(engine.batches) == 5  # 4 windows and the first one's tail
    assert transcript.text == "de 30.0 de 15.0 de 30.0 de 30.0 de 10.0"
    assert [s.seek for s in transcript.segments] == [0, 1500, 3000, 6000, 9000]
    assert all(s.temperature == 0.0 for s in transcript.segments)  # the engine did not say: the option's
    assert (transcript.duration, transcript.speech_seconds) == (100.0, 100.0)
    assert (transcript.engine, transcript.model) == ("fake", "fake-model")
    assert done == sorted(done) and done[-1] == 100.0
    given = transcribe_audio(_Engine(), audio[: 5 * SAMPLE_RATE], language="fr", vad=False)
    assert given.language == "fr" and given.language_probability is None and given.text == "fr 5.0 fr 2.5"
    silence = transcribe_audio(_Engine(), audio)  # VAD finds no speech: nothing to detect from
    assert silence.language is None and silence.segments == [] and silence.duration == 100.0
