"""Issue 14, SQL: the row access policies of sql/10_row_access.sql, evaluated over EMULATED tables.

What is real here: the tables hold exactly what the gateway writes (the Snowflake store, service/storage/snowflake.py,
exports jobs, a batch, transcripts and translations of users ALICE and BOB and of a job with no owner into Snowpark
local testing, Snowflake's own emulator), and the policy bodies are the ones in the SQL file (parsed with sqlglot,
tests/unit/test_sql.py). The emulator cannot run SQL (`session.sql` is not implemented) and has no row access
policies, so each parsed body is evaluated here with the DataFrame API: `a OR b` as the union of the rows each part
keeps, `col = CURRENT_USER()` as a filter, `EXISTS (SELECT 1 FROM mapping AS j WHERE j.k = arg AND j.OWNER =
CURRENT_USER())` as a semi-join with the mapping table (an unqualified name in the subquery resolves to the mapping
table first, as in SQL), `IS_ROLE_IN_SESSION('R')` as "R is among the session's roles", with the role hierarchy of
sql/00_setup.sql (GRANT ROLE ... TO ROLE SYSADMIN) and Snowflake's SYSADMIN -> ACCOUNTADMIN. The translator knows these
shapes only and fails on anything else.

What this shows: the predicates, as written, select each user's own rows (and nobody's for a job without an owner),
and every row for the deployer role and the roles above it, with Snowflake's `=` and NULL semantics as the emulator
has them; and the result is the same whether or not Snowflake applies the mapping table's own policy inside the
subquery (nested policies). What it does not show: that Snowflake accepts the DDL, attaches the policies, evaluates
CURRENT_USER / IS_ROLE_IN_SESSION in the querying session (also through the views), or that the deployer holds the
privileges the script needs. Those need a real account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from snowflake.snowpark.functions import col, lit
from sqlglot import exp

from deploy.config import load
from service.jobs.model import Batch, Job, JobStatus, new_batch_id, new_job_id
from tests.snowflake.outage import FlakySessions, add_job, open_store, run, transcript_of
from tests.unit.test_row_access_sql import SCRIPT, attached, policies
from tests.unit.test_sql import SQL_DIR

ROLES = load()["roles"]
KEYS = {"TRANSCRIPTION_JOBS": "JOB_ID", "TRANSCRIPTIONS": "JOB_ID", "TRANSLATIONS": "JOB_ID"}
KEYS["TRANSCRIPTION_BATCHES"] = "BATCH_ID"
SYSTEM_HIERARCHY = {"SYSADMIN": {"ACCOUNTADMIN"}}  # Snowflake's own: ACCOUNTADMIN inherits SYSADMIN


def _granted_to() -> dict[str, set[str]]:
    """role -> the roles it is granted to (00_setup.sql's GRANT ROLE x TO ROLE y, and Snowflake's system roles)."""
    grants = {k: set(v) for k, v in SYSTEM_HIERARCHY.items()}
    text = (SQL_DIR / "00_setup.sql").read_text()
    variables = {"deployer_role": ROLES["deployer"], "analyst_role": ROLES["analyst"], "admin_role": ROLES["admin"]}
    for role, parent in re.findall(r"^GRANT ROLE <% (\w+) %> TO ROLE (\w+);", text, re.MULTILINE):
        grants.setdefault(variables[role], set()).add(parent)
    return grants


def roles_of(primary: str) -> frozenset[str]:
    """The roles a session whose primary role is `primary` holds: the role and every role below it."""
    below = {primary}
    grants = _granted_to()
    changed = True
    while changed:
        changed = False
        for role, parents in grants.items():
            if role not in below and parents & below:
                below.add(role)
                changed = True
    return frozenset(below | {"PUBLIC"})


@dataclass(frozen=True)
class Querying:
    """The session a query runs in: CURRENT_USER() and the roles IS_ROLE_IN_SESSION sees."""

    user: str
    roles: frozenset[str]


class Evaluator:
    """A policy body (sqlglot tree) -> the keys of the rows it lets a session see, with Snowpark DataFrames."""

    def __init__(self, session: Any, nested: bool) -> None:
        self.session, self.nested = session, nested
        self.policies, self.attached = policies(SCRIPT), attached(SCRIPT)

    def visible(self, table: str, who: Querying) -> set[str]:
        name, (column,) = self.attached[table]
        create = self.policies[name]
        ((arg, _),) = [(c.name.upper(), c) for c in create.this.expressions]
        return self._keep(create.expression, self.session.table(table), table, column, arg, who)

    def _keys(self, frame: Any, table: str) -> set[str]:
        return {row[0] for row in frame.select(col(KEYS[table])).collect()}

    def _keep(self, node: exp.Expression, frame: Any, table: str, column: str, arg: str, who: Querying) -> set[str]:
        if isinstance(node, exp.Paren):
            return self._keep(node.this, frame, table, column, arg, who)
        if isinstance(node, exp.Or):
            return self._keep(node.this, frame, table, column, arg, who) | self._keep(
                node.expression, frame, table, column, arg, who
            )
        if isinstance(node, exp.Anonymous) and node.name.upper() == "IS_ROLE_IN_SESSION":
            (role,) = node.expressions
            assert role.is_string
            return self._keys(frame, table) if role.this in who.roles else set()
        if isinstance(node, exp.EQ):
            sides = {type(s) for s in (node.this, node.expression)}
            assert sides == {exp.Column, exp.CurrentUser}, node.sql("snowflake")
            named = node.this if isinstance(node.this, exp.Column) else node.expression
            assert named.name.upper() == arg, node.sql("snowflake")
            return self._keys(frame.filter(col(column) == lit(who.user)), table)
        if isinstance(node, exp.Exists):
            return self._keys(self._semi_join(node.this, frame, column, arg, who), table)
        raise NotImplementedError(f"no emulation for {node.sql('snowflake')}")

    def _semi_join(self, select: exp.Select, frame: Any, column: str, arg: str, who: Querying) -> Any:
        mapping_name = select.args["from_"].this.name.upper()
        mapping = self.session.table(mapping_name)
        if self.nested:  # Snowflake applies the mapping table's own policy inside the subquery
            mapping = mapping.filter(col(KEYS[mapping_name]).isin(list(self.visible(mapping_name, who)) or [""]))
        inner = set(mapping.columns)
        correlated = None
        for eq in select.args["where"].this.find_all(exp.EQ):
            left, right = eq.this, eq.expression
            if isinstance(right, exp.CurrentUser) or isinstance(left, exp.CurrentUser):
                named = left if isinstance(left, exp.Column) else right
                mapping = mapping.filter(col(named.name.upper()) == lit(who.user))
                continue
            # One side is the mapping table's column; the other the policy's argument, unless it names a mapping
            # column too: an unqualified name resolves to the innermost scope (the mapping table) first.
            inner_side, outer_side = (left, right) if left.table else (right, left)
            if not outer_side.table and outer_side.name.upper() in inner:
                mapping = mapping.filter(col(inner_side.name.upper()) == col(outer_side.name.upper()))
                continue
            assert outer_side.name.upper() == arg, eq.sql("snowflake")
            correlated = inner_side.name.upper()
        if correlated is None:  # an uncorrelated EXISTS: every row, or none
            return frame if mapping.count() else frame.filter(lit(False))
        keys = mapping.select(col(correlated).alias("MAPPED_KEY"))
        return frame.join(keys, frame[column] == keys["MAPPED_KEY"], how="leftsemi")


@pytest.fixture
def tables(tmp_path: Path, sessions: FlakySessions) -> dict[str, Any]:
    """The gateway's own writes, exported to the emulated account: ALICE's and BOB's jobs (translated ones among
    them), a batch of BOB's, and a job without an owner (local use)."""

    async def go() -> dict[str, Any]:
        store = await open_store(tmp_path, sessions, export_interval_s=3600)  # flushed by hand
        await store.flush()
        jobs = {
            "alice-1": await add_job(store, owner="ALICE", translate_to="en"),
            "alice-2": await add_job(store, owner="ALICE"),
            "bob-1": await add_job(store, owner="BOB", translate_to="en"),
            "nobody": await add_job(store, translate_to="en"),
        }
        batch = Batch(new_batch_id(), "@AUDIO_FILES_STAGE/calls", ".*", files=2)
        batch_jobs = [
            Job(
                id=new_job_id(),
                source=f"@AUDIO_FILES_STAGE/calls/{i}.wav",
                source_kind="stage",
                owner="BOB",
                batch_id=batch.id,
            )
            for i in range(2)
        ]
        await store.add_batch(batch, batch_jobs)
        jobs.update({f"bob-batch-{i}": job for i, job in enumerate(batch_jobs)})
        other = Batch(new_batch_id(), "@AUDIO_FILES_STAGE", ".*", files=1)
        other_job = Job(
            id=new_job_id(), source="@AUDIO_FILES_STAGE/x.wav", source_kind="stage", owner="ALICE", batch_id=other.id
        )
        await store.add_batch(other, [other_job])
        jobs["alice-batch"] = other_job
        while (job := await store.claim_next()) is not None:
            if job.options.translate_to:
                assert await store.save_transcript(job, transcript_of(job.id), JobStatus.TRANSCRIBED)
                job = await store.get(job.id)
                assert await store.transition(job, JobStatus.TRANSLATING)
                translation = {"text": "x", "source_language": "en", "target_language": "en", "method": "none"}
                assert await store.save_translation(await store.get(job.id), translation)
            else:
                assert await store.save_transcript(job, transcript_of(job.id))
        assert await store.flush() == 0
        await store.close()
        return {"jobs": jobs, "batches": {"bob": batch.id, "alice": other.id}}

    return run(go())


