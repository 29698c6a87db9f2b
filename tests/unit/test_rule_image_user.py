"""Issue 13, rule 7: the gateway container runs as uid 1000 on a block volume that is typically root-owned, so the
image must prepare /data (job queue jobs.sqlite3 with the export marks, uploaded audio under blobs/) before the
gateway writes there, and the image's user is tested against such a volume.

SPCS mounts the gateway's block volume on /data; a block volume, unlike a stage volume, takes no uid/gid in the
service specification ("uid ... optional, only for stage volumes"):
  https://docs.snowflake.com/en/developer-guide/snowpark-container-services/specification-reference
  https://docs.snowflake.com/en/developer-guide/snowpark-container-services/block-storage-volume
So docker/gateway.Dockerfile starts as root and its ENTRYPOINT, docker/gateway-entrypoint.sh, hands the data directory
to 1000:1000 and drops to that user (setpriv) before it execs the gateway.

The first tests read the Dockerfile, the script, deploy/config.yaml and spec/gateway.yaml as data. The others run the
real script (as root, which this sandbox is; skipped otherwise) against a root-owned directory standing in for the
volume, with harmless commands in place of the gateway, and show that without the script uid 1000 cannot write there.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deploy.config import load
from tests.unit.test_dockerfiles import (
    DOCKER,
    GATEWAY,
    ROOT,
    Stage,
    entrypoint_script,
    parse,
    privilege_drop,
    shell_commands,
    stages_of,
    user_problems,
)

ENTRYPOINT = DOCKER / "gateway-entrypoint.sh"
CONFIG = load()
IMAGE_USER = (CONFIG["container_user"]["uid"], CONFIG["container_user"]["gid"])


def final_stage() -> Stage:
    return stages_of(GATEWAY)[-1]


def image_env(stage: Stage) -> dict[str, str]:
    """The ENV instructions' key=value pairs."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        env |= dict(word.split("=", 1) for word in shlex.split(instruction.args))
    return env


def created_user(stage: Stage) -> tuple[int, int]:
    """uid and gid of the `useradd --uid U --gid G` in the stage's RUN instructions."""
    for run in stage.all("RUN"):
        for argv in shell_commands(run.args):
            if argv[0] == "useradd":
                return int(argv[argv.index("--uid") + 1]), int(argv[argv.index("--gid") + 1])
    raise AssertionError("the final stage creates no user")


# --- the image, read as data ------------------------------------------------------------------------------------------


def test_image_starts_as_root_only_to_run_the_entrypoint_script() -> None:
    stage = final_stage()
    assert stage.all("USER") == [], "a USER would start the entrypoint without the right to prepare /data"
    assert entrypoint_script(stage) == ENTRYPOINT
    (copy,) = [c for c in stage.all("COPY") if "docker/gateway-entrypoint.sh" in shlex.split(c.args)]
    assert "--chmod=0755" in shlex.split(copy.args), "the script must be executable in the image"
    assert json.loads(stage.all("CMD")[-1].args) == ["spcs-whisper", "gateway"]
    assert user_problems(stages_of(GATEWAY)) == []


def test_entrypoint_drops_to_the_image_user() -> None:
    script = ENTRYPOINT.read_text(encoding="utf-8")
    assert script.splitlines()[0] == "#!/bin/sh", "POSIX sh: the slim image's /bin/sh is dash"
    assert privilege_drop(script) == created_user(final_stage()) == IMAGE_USER
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR, "executable in the repository too (run by hand)"


def test_data_dir_is_the_block_volume_that_takes_no_owner() -> None:
    data_dir = image_env(final_stage())["SPCS_WHISPER_DATA_DIR"]
    assert data_dir == CONFIG["services"]["gateway"]["data_volume"]["mount"]
    spec = yaml.safe_load((ROOT / "spec" / "gateway.yaml").read_text())["spec"]
    (container,) = spec["containers"]
    assert container["env"]["SPCS_WHISPER_DATA_DIR"] == data_dir
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (volume,) = [v for v in spec["volumes"] if v["name"] == mounts[data_dir]]
    assert volume["source"] == "block"
    assert not {"uid", "gid"} & set(volume), "uid/gid are for stage volumes only: the image must prepare /data"


