"""Issue 18 (who spoke when) in the Snowflake tables, on Snowpark's local emulator: the export keeps every
segment's (and word's) `speaker` in TRANSCRIPTIONS.SEGMENTS, the labels in BODY:speakers, and what the job asked
for in TRANSCRIPTION_JOBS.OPTIONS:speakers; a job row read back (the adoption of an earlier process's queue)
keeps its speaker count. No column was added for them (sql/01_tables.sql says why): the VARIANTs carry them."""

from __future__ import annotations

import json
from pathlib import Path

from snowflake.snowpark.functions import col

from service.options import SpeakerCount
from service.storage.snowflake_adopt import Inherited, read_snowflake
from service.storage.snowflake_export import merge_rows
from service.storage.snowflake_schema import JOBS, TRANSCRIPTIONS, job_from_row, job_values
from service.storage.snowflake_tables import create_tables
from service.transcript import Transcript
from tests.snowflake.outage import FlakySessions, add_job, open_store, rows_in, run
from tests.storage.helpers import job_of

DIARIZED = {
    "text": "Hello there. Hi, how are you?",
    "language": "en",
    "duration": 4.0,
    "speakers": ["SPEAKER_00", "SPEAKER_01"],
    "segments": [
        {
            "start": 0.0,
            "end": 1.5,
            "text": " Hello there.",
            "speaker": "SPEAKER_00",
            "words": [
                {"word": " Hello", "start": 0.0, "end": 0.7, "probability": 0.9, "speaker": "SPEAKER_00"},
                {"word": " there.", "start": 0.7, "end": 1.5, "probability": 0.8, "speaker": "SPEAKER_00"},
            ],
        },
        {"start": 1.8, "end": 4.0, "text": " Hi, how are you?", "speaker": "SPEAKER_01"},
    ],
}


def test_the_export_keeps_who_spoke_when(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store, speakers="2-4")
        claimed = await store.claim_next()
        assert claimed.options.speakers == SpeakerCount(2, 4)
        transcript = Transcript.load(DIARIZED)
        assert await store.save_transcript(claimed, transcript)
        assert await store.flush() == 0

        (row,) = rows_in(sessions, TRANSCRIPTIONS.name, job.id)
        segments = json.loads(row["SEGMENTS"])
        assert [s["speaker"] for s in segments] == ["SPEAKER_00", "SPEAKER_01"]
        assert [w["speaker"] for w in segments[0]["words"]] == ["SPEAKER_00", "SPEAKER_00"]
        assert segments == [s.dump() for s in transcript.segments]
        body = json.loads(row["BODY"])
        assert body["speakers"] == ["SPEAKER_00", "SPEAKER_01"] and body == transcript.dump()

        (job_row,) = rows_in(sessions, JOBS.name, job.id)
        assert json.loads(job_row["OPTIONS"])["speakers"] == "2-4"  # as text, like the API and the CLI write it
        assert job_from_row(job_row).options.speakers == SpeakerCount(2, 4)

        # The paths an analyst's query takes (SEGMENTS[0]:speaker, BODY:speakers, OPTIONS:speakers), evaluated by
        # the emulator on the stored VARIANTs.
        table = sessions.session.table(TRANSCRIPTIONS.name).filter(col("JOB_ID") == job.id)
        (picked,) = table.select(
            col("SEGMENTS")[1]["speaker"].alias("SECOND"), col("BODY")["speakers"].alias("LABELS")
        ).collect()
        assert json.loads(picked["SECOND"]) == "SPEAKER_01"
        assert json.loads(picked["LABELS"]) == ["SPEAKER_00", "SPEAKER_01"]
        jobs = sessions.session.table(JOBS.name).filter(col("JOB_ID") == job.id)
        (asked,) = jobs.select(col("OPTIONS")["speakers"].alias("ASKED")).collect()
        assert json.loads(asked["ASKED"]) == "2-4"
        await store.close()

    run(go())


def test_a_job_without_speakers_exports_as_before(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store)
        plain = Transcript.load({**DIARIZED, "speakers": None, "segments": [{"start": 0, "end": 4, "text": " Hi"}]})
        assert await store.save_transcript(await store.claim_next(), plain)
        assert await store.flush() == 0
        (row,) = rows_in(sessions, TRANSCRIPTIONS.name, job.id)
        assert "speaker" not in json.loads(row["SEGMENTS"])[0] and "speakers" not in json.loads(row["BODY"])
        (job_row,) = rows_in(sessions, JOBS.name, job.id)
        assert "speakers" not in json.loads(job_row["OPTIONS"] or "{}")
        await store.close()

    run(go())


def test_an_unfinished_job_taken_in_from_the_tables_keeps_its_speaker_count(sessions: FlakySessions) -> None:
    """What a new process reads of an earlier one's queue (snowflake_adopt.read_snowflake): OPTIONS:speakers
    comes back as the same SpeakerCount, for every form it takes."""
    session = sessions.session
    create_tables(session)
    jobs = [job_of(speakers=value) for value in (True, 3, "2-4", {"min": 1, "max": 5})]
    merge_rows(session, JOBS, [job_values(j) for j in jobs])
    inherited = Inherited()
    read_snowflake(session, inherited)
    taken = {j.id: j.options.speakers for j in inherited.jobs}
    assert taken == {j.id: j.options.speakers for j in jobs}
    assert [str(taken[j.id]) for j in jobs] == ["auto", "3", "2-4", "1-5"]