def _ids(jobs: dict[str, Job], *names: str) -> set[str]:
    return {jobs[n].id for n in names}


ALICE_JOBS = ("alice-1", "alice-2", "alice-batch")
BOB_JOBS = ("bob-1", "bob-batch-0", "bob-batch-1")
TRANSLATED = {"alice-1", "bob-1", "nobody"}


@pytest.mark.parametrize("nested", [True, False], ids=["nested-policy", "mapping-unfiltered"])
def test_each_user_sees_only_their_own_rows(sessions: FlakySessions, tables: dict[str, Any], nested: bool) -> None:
    jobs, batches = tables["jobs"], tables["batches"]
    policy = Evaluator(sessions.session, nested)
    analyst = roles_of(ROLES["analyst"])
    for user, mine, batch in (("ALICE", ALICE_JOBS, "alice"), ("BOB", BOB_JOBS, "bob")):
        who = Querying(user, analyst)
        assert policy.visible("TRANSCRIPTION_JOBS", who) == _ids(jobs, *mine), user
        assert policy.visible("TRANSCRIPTIONS", who) == _ids(jobs, *mine), user
        assert policy.visible("TRANSLATIONS", who) == _ids(jobs, *(set(mine) & TRANSLATED)), user
        assert policy.visible("TRANSCRIPTION_BATCHES", who) == {batches[batch]}, user
    stranger = Querying("CAROL", analyst)
    assert all(policy.visible(table, stranger) == set() for table in KEYS)


