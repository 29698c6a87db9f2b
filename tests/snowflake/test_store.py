"""The Snowflake store against Snowpark local testing: Snowflake's own emulator (`local_testing=True`), which
runs the store's DataFrame/Table statements (create_dataframe, save_as_table, update, merge, delete) in
memory. No account and no network. The queue itself is the SQLite store (tests/storage/ runs the shared
behaviour on both); here: the rows the export writes to Snowflake, VARIANT round trips and values that
stay data. The outage and crash cases are in test_export.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from service.jobs.model import JobStatus
from service.storage.snowflake_schema import JOBS, TABLES, TRANSCRIPTIONS, TRANSLATIONS, VIEWS
from service.storage.snowflake_tables import DDL_PATH, ddl_statements
from service.transcript import Transcript
from tests.snowflake.outage import (
    HINDI,
    FlakySessions,
    add_job,
    open_store,
    rows_in,
    run,
    transcript_of,
)

# -- the schema in Python matches sql/01_tables.sql ---------------------------------------------------------


def test_columns_match_the_ddl() -> None:
    created = {}
    for statement in sqlglot.parse(DDL_PATH.read_text(), read="snowflake"):
        if isinstance(statement, exp.Create):
            created[(statement.kind, statement.this.this.name)] = statement.this.expressions
    for spec in TABLES:
        columns = created[("TABLE", spec.name)]
        declared = [(c.name, c.args["kind"]) for c in columns if isinstance(c, exp.ColumnDef)]
        expected = [(c.name, exp.DataType.build(c.sql, dialect="snowflake")) for c in spec.columns]
        assert declared == expected, spec.name
    for view, names in VIEWS.items():
        assert tuple(e.name for e in created[("VIEW", view)]) == names


def test_ddl_splits_into_statements() -> None:
    statements = ddl_statements()
    creates = [s for s in statements if s.startswith("CREATE")]
    assert len(creates) == len(TABLES) + len(VIEWS)
    # the rest add columns to tables an older release created
    assert all(s.startswith("ALTER TABLE") and "ADD COLUMN IF NOT EXISTS" in s for s in statements if s not in creates)
    assert all(sqlglot.parse_one(s, read="snowflake") is not None for s in statements)
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS TRANSCRIPTION_JOBS")


# -- rows as Snowflake holds them (the shared behaviour is in tests/storage/) -----------------------------------


def test_one_transcription_row_per_job_and_delete_leaves_none(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store, translate_to="en")
        claimed = await store.claim_next()
        assert await store.save_transcript(claimed, transcript_of(HINDI, "hi"), JobStatus.TRANSCRIBED)
        assert not await store.save_transcript(claimed, transcript_of("again", "hi"))  # fenced
        assert await store.flush() == 0
        assert len(rows_in(sessions, TRANSCRIPTIONS.name, job.id)) == 1
        assert await store.transition(await store.get(job.id), JobStatus.TRANSLATING)
        translation = {"text": "Hello", "source_language": "hi", "target_language": "en", "method": "cortex.translate"}
        assert await store.save_translation(await store.get(job.id), {**translation, "extra": 1})
        assert await store.translation(job.id) == translation  # only the contract's fields come back
        assert await store.flush() == 0
        assert len(rows_in(sessions, TRANSLATIONS.name, job.id)) == 1
        assert rows_in(sessions, JOBS.name, job.id)[0]["STATUS"] == "succeeded"
        await store.delete(job.id)
        assert await store.flush() == 0
        for table in (TRANSLATIONS, TRANSCRIPTIONS, JOBS):
            assert rows_in(sessions, table.name, job.id) == [], table.name
        await store.close()

    run(go())


def test_variant_round_trip_with_hindi(tmp_path: Path, sessions: FlakySessions) -> None:
    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        job = await add_job(store)
        claimed = await store.claim_next()
        transcript = Transcript.load(
            {
                "text": HINDI,
                "language": "hi",
                "duration": 3.25,
                "segments": [
                    {
                        "start": 0.0,
                        "end": 3.25,
                        "text": HINDI,
                        "words": [{"word": "नमस्ते", "start": 0, "end": 1, "p": 0.9}],
                    }
                ],
                "timings": {"wall_s": 1.5, "decode_s": 0.25},
                "nested": {"list": [1, "दो", None, True]},
            }
        )
        assert await store.save_transcript(claimed, transcript)
        assert await store.transcript(job.id) == transcript
        done = await store.get(job.id)
        assert done.timings == transcript.timings
        assert await store.flush() == 0
        (row,) = rows_in(sessions, TRANSCRIPTIONS.name, job.id)
        assert row["TEXT"] == HINDI and row["LANGUAGE"] == "hi" and row["SOURCE"] == "a.wav"
        assert json.loads(row["SEGMENTS"]) == [s.dump() for s in transcript.segments]
        assert json.loads(row["BODY"]) == transcript.dump()
        (job_row,) = rows_in(sessions, JOBS.name, job.id)
        assert json.loads(job_row["TIMINGS"]) == done.timings.model_dump(exclude_none=True)
        await store.close()

    run(go())


INJECTIONS = [
    "x'); DROP TABLE TRANSCRIPTION_JOBS; --",
    "' OR '1'='1",
    "\\'; DELETE FROM TRANSCRIPTIONS WHERE '' = '",
    '"; SELECT SYSTEM$WHITELIST(); --',
    "$$ || CURRENT_USER() || $$",
]


@pytest.mark.parametrize("nasty", INJECTIONS)
def test_values_are_data_never_sql(tmp_path: Path, sessions: FlakySessions, nasty: str) -> None:
    """Hostile strings in every text field come back unchanged and match only themselves."""

    async def go() -> None:
        store = await open_store(tmp_path, sessions)
        other = await add_job(store, key="plain", owner="BOB")
        job = await add_job(store, key=nasty, owner=nasty, prompt=nasty)
        stored = await store.get(job.id)
        assert stored is not None
        assert (stored.idempotency_key, stored.owner, stored.options.prompt) == (nasty, nasty, nasty)
        assert (await store.find_by_idempotency_key(nasty, nasty)).id == job.id
        assert [j.id for j in await store.list(None, 10, None, owner=nasty)] == [job.id]
        assert await store.count_active(nasty) == 1
        assert await store.get(other.id) is not None  # nothing else was touched
        assert await store.flush() == 0  # and in Snowflake, through the export's bound values
        (row,) = rows_in(sessions, JOBS.name, job.id)
        assert (row["IDEMPOTENCY_KEY"], row["OWNER"], json.loads(row["OPTIONS"])["prompt"]) == (nasty, nasty, nasty)
        assert len(rows_in(sessions, JOBS.name, other.id)) == 1
        await store.close()

    run(go())