def test_user_rule_rejects_an_entrypoint_that_keeps_root() -> None:
    keeps_root = (
        "FROM python:3.11.14-slim-bookworm\n"
        "COPY docker/freeze_constraints.py /usr/local/bin/run\n"
        'ENTRYPOINT ["/usr/local/bin/run"]\n'
    )
    assert entrypoint_script(parse(keeps_root)[-1]) == DOCKER / "freeze_constraints.py"
    assert user_problems(parse(keeps_root)), "an entrypoint without setpriv runs the command as root"
    assert privilege_drop('#!/bin/sh\nexec setpriv --reuid=0 --regid=0 --init-groups -- "$@"\n') == (0, 0)
    assert privilege_drop('#!/bin/sh\n# exec setpriv --reuid=1000 --regid=1000 -- "$@"\nexec "$@"\n') is None


# --- the script, run against a root-owned directory ----------------------------------------------------------------


def _can_switch_users() -> str | None:
    if os.geteuid() != 0:
        return "needs root (to own the stand-in volume and to switch users)"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    try:
        pwd.getpwuid(IMAGE_USER[0])
    except KeyError:
        return f"needs a passwd entry for uid {IMAGE_USER[0]} (setpriv --init-groups), as the image has"
    return None


needs_root = pytest.mark.skipif(_can_switch_users() is not None, reason=str(_can_switch_users()))


def as_image_user(*argv: str | Path) -> list[str]:
    uid, gid = IMAGE_USER
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--", *map(str, argv)]


@pytest.fixture
def place() -> Iterator[Path]:
    """A root-owned folder any user may enter (not pytest's tmp_path: /tmp/pytest-of-root is 0700), holding `vol`,
    a root-owned 0755 directory with a root-only lost+found (a fresh ext4 block volume), and a copy of the script
    that uid 1000 can read."""
    top = Path(tempfile.mkdtemp(prefix="spcs-whisper-volume-"))
    try:
        top.chmod(0o755)
        (top / "vol").mkdir(mode=0o755)
        (top / "vol" / "lost+found").mkdir(mode=0o700)
        shutil.copy(ENTRYPOINT, top / "gateway-entrypoint")
        (top / "gateway-entrypoint").chmod(0o755)
        yield top
    finally:
        shutil.rmtree(top)


def run(argv: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SPCS_WHISPER_DATA_DIR": str(data_dir)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


WRITE_AND_SAY_WHO = 'echo blob > "$SPCS_WHISPER_DATA_DIR/probe" && id -u && id -g'


@needs_root
def test_without_the_entrypoint_uid_1000_cannot_write_the_volume(place: Path) -> None:
    volume = place / "vol"
    assert (volume.stat().st_uid, stat.S_IMODE(volume.stat().st_mode)) == (0, 0o755)
    result = run(as_image_user("sh", "-c", WRITE_AND_SAY_WHO), volume)
    assert result.returncode != 0 and "Permission denied" in result.stderr
    assert not (volume / "probe").exists()


@needs_root
def test_entrypoint_as_root_lets_uid_1000_write_the_volume(place: Path) -> None:
    volume = place / "vol"
    result = run([str(place / "gateway-entrypoint"), "sh", "-c", WRITE_AND_SAY_WHO], volume)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(IMAGE_USER[0]), str(IMAGE_USER[1])], "the command runs as 1000:1000"
    probe = (volume / "probe").stat()
    assert (probe.st_uid, probe.st_gid) == IMAGE_USER and (volume / "probe").read_text() == "blob\n"
    assert (volume.stat().st_uid, volume.stat().st_gid) == IMAGE_USER
    assert (volume / "lost+found").stat().st_uid == 0, "lost+found stays with root (fsck's)"
    # Now uid 1000 writes there even without the script: the volume is prepared for good.
    assert run(as_image_user("sh", "-c", WRITE_AND_SAY_WHO), volume).returncode == 0