@pytest.mark.parametrize("primary", [ROLES["deployer"], "SYSADMIN", "ACCOUNTADMIN"])
def test_the_deployer_and_the_roles_above_it_see_every_row(
    sessions: FlakySessions, tables: dict[str, Any], primary: str
) -> None:
    """The gateway runs as the deployer (the services' owner role): its MERGE / UPDATE must see every row."""
    jobs, batches = tables["jobs"], tables["batches"]
    policy = Evaluator(sessions.session, nested=True)
    who = Querying("SOME_ADMIN", roles_of(primary))
    everything = {job.id for job in jobs.values()}
    assert policy.visible("TRANSCRIPTION_JOBS", who) == everything
    assert policy.visible("TRANSCRIPTIONS", who) == everything
    assert policy.visible("TRANSLATIONS", who) == _ids(jobs, *TRANSLATED)
    assert policy.visible("TRANSCRIPTION_BATCHES", who) == set(batches.values())


def test_a_job_without_an_owner_is_nobody_elses(sessions: FlakySessions, tables: dict[str, Any]) -> None:
    """NULL = CURRENT_USER() is not true: rows of jobs submitted without a user (local use, service-to-service calls)
    are the deployer's only, whatever user name an analyst has."""
    jobs = tables["jobs"]
    policy = Evaluator(sessions.session, nested=False)
    nobody = jobs["nobody"].id
    for user in ("ALICE", "BOB", "", "NULL", "None"):
        who = Querying(user, roles_of(ROLES["analyst"]))
        assert all(nobody not in policy.visible(table, who) for table in ("TRANSCRIPTION_JOBS", "TRANSCRIPTIONS"))


def test_the_emulation_would_catch_a_captured_argument(sessions: FlakySessions, tables: dict[str, Any]) -> None:
    """Sanity of the evaluator itself: the same policy with its argument named JOB_ID (as the mapping table's column)
    lets BOB see ALICE's transcripts, the bug the argument names ROW_JOB_ID / ROW_BATCH_ID avoid."""
    jobs = tables["jobs"]
    policy = Evaluator(sessions.session, nested=False)
    good = policy.policies["WHISPER_JOB_ROWS"]
    bad = good.copy()
    bad.this.expressions[0].set("this", exp.to_identifier("JOB_ID"))
    for column in bad.expression.find(exp.Exists).find_all(exp.Column):
        if column.name.upper() == "ROW_JOB_ID":
            column.set("this", exp.to_identifier("JOB_ID"))
    policy.policies["WHISPER_JOB_ROWS"] = bad
    seen = policy.visible("TRANSCRIPTIONS", Querying("BOB", roles_of(ROLES["analyst"])))
    assert _ids(jobs, "alice-1") <= seen, "an argument captured by the subquery shows everyone's rows"
