"""Audio on Snowflake stages: `@STAGE/path` references, checked against Snowflake's identifier rules, read
through a stage volume mount when the spec mounts the stage (`SPCS_WHISPER_STAGE_MOUNTS`), else streamed
with Snowpark (`session.file.get_stream`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.storage.sources import SourceError

# Unquoted Snowflake identifiers: a letter or underscore, then letters, digits, `_` or `$`; at most 255.
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,254}"
STAGE_NAME = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER}){{0,2}}")
MAX_PATH_CHARS = 1024
MAX_PATTERN_CHARS = 500
COPY_CHUNK = 1024 * 1024


class StageError(SourceError):
    """A stage reference that is malformed (422) or names nothing (404)."""


@dataclass(frozen=True)
class StageRef:
    """`@STAGE/path`: the stage's name (upper-cased, as Snowflake stores unquoted names) and a relative path."""

    stage: str
    path: str = ""

    def __str__(self) -> str:
        return f"@{self.stage}/{self.path}" if self.path else f"@{self.stage}"


def parse_stage_ref(text: str, *, file: bool = True) -> StageRef:
    """Parse and validate `@STAGE/path/to/file` (`file=False`: a stage with an optional folder prefix)."""
    if not isinstance(text, str) or not text.startswith("@"):
        raise StageError(422, "invalid_source", "a stage source looks like @STAGE_NAME/path/to/file.mp4")
    name, _, path = text[1:].partition("/")
    if not STAGE_NAME.fullmatch(name):
        raise StageError(
            422,
            "invalid_stage",
            f"{name[:100]!r} is not a stage name: letters, digits, _ and $ (not first), optionally db.schema.",
        )
    path = path.strip("/")
    if len(path) > MAX_PATH_CHARS or any(c in path for c in "\\\x00\n\r") or any(ord(c) < 32 for c in path):
        raise StageError(422, "invalid_source", "the stage path is too long or holds control characters")
    parts = path.split("/") if path else []
    if any(part in ("", ".", "..") for part in parts):
        raise StageError(422, "invalid_source", "the stage path may not contain '.', '..' or empty segments")
    if file and not path:
        raise StageError(422, "invalid_source", "name a file on the stage, e.g. @STAGE/folder/file.mp4")
    return StageRef(name.upper(), "/".join(parts))


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A LIST-style PATTERN (a regular expression matched against the whole relative path)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise StageError(422, "invalid_pattern", f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise StageError(422, "invalid_pattern", f"the pattern is not a valid regular expression: {exc}") from None


class Sessions(Protocol):
    def get(self) -> Any: ...


class StageReader:
    """Finds, lists and opens stage files; mounts first, Snowpark for stages that are not mounted."""

    def __init__(self, mounts: dict[str, Path], sessions: Sessions | None = None, temp_dir: Path | None = None):
        self.mounts = {name.upper(): Path(path) for name, path in mounts.items()}
        self.sessions = sessions
        self.temp_dir = temp_dir

    def local_path(self, ref: StageRef) -> Path | None:
        """The file on its stage's mount (StageError 404 when missing there); None when the stage is not mounted."""
        mount = self._mount(ref)
        if mount is None:
            return None
        path = self._local(mount, ref)
        if not path.is_file():
            raise StageError(404, "source_not_found", f"{ref} does not exist")
        return path

    def _mount(self, ref: StageRef) -> Path | None:
        return self.mounts.get(ref.stage) or self.mounts.get(ref.stage.rsplit(".", 1)[-1])

    def _local(self, mount: Path, ref: StageRef) -> Path:
        root = mount.resolve()
        target = (root / ref.path).resolve()
        if not target.is_relative_to(root):  # a symlink on the mount pointing elsewhere
            raise StageError(422, "invalid_source", f"{ref} leaves its stage")
        return target

    def _no_stage(self, ref: StageRef) -> StageError:
        return StageError(
            404, "stage_not_found", f"stage @{ref.stage} is not mounted and no Snowflake session is configured"
        )

    async def size(self, ref: StageRef) -> int:
        """The file's size in bytes; StageError 404 when it does not exist."""
        local = self.local_path(ref)
        if local is not None:
            return local.stat().st_size
        for name, size in await self._list_remote(ref):
            if name == ref.path:
                return size
        raise StageError(404, "source_not_found", f"{ref} does not exist")

    async def list(self, prefix: StageRef, pattern: re.Pattern[str], limit: int) -> list[StageRef]:
        """Files under `prefix` whose path relative to the stage fully matches `pattern`, sorted by path;
        StageError 422 when more than `limit` match."""
        mount = self._mount(prefix)
        if mount is not None:
            root = self._local(mount, StageRef(prefix.stage))
            base = self._local(mount, prefix)
            if not base.is_dir():
                raise StageError(404, "source_not_found", f"{prefix} is not a folder on the stage")
            names = await asyncio.to_thread(
                lambda: [p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file()]
            )
        else:
            names = [name for name, _ in await self._list_remote(prefix)]
            names = [n for n in names if not prefix.path or n.startswith(prefix.path.rstrip("/") + "/")]
        matched = sorted(n for n in names if pattern.fullmatch(n))
        if len(matched) > limit:
            raise StageError(422, "too_many_files", f"{len(matched)} files match; at most {limit} per batch")
        return [StageRef(prefix.stage, n) for n in matched]

    async def _list_remote(self, ref: StageRef) -> list[tuple[str, int]]:
        """(path relative to the stage, size) of the files under `ref` on a stage that is not mounted: LIST
        with the path as prefix, so a single file costs one small listing, not the whole stage."""
        if self.sessions is None:
            raise self._no_stage(ref)
        # LIST takes no bind variables: the stage name passed the identifier rules above and the path holds
        # no control characters; the location is quoted, with quotes doubled, as Snowflake's syntax asks.
        location = "'" + str(ref).replace("\\", "\\\\").replace("'", "''") + "'"

        def run() -> list[tuple[str, int]]:
            rows = self.sessions.get().sql(f"LIST {location}").collect()  # type: ignore[union-attr]
            stage_leaf = ref.stage.rsplit(".", 1)[-1].lower()
            listed = []
            for row in rows:
                name = str(row["name"])
                # LIST names start with the stage's (lower-cased) name: strip it to get the relative path.
                first, _, rest = name.partition("/")
                listed.append((rest if first.lower() == stage_leaf else name, int(row["size"])))
            return listed

        return await asyncio.to_thread(run)

    @contextlib.asynccontextmanager
    async def open(self, ref: StageRef) -> AsyncIterator[Path]:
        """A local path holding the file: the mounted file itself, or a temporary copy streamed with Snowpark
        (removed on exit)."""
        local = self.local_path(ref)
        if local is not None:
            yield local
            return
        if self.sessions is None:
            raise self._no_stage(ref)
        fd, name = tempfile.mkstemp(prefix="stage-", dir=self.temp_dir)
        os.close(fd)
        target = Path(name)
        try:
            await asyncio.to_thread(self._download, ref, target)
            yield target
        finally:
            target.unlink(missing_ok=True)

    def _download(self, ref: StageRef, target: Path) -> None:
        try:
            stream = self.sessions.get().file.get_stream(str(ref))  # type: ignore[union-attr]
        except Exception as exc:
            if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                raise StageError(404, "source_not_found", f"{ref} does not exist") from exc
            raise  # anything else (network, session) is transient: the job is retried
        try:
            with target.open("wb") as out:
                shutil.copyfileobj(stream, out, COPY_CHUNK)
        finally:
            stream.close()