@needs_root
def test_entrypoint_creates_a_missing_data_dir_on_the_volume(place: Path) -> None:
    data_dir = place / "vol" / "gateway" / "data"
    result = run([str(place / "gateway-entrypoint"), "sh", "-c", WRITE_AND_SAY_WHO], data_dir)
    assert result.returncode == 0, result.stderr
    assert data_dir.stat().st_uid == IMAGE_USER[0] and (data_dir / "probe").stat().st_uid == IMAGE_USER[0]


@needs_root
def test_entrypoint_hands_over_what_root_left_inside(place: Path) -> None:
    volume = place / "vol"
    (volume / "jobs.sqlite3").write_text("rows\n")
    (volume / "blobs").mkdir(mode=0o755)
    (volume / "blobs" / "job-1").write_text("audio\n")
    command = 'echo more >> "$1/jobs.sqlite3" && echo audio > "$1/blobs/job-2" && rm "$1/blobs/job-1"'
    result = run([str(place / "gateway-entrypoint"), "sh", "-c", command, "sh", str(volume)], volume)
    assert result.returncode == 0, result.stderr
    assert (volume / "jobs.sqlite3").read_text() == "rows\nmore\n"
    assert [p.name for p in (volume / "blobs").iterdir()] == ["job-2"]


@needs_root
def test_gateway_store_opens_on_the_prepared_volume(place: Path) -> None:
    """The gateway's own store (SQLite job queue, blobs/ for audio) opened and written as uid 1000."""
    volume = place / "vol"
    code = (
        "import asyncio, os, sys\n"
        "from pathlib import Path\n"
        "from service.storage.sqlite import SQLiteStore\n"
        "async def main():\n"
        "    store = SQLiteStore(Path(os.environ['SPCS_WHISPER_DATA_DIR']))\n"
        "    await store.open()\n"
        "    store.incoming_path('t').write_bytes(b'RIFF')\n"
        "    await store.close()\n"
        "    print(os.getuid())\n"
        "asyncio.run(main())\n"
    )
    probe = subprocess.run(
        as_image_user(sys.executable, "-c", "import service.storage.sqlite"),
        cwd=ROOT,
        capture_output=True,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": os.environ.get("PATH", "")},
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"uid {IMAGE_USER[0]} cannot run this test's Python ({sys.executable})")
    argv = [str(place / "gateway-entrypoint"), sys.executable, "-c", code]
    env_extra = {"PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        argv,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "SPCS_WHISPER_DATA_DIR": str(volume), **env_extra},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(IMAGE_USER[0])]
    for name in ("jobs.sqlite3", "blobs", "blobs/.incoming-t"):
        assert (volume / name).stat().st_uid == IMAGE_USER[0], name


@needs_root
def test_entrypoint_started_as_uid_1000_checks_and_runs_as_is(place: Path) -> None:
    volume, script = place / "vol", place / "gateway-entrypoint"
    refused = run(as_image_user(script, "sh", "-c", 'touch "$SPCS_WHISPER_DATA_DIR/ran"'), volume)
    assert refused.returncode == 1
    assert f"{volume} is not writable by uid {IMAGE_USER[0]}" in refused.stderr
    assert not (volume / "ran").exists(), "the command must not start on a volume it cannot write"
    os.chown(volume, *IMAGE_USER)
    result = run(as_image_user(script, "sh", "-c", WRITE_AND_SAY_WHO), volume)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(IMAGE_USER[0]), str(IMAGE_USER[1])]


@needs_root
def test_entrypoint_without_a_command_fails(place: Path) -> None:
    result = run([str(place / "gateway-entrypoint")], place / "vol")
    assert result.returncode == 1 and "no command" in result.stderr
