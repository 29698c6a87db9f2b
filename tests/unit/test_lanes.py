"""`lane_of`: which lane a new job waits in, from where it comes from and how long its audio is."""

from __future__ import annotations

import pytest

from service.config import Settings
from service.jobs.lanes import Origin, lane_of

FAIR = Settings(interactive_max_seconds=30)
FIFO = Settings(scheduling="fifo", interactive_max_seconds=30)


@pytest.mark.parametrize(
    ("source", "audio_seconds", "lane"),
    [
        ("function", None, "interactive"),  # a service-function row: someone's query waits for it
        ("function", 3600.0, "interactive"),
        ("openai", 3600.0, "interactive"),  # the synchronous OpenAI routes
        ("openai", None, "interactive"),
        ("upload", 11.0, "interactive"),
        ("upload", 30.0, "interactive"),  # at most INTERACTIVE_MAX_SECONDS
        ("upload", 30.01, "bulk"),
        ("upload", 171.0, "bulk"),
        ("upload", None, "bulk"),  # length unknown
        ("url", 5.0, "interactive"),  # downloaded and probed at submit: its length is known
        ("url", None, "bulk"),
        ("stage", 5.0, "interactive"),  # a mounted stage file, probed at submit
        ("stage", None, "bulk"),  # a stage read through Snowpark: length unknown until it runs
        ("batch", None, "bulk"),
        ("batch", 1.0, "bulk"),  # a batch's files are bulk, however short
    ],
)
def test_fair_scheduling(source: Origin, audio_seconds: float | None, lane: str) -> None:
    assert lane_of(FAIR, source=source, audio_seconds=audio_seconds) == lane


@pytest.mark.parametrize("source", ["function", "openai", "upload", "url", "stage", "batch"])
def test_fifo_makes_every_job_bulk(source: Origin) -> None:
    assert lane_of(FIFO, source=source, audio_seconds=1.0) == "bulk"


def test_the_bound_is_the_setting() -> None:
    assert lane_of(Settings(interactive_max_seconds=0), source="upload", audio_seconds=0.5) == "bulk"
    assert lane_of(Settings(interactive_max_seconds=600), source="upload", audio_seconds=171.0) == "interactive"
    assert Settings().gateway.scheduling == "fair"  # the default
