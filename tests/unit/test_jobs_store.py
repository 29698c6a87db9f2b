"""The job state machine and the job record's shape; what every store does is the contract suite in
tests/storage/test_store_contract.py."""

from __future__ import annotations

import pytest

from service.jobs.model import (
    InvalidTransition,
    Job,
    JobStatus,
    check_transition,
    new_job_id,
)
from service.options import JobOptions
from service.storage.records import job_from_record, job_to_record


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "running"),
        ("queued", "cancelled"),
        ("running", "succeeded"),
        ("running", "queued"),
        ("running", "failed"),
        ("running", "transcribed"),
        ("transcribed", "translating"),
        ("translating", "succeeded"),
    ],
)
def test_allowed_transitions(current: str, target: str) -> None:
    check_transition(JobStatus(current), JobStatus(target))


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("queued", "succeeded"),
        ("succeeded", "running"),
        ("failed", "queued"),
        ("cancelled", "running"),
        ("succeeded", "cancelled"),
    ],
)
def test_refused_transitions(current: str, target: str) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(JobStatus(current), JobStatus(target))


def test_a_job_keeps_its_options_whole() -> None:
    """The record's options are one `JobOptions`, stored as the options that differ from their defaults; the
    flat option fields of an earlier release's records fold into it."""
    options = JobOptions(language="hi", task="translate", translate_to="en", hotwords="Kenobi")
    job = Job(id=new_job_id(), source="a.wav", language="hi", options=options)
    record = job_to_record(job)
    assert record["options"] == {"language": "hi", "task": "translate", "translate_to": "en", "hotwords": "Kenobi"}
    assert job_from_record(record) == job
    assert Job(id="j", source="a.wav").options == JobOptions()
    old = {**record, "options": {"hotwords": "Kenobi"}, "task": "translate", "translate_to": "en", "prompt": None,
           "word_timestamps": 0, "temperature": 0.0}  # fmt: skip
    assert job_from_record(old).options == options  # queued: its language is still the one asked for
