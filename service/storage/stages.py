"""Audio on Snowflake stages: `@STAGE/path` references, checked against Snowflake's identifier rules and the stage
allow-list, read through a stage volume mount when the spec mounts the stage (`SPCS_WHISPER_STAGE_MOUNTS`), else
streamed with Snowpark (`session.file.get_stream`).

The gateway reads stages with its service role, which may read more than any caller should: every route that
names a stage (jobs, batches, service functions, the audio route) first asks `StageAllowlist.check`, so a caller
reaches only the stages the deployment lists (default: the mounted ones), never any stage the service role can
read (a confused deputy). Batch patterns are RE2 expressions (linear time: no catastrophic backtracking), matched
in a worker thread under a time bound, never on the event loop."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import re2

from service.config import Settings
from service.storage.sources import SourceError

# Unquoted Snowflake identifiers: a letter or underscore, then letters, digits, `_` or `$`; at most 255.
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_$]{0,254}"
STAGE_NAME = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER}){{0,2}}")
MAX_PATH_CHARS = 1024
MAX_PATTERN_CHARS = 500
COPY_CHUNK = 1024 * 1024
EVERY_ROLE = "*"  # the allow-list entry that holds for every caller
MATCH_CHECK_EVERY = 256  # file names matched between two looks at the clock


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


@dataclass(frozen=True)
class StageAllowlist:
    """The stages callers may name: `everyone` for every caller, `by_role` for callers with that Snowflake role
    (as service functions send it; callers.role). Names are compared fully qualified (db.schema.stage) when the
    service's database and schema are known, so `@WHISPER_DB.PUBLIC.AUDIO_FILES_STAGE` is `@AUDIO_FILES_STAGE`
    there, and `@OTHER_DB.S.AUDIO_FILES_STAGE` never is."""

    everyone: frozenset[str] = frozenset()
    by_role: Mapping[str, frozenset[str]] = field(default_factory=dict)
    database: str | None = None
    schema: str | None = None

    @classmethod
    def build(
        cls,
        configured: Iterable[str] | Mapping[str, Iterable[str]] | None,
        mounts: Iterable[str] = (),
        database: str | None = None,
        schema: str | None = None,
    ) -> StageAllowlist:
        """From the STAGE_ALLOWLIST setting: None (the mounted stages, for every caller), a list (every caller)
        or a mapping of role (or "*") to stages."""
        if configured is None:
            configured = list(mounts)
        if not isinstance(configured, Mapping):
            configured = {EVERY_ROLE: list(configured)}
        empty = cls(database=database.upper() if database else None, schema=schema.upper() if schema else None)
        names = {
            (role if role == EVERY_ROLE else role.upper()): frozenset(empty.qualified(s.lstrip("@")) for s in stages)
            for role, stages in configured.items()
        }
        everyone = names.pop(EVERY_ROLE, frozenset())
        return cls(everyone, names, empty.database, empty.schema)

    @classmethod
    def of(cls, settings: Settings) -> StageAllowlist:
        gateway, snowflake = settings.gateway, settings.snowflake
        return cls.build(
            gateway.stage_allowlist, gateway.stage_mounts, snowflake.snowflake_database, snowflake.snowflake_schema
        )

    def qualified(self, stage: str) -> str:
        """`STAGE` -> `DB.SCHEMA.STAGE` and `SCHEMA.STAGE` -> `DB.SCHEMA.STAGE`, as far as the service's database
        and schema are known (upper case: unquoted identifiers)."""
        parts = stage.upper().split(".")
        if len(parts) == 1 and self.schema:
            parts.insert(0, self.schema)
        if len(parts) == 2 and self.database:
            parts.insert(0, self.database)
        return ".".join(parts)

    def allows(self, stage: str, role: str | None = None) -> bool:
        name = self.qualified(stage)
        return name in self.everyone or bool(role and name in self.by_role.get(role.upper(), ()))

    def check(self, ref: StageRef, role: str | None = None) -> None:
        """403 for a stage off the list, before anything on it is looked up (its existence is not revealed)."""
        if not self.allows(ref.stage, role):
            raise StageError(
                403,
                "stage_not_allowed",
                f"stage @{ref.stage} is not on this service's stage allow-list (SPCS_WHISPER_STAGE_ALLOWLIST)",
            )


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a client's bad pattern is a 422, not a line on the gateway's stderr
    return options


RE2_OPTIONS = _re2_options()


def compile_pattern(pattern: str) -> Any:
    """A LIST-style PATTERN (a regular expression matched against the whole relative path), compiled with RE2:
    matching takes time linear in the name (https://github.com/google/re2/wiki/WhyRE2), so no pattern can
    backtrack for minutes. RE2 has no backreferences or lookaround; such a pattern is a 422. The pattern is not handed
    to Snowflake's `LIST ... PATTERN` for unmounted stages: LIST applies it to its own names, which start with the
    stage's name (https://docs.snowflake.com/en/sql-reference/sql/list), so the same pattern would select other files
    than on a mount; both listings are matched here, alike."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise StageError(422, "invalid_pattern", f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, options=RE2_OPTIONS)
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: RE2 takes UTF-8
        raise StageError(422, "invalid_pattern", "the pattern is not valid Unicode text") from None
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise StageError(
            422,
            "invalid_pattern",
            f"the pattern is not a valid RE2 regular expression (no backreferences or lookaround): {reason}",
        ) from None


def match_names(names: list[str], pattern: Any, timeout_s: float | None = None) -> list[str]:
    """The names `pattern` fully matches, sorted; StageError 422 when matching outlasts `timeout_s`. Blocking: run
    it in a worker thread."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    matched = []
    for i, name in enumerate(names):
        if deadline is not None and i % MATCH_CHECK_EVERY == MATCH_CHECK_EVERY - 1 and time.monotonic() > deadline:
            raise StageError(
                422,
                "pattern_timeout",
                f"matching the pattern over {len(names)} files took longer than {timeout_s:g} s "
                "(BATCH_MATCH_TIMEOUT_S); use a narrower prefix or a simpler pattern",
            )
        try:
            if pattern.fullmatch(name):
                matched.append(name)
        except UnicodeEncodeError:  # a file name that is not UTF-8 (surrogate-escaped): no stage path can name it
            continue
    return sorted(matched)


class Sessions(Protocol):
    def get(self) -> Any: ...


class StageReader:
    """Finds, lists and opens stage files; mounts first, Snowpark for stages that are not mounted."""

    def __init__(
        self,
        mounts: dict[str, Path],
        sessions: Sessions | None = None,
        temp_dir: Path | None = None,
        home: str | None = None,
    ):
        self.mounts = {name.upper(): Path(path) for name, path in mounts.items()}
        self.sessions = sessions
        self.temp_dir = temp_dir
        self.home = home.upper() if home else None  # "DB.SCHEMA" of the service: where unqualified mounts live

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
        """The mount of the stage `ref` names: by its name as written, or, for a qualified name, only when it
        qualifies the service's own database and schema (`@OTHER_DB.S.AUDIO_FILES_STAGE` is another stage)."""
        if ref.stage in self.mounts:
            return self.mounts[ref.stage]
        qualifier, _, name = ref.stage.rpartition(".")
        if qualifier and self.home and qualifier in (self.home, self.home.rpartition(".")[2]):
            return self.mounts.get(name)
        return None

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

    async def list(self, prefix: StageRef, pattern: Any, limit: int, timeout_s: float | None = None) -> list[StageRef]:
        """Files under `prefix` whose path relative to the stage fully matches `pattern` (compile_pattern), sorted
        by path; StageError 422 when more than `limit` match, or when matching outlasts `timeout_s`. The matching
        runs in a worker thread: the event loop keeps answering meanwhile."""
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
        matched = await asyncio.to_thread(match_names, names, pattern, timeout_s)
        if len(matched) > limit:
            raise StageError(422, "too_many_files", f"{len(matched)} files match; at most {limit} per batch")
        return [StageRef(prefix.stage, n) for n in matched]

    async def _list_remote(self, ref: StageRef) -> builtins.list[tuple[str, int]]:  # `list`: the method above
        """(path relative to the stage, size) of the files under `ref` on a stage that is not mounted: LIST
        with the path as prefix, so a single file costs one small listing, not the whole stage."""
        sessions = self.sessions
        if sessions is None:
            raise self._no_stage(ref)
        # LIST takes no bind variables: the stage name passed the identifier rules above and the path holds
        # no control characters; the location is quoted, with quotes doubled, as Snowflake's syntax asks.
        location = "'" + str(ref).replace("\\", "\\\\").replace("'", "''") + "'"

        def run() -> list[tuple[str, int]]:
            rows = sessions.get().sql(f"LIST {location}").collect()
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
        assert self.sessions is not None  # open() checked
        try:
            stream = self.sessions.get().file.get_stream(str(ref))
        except Exception as exc:
            if "does not exist" in str(exc).lower() or "not found" in str(exc).lower():
                raise StageError(404, "source_not_found", f"{ref} does not exist") from exc
            raise  # anything else (network, session) is transient: the job is retried
        try:
            with target.open("wb") as out:
                shutil.copyfileobj(stream, out, COPY_CHUNK)
        finally:
            stream.close()
