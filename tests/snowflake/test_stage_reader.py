"""Stages that are not mounted: files streamed with Snowpark (`session.file.get_stream`) from Snowpark's
local testing mode (Snowflake's own emulator, whose stages are real local folders), and listed with LIST.

The emulator cannot run SQL, so LIST is answered by a STAND-IN (`StandinList`, labelled as such): it
records the statement and answers rows shaped like Snowflake's LIST output (`name`, `size`), taken from
the emulator's own stage.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from snowflake.snowpark import Session

from service.storage.stages import StageError, StageReader, StageRef

FILES = {"calls/monday.mp3": b"ID3-monday", "calls/it's here.mp3": b"quoted", "other/x.wav": b"RIFF"}


class StandinList:
    """STAND-IN for Snowflake's `LIST '@STAGE/prefix'` (not Snowflake's): rows from the files put above."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.statements: list[str] = []

    def get(self) -> Any:
        return self

    @property
    def file(self) -> Any:
        return self.session.file

    def sql(self, statement: str) -> Any:
        self.statements.append(statement)
        match = re.fullmatch(r"LIST '@(\w+)/?(.*)'", statement)
        assert match, statement
        prefix = match.group(2).replace("''", "'")
        rows = [{"name": f"{match.group(1).lower()}/{n}", "size": len(b)} for n, b in FILES.items()]
        rows = [r for r in rows if r["name"].split("/", 1)[1].startswith(prefix)]
        return type("Rows", (), {"collect": lambda _self: rows})()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[StandinList]:
    session = Session.SessionBuilder().config("local_testing", True).create()
    for name, data in FILES.items():
        if "'" in name:
            continue  # listed by the stand-in only: the emulator's put() cannot take a quote in a name
        folder, file = name.split("/")
        (tmp_path / "src" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / folder / file).write_bytes(data)
        session.file.put(str(tmp_path / "src" / folder / file), f"@AUDIO_FILES_STAGE/{folder}", auto_compress=False)
    yield StandinList(session)
    session.close()


def test_files_stream_from_a_stage_that_is_not_mounted(sessions: StandinList, tmp_path: Path) -> None:
    reader = StageReader({}, sessions, temp_dir=tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    ref = StageRef("AUDIO_FILES_STAGE", "calls/monday.mp3")

    async def scenario() -> Path:
        async with reader.open(ref) as path:
            assert path.read_bytes() == b"ID3-monday"
            assert path.parent == tmp_path / "tmp"
            return path

    path = asyncio.run(scenario())
    assert not path.exists()  # the temporary copy is gone afterwards


def test_a_missing_file_is_a_404_not_a_retry(sessions: StandinList, tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    reader = StageReader({}, sessions, temp_dir=tmp_path / "tmp")

    async def scenario() -> None:
        async with reader.open(StageRef("AUDIO_FILES_STAGE", "calls/nope.mp3")):
            pass

    with pytest.raises(StageError) as info:
        asyncio.run(scenario())
    assert (info.value.status, info.value.code) == (404, "source_not_found")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_sizes_and_listing_use_a_quoted_prefix_list(sessions: StandinList) -> None:
    reader = StageReader({}, sessions)
    assert asyncio.run(reader.size(StageRef("AUDIO_FILES_STAGE", "calls/monday.mp3"))) == len(b"ID3-monday")
    assert sessions.statements[-1] == "LIST '@AUDIO_FILES_STAGE/calls/monday.mp3'"
    assert asyncio.run(reader.size(StageRef("AUDIO_FILES_STAGE", "calls/it's here.mp3"))) == len(b"quoted")
    assert sessions.statements[-1] == "LIST '@AUDIO_FILES_STAGE/calls/it''s here.mp3'"
    with pytest.raises(StageError):
        asyncio.run(reader.size(StageRef("AUDIO_FILES_STAGE", "calls/monday")))  # a prefix is not a file
    listed = asyncio.run(reader.list(StageRef("AUDIO_FILES_STAGE", "calls"), re.compile(r".*[.]mp3"), 10))
    assert [r.path for r in listed] == ["calls/it's here.mp3", "calls/monday.mp3"]
    assert sessions.statements[-1] == "LIST '@AUDIO_FILES_STAGE/calls'"
