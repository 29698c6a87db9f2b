"""Stage references: Snowflake identifier rules, path safety, mounts, listing with LIST-style patterns."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from service.storage.stages import StageError, StageReader, StageRef, compile_pattern, parse_stage_ref


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@AUDIO_FILES_STAGE/a.mp4", StageRef("AUDIO_FILES_STAGE", "a.mp4")),
        ("@audio_files_stage/dir/sub/a b.mp4", StageRef("AUDIO_FILES_STAGE", "dir/sub/a b.mp4")),
        ("@DB.SCH.ST$1/x.mp3", StageRef("DB.SCH.ST$1", "x.mp3")),
        ("@_s/x/", StageRef("_S", "x")),
        ("@S/हिंदी.mp3", StageRef("S", "हिंदी.mp3")),
    ],
)
def test_valid_references(text: str, expected: StageRef) -> None:
    assert parse_stage_ref(text) == expected


INJECTIONS = [
    "@S'; DROP TABLE TRANSCRIPTIONS; --/a.mp3",
    '@"S"/a.mp3',
    "@S;LIST @X/a.mp3",
    "@S) OR 1=1 --/a.mp3",
    "@S a/b.mp3",
    "@1S/a.mp3",
    "@A.B.C.D/a.mp3",
    "@/a.mp3",
    "@" + "S" * 256 + "/a.mp3",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_stage_names_outside_the_identifier_rules_are_refused(text: str) -> None:
    with pytest.raises(StageError) as info:
        parse_stage_ref(text)
    assert (info.value.status, info.value.code) == (422, "invalid_stage")


@pytest.mark.parametrize(
    "text",
    ["S/a.mp3", "@S", "@S/../a.mp3", "@S/x/../../a", "@S/./a", "@S/a//b", "@S/a\\b", "@S/a\x00b", "@S/" + "a" * 1100],
)
def test_unsafe_or_incomplete_paths_are_refused(text: str) -> None:
    with pytest.raises(StageError) as info:
        parse_stage_ref(text)
    assert info.value.code == "invalid_source"


def test_a_prefix_may_be_the_stage_alone() -> None:
    assert parse_stage_ref("@S", file=False) == StageRef("S")
    assert str(parse_stage_ref("@s/calls/", file=False)) == "@S/calls"


def test_patterns() -> None:
    assert compile_pattern(".*[.]mp4").fullmatch("a/b.mp4")
    for bad in ("(", "x" * 501):
        with pytest.raises(StageError):
            compile_pattern(bad)


def test_mounted_stage_lists_sizes_and_opens(tmp_path: Path) -> None:
    (tmp_path / "calls").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"1234")
    (tmp_path / "calls" / "b.mp4").write_bytes(b"12")
    (tmp_path / "calls" / "c.txt").write_bytes(b"x")
    reader = StageReader({"audio_files_stage": tmp_path})

    async def scenario() -> None:
        listed = await reader.list(StageRef("AUDIO_FILES_STAGE"), re.compile(r".*[.]mp4"), 10)
        assert [r.path for r in listed] == ["a.mp4", "calls/b.mp4"]
        listed = await reader.list(StageRef("AUDIO_FILES_STAGE", "calls"), re.compile(r".*"), 10)
        assert [r.path for r in listed] == ["calls/b.mp4", "calls/c.txt"]
        with pytest.raises(StageError) as info:
            await reader.list(StageRef("AUDIO_FILES_STAGE"), re.compile(r".*"), 2)
        assert info.value.code == "too_many_files"
        assert await reader.size(StageRef("AUDIO_FILES_STAGE", "calls/b.mp4")) == 2
        async with reader.open(StageRef("AUDIO_FILES_STAGE", "a.mp4")) as path:
            assert path.read_bytes() == b"1234"
        with pytest.raises(StageError) as info:
            await reader.size(StageRef("AUDIO_FILES_STAGE", "nope.mp4"))
        assert info.value.status == 404
        with pytest.raises(StageError) as info:
            await reader.size(StageRef("ELSEWHERE", "a.mp4"))
        assert info.value.code == "stage_not_found"

    asyncio.run(scenario())


def test_a_symlink_cannot_leave_the_mount(tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    (tmp_path / "secret.wav").write_bytes(b"secret")
    (mount / "link.wav").symlink_to(tmp_path / "secret.wav")
    reader = StageReader({"S": mount})
    with pytest.raises(StageError) as info:
        asyncio.run(reader.size(StageRef("S", "link.wav")))
    assert info.value.code == "invalid_source"


def test_a_qualified_name_reaches_a_mount_only_in_the_services_own_schema(tmp_path: Path) -> None:
    """`@OTHER_DB.S.AUDIO_FILES_STAGE` is another stage than the mounted `AUDIO_FILES_STAGE` of WHISPER_DB.PUBLIC."""
    (tmp_path / "a.wav").write_bytes(b"x")
    reader = StageReader({"AUDIO_FILES_STAGE": tmp_path}, home="WHISPER_DB.PUBLIC")
    for own in ("AUDIO_FILES_STAGE", "WHISPER_DB.PUBLIC.AUDIO_FILES_STAGE", "PUBLIC.AUDIO_FILES_STAGE"):
        assert reader.local_path(parse_stage_ref(f"@{own}/a.wav")) == tmp_path / "a.wav", own
    for other in ("OTHER_DB.S.AUDIO_FILES_STAGE", "S.AUDIO_FILES_STAGE"):
        assert reader.local_path(parse_stage_ref(f"@{other}/a.wav")) is None, other
